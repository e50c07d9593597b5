"""Issue 7: the landing sensor and the nightly schedule."""

import json
import os
import time

import dagster as dg
import pandas as pd
import pytest

from rec_assets.assets.data import interactions, source_tables
from rec_assets.schedules import nightly_retrain_schedule
from rec_assets.sensors import interaction_landing_sensor
from rec_core.data.landing import file_digest, validate_landing_file
from rec_core.storage import read_parquet
from tests.conftest import cpu_resources

SMALL = {"source": "synthetic", "n_users": 80, "n_items": 200, "n_interactions": 2_000, "seed": 5}


def _age(path):
    past = time.time() - 60
    os.utime(path, (past, past))


@pytest.fixture()
def materialized(tmp_path):
    root = tmp_path / "artifacts"
    result = dg.materialize(
        [source_tables, interactions],
        resources=cpu_resources(root),
        run_config={"ops": {"source_tables": {"config": SMALL}}},
    )
    assert result.success
    return root


def _new_events(root, n, prefix):
    users = read_parquet(root / "users.parquet").to_pandas()
    items = read_parquet(root / "items.parquet").to_pandas()
    return pd.DataFrame(
        {
            "interaction_id": [f"{prefix}{i}" for i in range(n)],
            "user_id": users["user_id"].iloc[:n].to_numpy(),
            "item_id": items["item_id"].iloc[:n].to_numpy(),
            "timestamp": pd.Timestamp("2026-02-01", tz="UTC"),
            "interaction_type": "purchase",
            "rating": None,
            "quantity": 1,
            "review_title": None,
            "review_content": None,
        }
    )


def _ingest(root, run_config, **kwargs):
    """Materializes only `interactions` over the tables under `root`, as the sensor's run would."""
    return dg.materialize(
        [source_tables, interactions],
        resources=cpu_resources(root),
        selection=["interactions"],
        run_config=run_config,
        **kwargs,
    )


def _evaluate(cursor=None):
    with dg.instance_for_test() as instance:
        return interaction_landing_sensor(dg.build_sensor_context(instance=instance, cursor=cursor))


def test_landing_file_is_ingested_once(tmp_path, materialized, monkeypatch):
    landing = tmp_path / "landing"
    landing.mkdir()
    monkeypatch.setenv("REC_LANDING_DIR", str(landing))
    events = _new_events(materialized, 7, "new-")
    path = landing / "batch1.csv"
    events.to_csv(path, index=False)
    _age(path)

    first = _evaluate()
    assert len(first.run_requests) == 1
    request = first.run_requests[0]
    before = read_parquet(materialized / "interactions.parquet").num_rows
    run = _ingest(materialized, request.run_config)
    assert run.success
    after = read_parquet(materialized / "interactions.parquet").to_pandas()
    assert len(after) == before + 7
    assert set(after["interaction_id"]) >= set(events["interaction_id"])

    # The same file again: the cursor knows it, so no run is requested ...
    second = _evaluate(first.cursor)
    assert not second.run_requests
    # ... and even a forced re-run with the same file adds nothing.
    again = _ingest(materialized, request.run_config)
    assert again.success
    assert read_parquet(materialized / "interactions.parquet").num_rows == before + 7


def test_malformed_and_unfinished_files_are_not_ingested(tmp_path, materialized, monkeypatch):
    landing = tmp_path / "landing"
    landing.mkdir()
    monkeypatch.setenv("REC_LANDING_DIR", str(landing))
    bad = landing / "broken.csv"
    _new_events(materialized, 3, "bad-").drop(columns=["item_id"]).to_csv(bad, index=False)
    _age(bad)
    fresh = landing / "still_writing.parquet"
    _new_events(materialized, 3, "fresh-").to_parquet(fresh)  # mtime is now: maybe still being written
    result = _evaluate()
    assert not result.run_requests
    assert "broken.csv" in result.skip_reason.skip_message
    _age(fresh)
    later = _evaluate(result.cursor)
    assert len(later.run_requests) == 1 and later.run_requests[0].tags["landing_file"] == "still_writing.parquet"


def test_truncated_parquet_is_rejected_and_never_ingested(tmp_path, materialized, monkeypatch):
    """A parquet file cut off halfway (an interrupted upload) is named in the skip reason and adds no rows."""
    landing = tmp_path / "landing"
    landing.mkdir()
    monkeypatch.setenv("REC_LANDING_DIR", str(landing))
    whole = tmp_path / "whole.parquet"
    _new_events(materialized, 20, "cut-").to_parquet(whole)
    assert len(validate_landing_file(whole)) == 20  # the complete file is valid: only the truncation is wrong
    raw = whole.read_bytes()
    truncated = landing / "cut_short.parquet"
    truncated.write_bytes(raw[: len(raw) // 2])
    _age(truncated)

    result = _evaluate()
    assert not result.run_requests
    assert "cut_short.parquet" in result.skip_reason.skip_message
    assert json.loads(result.cursor) == {file_digest(truncated): "rejected"}  # not retried on every tick

    # Even a run forced with the file ingests nothing: it fails, and the stored interactions are unchanged.
    before = read_parquet(materialized / "interactions.parquet").to_pandas()
    forced = _ingest(
        materialized,
        {"ops": {"interactions": {"config": {"landing_files": [str(truncated)]}}}},
        raise_on_error=False,
    )
    assert not forced.success
    failures = [event.step_failure_data.error.to_string() for event in forced.get_step_failure_events()]
    assert any("cut_short.parquet" in message and "cannot be parsed" in message for message in failures), failures
    after = read_parquet(materialized / "interactions.parquet").to_pandas()
    assert len(after) == len(before) and not after["interaction_id"].str.startswith("cut-").any()
    landed = materialized / "landed_interactions"
    assert not landed.exists() or not any(landed.iterdir())


def test_nightly_schedule_requests_retraining():
    context = dg.build_schedule_context(
        scheduled_execution_time=pd.Timestamp("2026-11-28 02:00", tz="UTC").to_pydatetime()
    )
    requests = list(nightly_retrain_schedule.evaluate_tick(context).run_requests)
    assert len(requests) == 1
    assert nightly_retrain_schedule.cron_schedule == "0 2 * * *"
    assert nightly_retrain_schedule.job_name == "retrain_job"


def test_executor_follows_the_environment(monkeypatch):
    from dagster_k8s import k8s_job_executor

    from rec_assets.executors import executor_for_environment

    monkeypatch.setenv("REC_EXECUTOR", "k8s")
    assert executor_for_environment() is k8s_job_executor
    monkeypatch.setenv("REC_EXECUTOR", "multiprocess")
    executor = executor_for_environment()
    assert executor.name == "multiprocess_forkserver"
    resolved = executor.apply_config_mapping({}).value["config"]  # the configured defaults
    assert resolved["start_method"]["forkserver"]["preload_modules"] == ["rec_assets"]
    monkeypatch.setenv("REC_EXECUTOR", "spark")
    with pytest.raises(ValueError, match="REC_EXECUTOR"):
        executor_for_environment()


def test_gpu_tags_request_one_gpu():
    from rec_assets.gpu import GPU_ASSET_KWARGS

    limits = GPU_ASSET_KWARGS["op_tags"]["dagster-k8s/config"]["container_config"]["resources"]["limits"]
    assert limits == {"nvidia.com/gpu": "1"} and GPU_ASSET_KWARGS["pool"] == "gpu"
