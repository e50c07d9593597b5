"""Times the whole graph: a cold materialization, then a re-materialization after 1% new interactions.

Both run through the `dagster job execute` command with the default (multiprocess) executor, as
a user runs them. Run through `python -m rec_core.bench pipeline` (which calls this module in a
subprocess, so the library itself never imports Dagster). Per-asset wall times come from the
step events in each run's event log; steps run two at a time, so they add up to more than the total.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import dagster as dg
import pandas as pd
import yaml

from rec_core.data.paths import ARTIFACT_ROOT_ENV, table_file


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


def _dagster(args: list[str], env: dict) -> None:
    """Runs the dagster CLI as a user would (the default multiprocess executor)."""
    subprocess.run(
        [sys.executable, "-m", "dagster", *args], check=True, env=env, cwd=Path(__file__).resolve().parents[1]
    )


def _latest_run_id(instance: dg.DagsterInstance, job_name: str) -> str:
    [run] = instance.get_runs(filters=dg.RunsFilter(job_name=job_name), limit=1)
    if run.status != dg.DagsterRunStatus.SUCCESS:
        raise RuntimeError(f"{job_name} run {run.run_id} ended {run.status.value}")
    return run.run_id


def bench_environment(workdir: Path) -> tuple[Path, dict]:
    """A fresh Dagster home and artifact root under `workdir`: (the home, the environment to run dagster in)."""
    home = workdir / "home"
    home.mkdir(parents=True, exist_ok=True)
    shutil.copy(Path(__file__).resolve().parents[1] / "dagster.yaml", home / "dagster.yaml")
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        ARTIFACT_ROOT_ENV: str(workdir / "artifacts"),
        "REC_LANDING_DIR": str(workdir / "landing"),
        "OMP_WAIT_POLICY": "PASSIVE",
        "HF_HUB_OFFLINE": "1",
    }
    return home, env


def run_benchmark(workdir: Path, n_users: int, n_items: int, n_interactions: int) -> dict[str, float]:
    home, env = bench_environment(workdir)
    config = workdir / "sizes.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "ops": {
                    "source_tables": {
                        "config": {"n_users": n_users, "n_items": n_items, "n_interactions": n_interactions}
                    }
                }
            }
        )
    )
    from rec_assets import defs

    results: dict[str, float] = {}
    start = time.perf_counter()
    _dagster(["job", "execute", "-m", "rec_assets", "-j", "main_job", "-c", str(config)], env)
    results["pipeline_cold_total_s"] = time.perf_counter() - start

    # 1% new interactions, landed and ingested as the sensor would request it.
    interactions = pd.read_parquet(workdir / "artifacts" / table_file("interactions"))
    fresh = interactions.sample(frac=0.01, random_state=0).copy()
    fresh["interaction_id"] = "bench-" + fresh["interaction_id"].astype(str)
    fresh["timestamp"] = fresh["timestamp"].max() + pd.Timedelta(days=1)
    landing = workdir / "landing"
    landing.mkdir(parents=True, exist_ok=True)
    fresh.to_parquet(landing / "one_percent.parquet")
    ingest_config = workdir / "ingest.yaml"
    ingest_config.write_text(
        yaml.safe_dump({"ops": {"interactions": {"config": {"landing_files": [str(landing / "one_percent.parquet")]}}}})
    )
    start = time.perf_counter()
    _dagster(["job", "execute", "-m", "rec_assets", "-j", "ingest_job", "-c", str(ingest_config)], env)
    results["pipeline_incremental_total_s"] = time.perf_counter() - start

    with dg.DagsterInstance.from_config(str(home)) as instance:
        for step, seconds in sorted(_step_seconds(instance, _latest_run_id(instance, "main_job")).items()):
            for key in _keys_of_step(defs, step):
                results[f"asset_{key}_s"] = seconds
        rerun = _step_seconds(instance, _latest_run_id(instance, "ingest_job"))
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
