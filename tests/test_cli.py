"""Issue 7: the command-line paths CI and operators use: validate, materialize everything on a
small configuration, and list the schedule and the sensor."""

import os
import shutil
import subprocess
import sys

import dagster as dg
import pytest

from tests.conftest import REPO
from tests.test_webserver_e2e import REQUIRED_ASSETS

DAGSTER = [sys.executable, "-m", "dagster"]


@pytest.fixture(scope="module")
def cli_env(tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    artifacts = tmp_path_factory.mktemp("artifacts")
    return {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "REC_ARTIFACT_ROOT": str(artifacts),
        "REC_LANDING_DIR": str(artifacts / "landing"),
        "OMP_WAIT_POLICY": "PASSIVE",
        "HF_HUB_OFFLINE": "1",
    }


def _run(args, env, timeout=900):
    done = subprocess.run([*DAGSTER, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout + done.stderr


def test_definitions_validate(cli_env):
    assert "Validation successful" in _run(["definitions", "validate", "-m", "rec_assets"], cli_env)


@pytest.mark.slow
def test_materialize_everything_on_a_small_configuration(cli_env):
    _run(
        ["asset", "materialize", "-m", "rec_assets", "--select", "*", "-c", str(REPO / "configs" / "small.yaml")],
        cli_env,
    )
    with dg.DagsterInstance.from_config(cli_env["DAGSTER_HOME"]) as instance:
        materialized = {k.to_user_string() for k in instance.get_asset_keys()}
        check = instance.event_log_storage.get_latest_asset_check_execution_by_key(
            [dg.AssetCheckKey(dg.AssetKey("two_tower_model"), "two_tower_beats_popularity")]
        )
    assert set(REQUIRED_ASSETS) <= materialized, set(REQUIRED_ASSETS) - materialized
    [execution] = check.values()
    assert execution.status.value == "SUCCEEDED"

    # The online store serves exactly the user vectors the model produced.
    import numpy as np

    from rec_core import feature_store as fs
    from rec_core.embeddings import embedding_matrix
    from rec_core.storage import read_asset_table

    root = cli_env["REC_ARTIFACT_ROOT"]
    produced = read_asset_table(root, "user_embeddings")
    source = fs.FeastFeatureSource(fs.load_feature_store(profile="sqlite", data_dir=fs.default_data_dir(root)))
    vectors = embedding_matrix(produced, "embedding")
    for row in (0, len(produced) // 2, len(produced) - 1):
        assert np.array_equal(source.user_embedding(produced["user_id"].iloc[row]), vectors[row])


def test_schedule_and_sensor_are_listed(cli_env):
    assert "nightly_retrain" in _run(["schedule", "list", "-m", "rec_assets"], cli_env)
    assert "interaction_landing_sensor" in _run(["sensor", "list", "-m", "rec_assets"], cli_env)
