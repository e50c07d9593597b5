"""Command line: `python -m rec_core.bench NAME [--json PATH] [benchmark options]`.

`NAME` is one of `rec_core.bench.BENCHMARKS`, or `all` to run each with its defaults and
merge their results. The results print as a table and, with `--json`, are written as one flat
JSON object of metric name to number.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path

from rec_core.bench import BENCHMARKS
from rec_core.storage import write_bytes


def _format(results: dict[str, float]) -> str:
    width = max((len(k) for k in results), default=10)
    lines = [f"{'metric'.ljust(width)}  value", f"{'-' * width}  -----"]
    for key, value in results.items():
        shown = f"{value:.4g}" if isinstance(value, float) else str(value)
        lines.append(f"{key.ljust(width)}  {shown}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rec_core.bench", description=__doc__.splitlines()[0])
    parser.add_argument("name", choices=(*BENCHMARKS, "all"))
    parser.add_argument("--json", type=Path, help="write the results as flat JSON to this path")
    args, rest = parser.parse_known_args(argv)
    # `all` leaves out scale: it runs the whole graph once per size, tens of minutes to hours; run it by name.
    names = tuple(n for n in BENCHMARKS if n != "scale") if args.name == "all" else (args.name,)
    results: dict[str, float] = {}
    for name in names:
        module = importlib.import_module(f"rec_core.bench.{name}")
        print(f"== {name}", file=sys.stderr, flush=True)
        part = module.run(rest if args.name != "all" else [])
        print(_format(part), file=sys.stderr, flush=True)
        results.update(part)
        if args.json:  # written after each benchmark, so a later failure keeps the earlier results
            write_bytes(json.dumps(results, indent=2).encode(), args.json)
    print(_format(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
