"""Issue 7: artifacts on S3-compatible object storage (moto's server on loopback)."""

import dagster as dg
import pytest

from rec_assets.assets.data import interaction_splits, interactions, source_tables
from rec_assets.resources import ArtifactStore, DeviceResource, TableIOManager
from rec_core.generation.synthetic import OracleScorer
from rec_core.storage import as_path, atomic_directory, read_parquet

moto_server = pytest.importorskip("moto.server")


@pytest.fixture()
def bucket(monkeypatch):
    import boto3

    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    for key, value in {
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ENDPOINT_URL_S3": endpoint,
    }.items():
        monkeypatch.setenv(key, value)
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="artifacts")
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()
    yield "s3://artifacts/rec"
    server.stop()


def test_data_assets_on_object_storage(bucket):
    resources = {
        "artifacts": ArtifactStore(root=bucket),
        "io_manager": TableIOManager(root=bucket),
        "device": DeviceResource(device="cpu"),
    }
    result = dg.materialize(
        [source_tables, interactions, interaction_splits],
        resources=resources,
        run_config={"ops": {"source_tables": {"config": {"n_users": 60, "n_items": 150, "n_interactions": 900}}}},
    )
    assert result.success
    assert read_parquet(f"{bucket}/interaction_splits.parquet").num_rows == 900
    oracle = OracleScorer.load(f"{bucket}/synthetic_truth")
    assert oracle.score(["U000001"]).shape == (1, 150)


def test_directory_artifacts_on_object_storage(bucket):
    with atomic_directory(f"{bucket}/model") as staging:
        (staging / "model_config.json").write_text('{"dim": 8}')
        (staging / "sub").mkdir()
        (staging / "sub" / "weights.bin").write_bytes(b"\x00\x01")
    remote = as_path(f"{bucket}/model")
    assert (remote / "model_config.json").read_text() == '{"dim": 8}'
    assert (remote / "sub" / "weights.bin").read_bytes() == b"\x00\x01"


def test_model_artifact_on_object_storage(bucket, small_dataset):
    """The two-tower is written to and loaded from object storage as from a local folder."""
    import numpy as np

    from rec_core.data.splits import split_interactions
    from rec_core.inference import TwoTowerEncoder
    from rec_core.training import TrainingConfig, prepare_training_data, train_two_tower, write_artifact

    config = TrainingConfig(max_epochs=2, seed=0)
    splits = split_interactions(small_dataset.interactions, method="time")
    trained = train_two_tower(
        prepare_training_data(small_dataset.users, small_dataset.items, splits, config=config), config, progress=False
    )
    write_artifact(trained, f"{bucket}/two_tower_model", {"validation_recall_at_10": 0.1})
    remote = TwoTowerEncoder.load(f"{bucket}/two_tower_model")
    _, expected = TwoTowerEncoder(trained.model, trained.preprocessing).encode_items(small_dataset.items)
    _, loaded = remote.encode_items(small_dataset.items)
    np.testing.assert_allclose(loaded, expected, atol=1e-6)
