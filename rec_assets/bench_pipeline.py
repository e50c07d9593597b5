"""Times the whole graph: a cold materialization, then a re-materialization after 1% new interactions.

Run through `python -m rec_core.bench pipeline` (which calls this module in a subprocess, so
the library itself never imports Dagster). Per-asset wall times come from the step events in
the run's event log.
"""

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import dagster as dg
import pandas as pd


def _step_seconds(instance: dg.DagsterInstance, run_id: str) -> dict[str, float]:
    """Wall seconds per step (asset or multi-asset op) from STEP_START to STEP_SUCCESS."""
    starts, seconds = {}, {}
    for record in instance.all_logs(run_id):
        event = record.dagster_event
        if event is None or event.step_key is None:
            continue
        if event.event_type == dg.DagsterEventType.STEP_START:
            starts[event.step_key] = record.timestamp
        elif event.event_type == dg.DagsterEventType.STEP_SUCCESS and event.step_key in starts:
            seconds[event.step_key] = record.timestamp - starts[event.step_key]
    return seconds


def run_benchmark(workdir: Path, n_users: int, n_items: int, n_interactions: int) -> dict[str, float]:
    os.environ["REC_ARTIFACT_ROOT"] = str(workdir / "artifacts")
    os.environ["REC_LANDING_DIR"] = str(workdir / "landing")
    from rec_assets import defs

    run_config = {"ops": {"source_tables": {"config": {"n_users": n_users, "n_items": n_items,
                                                        "n_interactions": n_interactions}}}}
    results: dict[str, float] = {}
    (workdir / "home").mkdir(parents=True, exist_ok=True)
    with dg.instance_for_test(temp_dir=str(workdir / "home")) as instance:
        main = defs.get_job_def("main_job")
        start = time.perf_counter()
        cold = main.execute_in_process(instance=instance, run_config=run_config)
        results["pipeline_cold_total_s"] = time.perf_counter() - start
        if not cold.success:
            raise RuntimeError("cold materialization failed")
        for step, seconds in sorted(_step_seconds(instance, cold.run_id).items()):
            for key in _keys_of_step(defs, step):
                results[f"asset_{key}_s"] = seconds

        # 1% new interactions, landed and ingested as the sensor would.
        interactions = pd.read_parquet(workdir / "artifacts" / "interactions.parquet")
        fresh = interactions.sample(frac=0.01, random_state=0).copy()
        fresh["interaction_id"] = "bench-" + fresh["interaction_id"].astype(str)
        fresh["timestamp"] = fresh["timestamp"].max() + pd.Timedelta(days=1)
        landing = workdir / "landing"
        landing.mkdir(parents=True, exist_ok=True)
        fresh.to_parquet(landing / "one_percent.parquet")
        ingest = defs.get_job_def("ingest_job")
        start = time.perf_counter()
        incremental = ingest.execute_in_process(instance=instance, run_config={
            "ops": {"interactions": {"config": {"landing_files": [str(landing / "one_percent.parquet")]}}}})
        results["pipeline_incremental_total_s"] = time.perf_counter() - start
        if not incremental.success:
            raise RuntimeError("incremental materialization failed")
        rerun = _step_seconds(instance, incremental.run_id)
        results["pipeline_incremental_assets_rerun"] = float(sum(len(_keys_of_step(defs, s)) for s in rerun))
        results["pipeline_assets_total"] = float(len(_all_keys(defs)))
    return results


def _all_keys(defs) -> list[str]:
    return [k.to_user_string() for k in defs.get_repository_def().asset_graph.get_all_asset_keys()]


def _keys_of_step(defs, step: str) -> list[str]:
    """Asset keys computed by the op named `step`."""
    graph = defs.get_repository_def().asset_graph
    keys = []
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        if node.assets_def.node_def.name == step:
            keys.append(key.to_user_string())
    return keys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--n-users", type=int, default=2_000)
    parser.add_argument("--n-items", type=int, default=5_000)
    parser.add_argument("--n-interactions", type=int, default=100_000)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        results = run_benchmark(Path(tmp), args.n_users, args.n_items, args.n_interactions)
    args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
