"""Issue 7: the UI's way in. A run launched through the webserver's GraphQL API (as the UI
launches it) runs with the multiprocess executor in its own process, and headless Chromium
renders the asset graph page with our assets on it."""

import os
import shutil
import socket
import sys
import time

import pytest
import requests
import yaml

from tests.chromium import rendered_dom
from tests.conftest import REPO
from tests.processes import start_process_group, stop_process_group

pytestmark = pytest.mark.slow
SMALL_CONFIG = REPO / "configs" / "small.yaml"
REQUIRED_ASSETS = (
    "users",
    "items",
    "interactions",
    "interaction_splits",
    "product_images",
    "item_text_embeddings",
    "user_text_embeddings",
    "item_clip_embeddings",
    "two_tower_model",
    "model_evaluation",
    "item_embeddings",
    "user_embeddings",
    "item_index",
    "user_recommendations",
    "feast_registry",
    "feast_online_features",
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def webserver(tmp_path_factory):
    home = tmp_path_factory.mktemp("dagster_home")
    config = yaml.safe_load((REPO / "dagster.yaml").read_text())
    # No daemon in this test: launch runs straight away instead of queueing them.
    config["run_coordinator"] = {"module": "dagster._core.run_coordinator", "class": "DefaultRunCoordinator"}
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))
    artifacts = tmp_path_factory.mktemp("artifacts")
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "REC_ARTIFACT_ROOT": str(artifacts),
        "REC_LANDING_DIR": str(artifacts / "landing"),
        "OMP_WAIT_POLICY": "PASSIVE",
    }
    port = _free_port()
    log = open(home / "webserver.log", "wb")
    process = start_process_group(
        [sys.executable, "-m", "dagster_webserver", "-h", "127.0.0.1", "-p", str(port), "-m", "rec_assets"],
        REPO,
        env,
        log,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 180
    while time.time() < deadline:
        try:
            if requests.get(f"{url}/server_info", timeout=2).ok:
                break
        except requests.RequestException:
            pass
        if process.poll() is not None:
            raise RuntimeError((home / "webserver.log").read_text())
        time.sleep(1)
    else:
        raise RuntimeError("webserver did not start")
    yield {"url": url, "port": port, "home": home, "artifacts": artifacts}
    stop_process_group(process)
    log.close()


def test_graphql_launch_materializes_the_graph(webserver):
    from dagster_graphql import DagsterGraphQLClient

    client = DagsterGraphQLClient("127.0.0.1", port_number=webserver["port"], timeout=60)
    run_config = yaml.safe_load(SMALL_CONFIG.read_text())
    run_id = client.submit_job_execution("main_job", run_config=run_config)
    deadline = time.time() + 900
    status = None
    while time.time() < deadline:
        status = client.get_run_status(run_id)
        if status.value in ("SUCCESS", "FAILURE", "CANCELED"):
            break
        time.sleep(3)
    assert status is not None and status.value == "SUCCESS", status
    # The run's steps ran in their own processes (multiprocess executor): the artifacts crossed them.
    artifacts = webserver["artifacts"]
    for name in ("users.parquet", "interaction_splits.parquet", "user_recommendations.parquet"):
        assert (artifacts / name).exists(), name
    assert (artifacts / "item_index").is_dir() and (artifacts / "two_tower_model" / "model.safetensors").exists()
    from dagster import DagsterInstance

    with DagsterInstance.from_config(str(webserver["home"])) as instance:
        materialized = {k.to_user_string() for k in instance.get_asset_keys()}
        step_pids = {
            r.dagster_event.pid
            for r in instance.all_logs(run_id)
            if r.dagster_event is not None and r.dagster_event.event_type_value == "STEP_START"
        }
    assert set(REQUIRED_ASSETS) <= materialized, set(REQUIRED_ASSETS) - materialized
    assert len(step_pids) > 1, "steps should run in separate processes"


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium is not installed")
def test_chromium_shows_the_asset_graph(webserver, tmp_path):
    # A tall window: the catalog renders only the rows in view.
    dom = rendered_dom(f"{webserver['url']}/assets", tmp_path / "profile", "1400,4000", 30000, "--disable-quic")
    missing = [asset for asset in REQUIRED_ASSETS if f">{asset}<" not in dom]
    assert not missing, f"not on the assets page: {missing}"
