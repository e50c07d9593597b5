"""`bench pipeline`: the whole Dagster graph, cold and after 1% new interactions.

The library never imports Dagster, so this runs `python -m rec_assets.bench_pipeline` in a
subprocess and returns its JSON: `pipeline_cold_total_s`, `pipeline_incremental_total_s` and
one `asset_<key>_s` per asset.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path


def run(argv: list[str]) -> dict[str, float]:
    parser = argparse.ArgumentParser(prog="bench pipeline")
    parser.add_argument("--n-users", type=int, default=2_000)
    parser.add_argument("--n-items", type=int, default=5_000)
    parser.add_argument("--n-interactions", type=int, default=100_000)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "pipeline.json"
        subprocess.run(
            [
                sys.executable,
                "-m",
                "rec_assets.bench_pipeline",
                "--json",
                str(out),
                "--n-users",
                str(args.n_users),
                "--n-items",
                str(args.n_items),
                "--n-interactions",
                str(args.n_interactions),
            ],
            check=True,
        )
        return json.loads(out.read_text())
