"""`bench scale`: the whole Dagster graph at growing sizes, and how each step's time grows with its input.

    python -m rec_core.bench scale --sizes s,m,l [--workdir DIR] --json PATH

Sizes (users, items, interactions): s = 2k, 5k, 100k (the default data); m = 20k, 50k, 1M;
l = 200k, 200k, 10M. Each size runs `python -m rec_assets.scale_probe` in a subprocess (the
library never imports Dagster), which runs `main_job` with a hook that logs each step's peak RSS
and samples the run's whole process tree; see that module for how memory is measured.

Keys, per size: `scale_<size>_total_s` (wall time of the `dagster job execute` command),
`scale_<size>_peak_rss_mb` (peak memory of the run's process tree, shared pages counted once:
the PSS sum), `scale_<size>_peak_rss_sum_mb` (the same with plain RSS summed: an upper bound),
`scale_<size>_asset_<key>_s` and `scale_<size>_asset_<key>_peak_rss_mb` per asset (asset
checks run as their own steps and appear as `check_<name>`; the three tables of `source_tables`
come from one step and share its figures).

Growth: `scale_growth_<key>` = log(time ratio) / log(work ratio) between the two smallest sizes
run (s to m when both run), and `scale_growth_<from>_<to>_<key>` for each later consecutive pair.
1 is linear in the asset's work, 2 quadratic, 0 a fixed cost. The work of a step is the count
that drives its cost (`WORK`): interactions for the data tables, training, evaluation and the
interaction checks; items for images, item text and CLIP embeddings, item vectors, the index and
the item checks; users for user text embeddings, user vectors, top-k per user, the release gate
(it scores every test user), the online store and the release (both mostly per-user rows).
Steps not listed count interactions. From s to m every count grows 10x, so the choice only
matters from m to l, where items grow 4x and the rest 10x. `scale_max_growth` is the largest
exponent of the first pair among steps taking at least `MIN_GROWTH_SECONDS` at the larger size
(shorter steps are fixed overhead and timer noise, and do not matter at scale).

Training stops early on validation recall, so the two-tower's exponent mixes the data's growth
with a change in the number of epochs; its metadata holds the epochs run at each size.

Size l caps training at `L_MAX_EPOCHS` epochs (`SIZE_RUN_CONFIG`; early stopping ran 6 at s):
at 10M interactions an epoch is 100 times the default data's, and the cap bounds the step at
about that many epochs' time. The cost is model quality: recall at l may be below what training
to convergence gives (compare `two_tower_model`'s validation recall with m's). There is no
text-encoding budget at l: the embedding assets have no setting for one. Nothing else differs
between sizes.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Size:
    name: str
    users: int
    items: int
    interactions: int

    def work(self, dimension: str) -> int:
        return getattr(self, dimension)

    def describe(self) -> str:
        return f"{self.users:,} users, {self.items:,} items, {self.interactions:,} interactions"


SIZES = {
    size.name: size
    for size in (
        Size("s", 2_000, 5_000, 100_000),
        Size("m", 20_000, 50_000, 1_000_000),
        Size("l", 200_000, 200_000, 10_000_000),
    )
}
"""In increasing order: growth is measured between consecutive sizes of this order."""

WORK = {
    **dict.fromkeys(
        (
            "product_images",
            "item_text_embeddings",
            "item_clip_embeddings",
            "item_embeddings",
            "item_index",
            "check_items_schema",
            "check_item_text_embeddings_cover_items",
        ),
        "items",
    ),
    **dict.fromkeys(
        (
            "user_text_embeddings",
            "user_embeddings",
            "user_recommendations",
            "feast_online_features",
            "serving_release",
            "check_users_schema",
            "check_two_tower_beats_popularity",
        ),
        "users",
    ),
}
"""The count each step's cost grows with; any step not listed: interactions."""

L_MAX_EPOCHS = 5
SIZE_RUN_CONFIG = {"l": {"ops": {"two_tower_model": {"config": {"max_epochs": L_MAX_EPOCHS}}}}}
"""Run config added at a size on top of the data sizes (documented in the module docstring)."""

MIN_GROWTH_SECONDS = 2.0


def parse_sizes(text: str) -> list[Size]:
    """'s,m,l' (any order, no repeats) as sizes in increasing order."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = sorted(set(names) - set(SIZES))
    if unknown or not names:
        raise ValueError(
            f"--sizes '{text}': unknown size(s) {', '.join(unknown) or '(none given)'}; choose from {','.join(SIZES)}"
        )
    if len(set(names)) != len(names):
        raise ValueError(f"--sizes '{text}': a size is repeated")
    return [size for name, size in SIZES.items() if name in names]


def run_config(size: Size) -> dict:
    """The Dagster run config of a size: the synthetic source's sizes, plus the size's overrides."""
    ops = {
        "source_tables": {"config": {"n_users": size.users, "n_items": size.items, "n_interactions": size.interactions}}
    }
    ops.update(SIZE_RUN_CONFIG.get(size.name, {}).get("ops", {}))
    return {"ops": ops}


def growth_exponent(seconds_from: float, seconds_to: float, work_from: int, work_to: int) -> float | None:
    """log(time ratio) / log(work ratio); None when either time is not positive or the work did not change."""
    if seconds_from <= 0 or seconds_to <= 0 or work_from <= 0 or work_to <= 0 or work_from == work_to:
        return None
    return math.log(seconds_to / seconds_from) / math.log(work_to / work_from)


def size_results(size: Size, measured: dict) -> dict[str, float]:
    """The flat keys of one size's measurements (the probe's JSON)."""
    results = {
        f"scale_{size.name}_total_s": measured["total_s"],
        f"scale_{size.name}_peak_rss_mb": measured["peak_pss_mb"],
        f"scale_{size.name}_peak_rss_sum_mb": measured["peak_rss_sum_mb"],
    }
    for key, step in measured["steps"].items():
        results[f"scale_{size.name}_asset_{key}_s"] = step["s"]
        results[f"scale_{size.name}_asset_{key}_peak_rss_mb"] = step["peak_rss_mb"]
    return results


def growth_results(measured: dict[str, dict]) -> dict[str, float]:
    """Growth exponents between consecutive sizes of `measured` (size name -> probe JSON), and their maximum."""
    sizes = [SIZES[name] for name in SIZES if name in measured]
    results: dict[str, float] = {}
    for pair, (small, large) in enumerate(itertools.pairwise(sizes)):
        prefix = "scale_growth_" if pair == 0 else f"scale_growth_{small.name}_{large.name}_"
        steps_small, steps_large = measured[small.name]["steps"], measured[large.name]["steps"]
        counted = []
        for key in sorted(steps_small.keys() & steps_large.keys()):
            dimension = WORK.get(key, "interactions")
            exponent = growth_exponent(
                steps_small[key]["s"], steps_large[key]["s"], small.work(dimension), large.work(dimension)
            )
            if exponent is None:
                continue
            results[f"{prefix}{key}"] = exponent
            if pair == 0 and steps_large[key]["s"] >= MIN_GROWTH_SECONDS:
                counted.append(exponent)
        if pair == 0 and counted:
            results["scale_max_growth"] = max(counted)
    return results


def markdown_table(measured: dict[str, dict], growth: dict[str, float]) -> str:
    """Per step: seconds and peak RSS at each size run, and the first pair's growth exponent (the README's table)."""
    names = [name for name in SIZES if name in measured]
    steps = sorted(
        set().union(*(measured[name]["steps"] for name in names)),
        key=lambda key: -max(measured[name]["steps"].get(key, {"s": 0.0})["s"] for name in names),
    )
    header = ["step", *(f"{name} seconds" for name in names), *(f"{name} peak RSS MB" for name in names), "growth"]
    lines = ["| " + " | ".join(header) + " |", "|---" + "|---:" * (len(header) - 1) + "|"]

    def cell(name: str, key: str, field: str) -> str:
        value = measured[name]["steps"].get(key, {}).get(field)
        return "" if value is None else f"{value:.1f}" if field == "s" else f"{value:.0f}"

    for key in steps:
        exponent = growth.get(f"scale_growth_{key}")
        lines.append(
            "| "
            + " | ".join(
                [
                    f"`{key}`",
                    *(cell(name, key, "s") for name in names),
                    *(cell(name, key, "peak_rss_mb") for name in names),
                    "" if exponent is None else f"{exponent:.2f}",
                ]
            )
            + " |"
        )
    totals = [f"{measured[name]['total_s']:.1f}" for name in names]
    peaks = [f"{measured[name]['peak_pss_mb']:.0f}" for name in names]
    lines.append("| " + " | ".join(["**whole run**", *totals, *peaks, ""]) + " |")
    return "\n".join(lines)


def _measure(size: Size, workdir: Path | None) -> dict:
    """Runs the graph at `size` through `rec_assets.scale_probe` and returns its JSON."""
    with tempfile.TemporaryDirectory() as tmp:
        config, out = Path(tmp) / "run_config.json", Path(tmp) / "measured.json"
        config.write_text(json.dumps(run_config(size)))  # JSON is YAML: the probe reads either
        command = [sys.executable, "-m", "rec_assets.scale_probe", "--run-config", str(config), "--json", str(out)]
        if workdir is not None:
            command += ["--workdir", str(workdir / size.name)]
        subprocess.run(command, check=True)
        measured = json.loads(out.read_text())
    if workdir is not None:  # kept next to the run, so a later size's failure loses nothing
        (workdir / size.name / "measured.json").write_text(json.dumps(measured, indent=2))
    return measured


def run(argv: list[str]) -> dict[str, float]:
    parser = argparse.ArgumentParser(prog="bench scale", description="The whole graph at sizes s, m and l.")
    parser.add_argument("--sizes", default="s", help="comma-separated sizes among s, m, l (default: s)")
    parser.add_argument(
        "--workdir",
        type=Path,
        help="keep each size's Dagster home, artifacts and measurements under DIR/<size> (default: temporary, deleted)",
    )
    args = parser.parse_args(argv)
    try:
        sizes = parse_sizes(args.sizes)
    except ValueError as error:
        parser.error(str(error))
    measured, results = {}, {}
    for size in sizes:
        print(f"== scale {size.name}: {size.describe()}", file=sys.stderr, flush=True)
        measured[size.name] = _measure(size, args.workdir)
        results.update(size_results(size, measured[size.name]))
    growth = growth_results(measured)
    print(markdown_table(measured, growth), file=sys.stderr, flush=True)
    return results | growth
