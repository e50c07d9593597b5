"""Issue 13 (library part): releases are immutable, consistent, atomic to switch, and can be rolled back.

The artifact root holds the small synthetic catalog and, staged in turn, two versions of the
served vectors ("model-A": an exact index, "model-B": an IVF index over other vectors, items in
another row order), each with user and item embedding tables naming their model. Every user's
answer under each version is computed beforehand; under load, an answer must equal its own
user's answer under the release it says it came from. Latencies are not asserted.
"""

import dataclasses
import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid

import numpy as np
import pandas as pd
import pytest

from rec_core import release as releases
from rec_core.index import IndexConfig, ItemIndex
from rec_core.serving import Recommender, vector_table
from rec_core.storage import atomic_directory, read_parquet, write_parquet
from tests.conftest import REPO

DIM, K = 16, 10


@dataclasses.dataclass
class Version:
    model: str
    user_vectors: np.ndarray
    item_ids: list
    item_vectors: np.ndarray
    index: ItemIndex


def _unit(rng, n):
    vectors = rng.normal(size=(n, DIM)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def stage(root, version: Version, user_ids) -> None:
    """Writes one version's working copies as the serving assets do (a fresh index build id each time)."""
    write_parquet(
        vector_table("user_id", user_ids, version.user_vectors, version.model), root / "user_embeddings.parquet"
    )
    write_parquet(
        vector_table("item_id", version.item_ids, version.item_vectors, version.model), root / "item_embeddings.parquet"
    )
    index = version.index
    report = dataclasses.replace(index.report, build_id=uuid.uuid4().hex)
    ItemIndex(index.item_ids, index.vectors, index.index, report, index.config).save(root / "item_index")


def answer(result):
    return tuple((item.item_id, round(item.score, 4)) for item in result)


def build_versions(dataset):
    """(user ids, {"A": Version, "B": Version}); deterministic, so another process rebuilds the same ones."""
    user_ids = dataset.users["user_id"].tolist()
    item_ids = dataset.items["item_id"].tolist()
    rng = np.random.default_rng(0)
    user_a, item_a, user_b, item_b = (
        _unit(rng, len(user_ids)),
        _unit(rng, len(item_ids)),
        _unit(rng, len(user_ids)),
        _unit(rng, len(item_ids)),
    )
    order = rng.permutation(len(item_ids))
    b_ids = [item_ids[i] for i in order]
    ivf = ItemIndex.build(
        b_ids,
        item_b[order],
        IndexConfig(exact_max_items=100, target_recall=0.9, recall_queries=200),
        recall_queries=user_b,
    )
    return user_ids, {
        "A": Version("model-A", user_a, item_ids, item_a, ItemIndex.build(item_ids, item_a)),
        "B": Version("model-B", user_b, b_ids, item_b[order], ivf),
    }


@pytest.fixture(scope="module")
def versions(small_dataset):
    return build_versions(small_dataset)


@pytest.fixture()
def root(tmp_path, small_dataset):
    for name in ("users", "items", "interactions"):
        write_parquet(getattr(small_dataset, name), tmp_path / f"{name}.parquet")
    return tmp_path


def _answers(root, manifest, user_ids):
    recommender = Recommender.load(root, release=manifest)
    return {user_id: answer(recommender.recommend(user_id, k=K)) for user_id in user_ids}


def test_a_release_is_served_until_the_next_one_is_published(root, versions):
    user_ids, by_name = versions
    stage(root, by_name["A"], user_ids)
    first = releases.publish_release(root, code_versions={"item_index": "3"})
    served = Recommender.load(root)
    assert served.release["release_id"] == first["release_id"] and served.release["model_version"] == "model-A"
    result = served.recommend(user_ids[0], k=K)
    assert result.release_id == first["release_id"] and result.to_dict()["release_id"] == first["release_id"]
    before = {u: answer(served.recommend(u, k=K)) for u in user_ids[:40]}

    stage(root, by_name["B"], user_ids)  # new working copies: serving does not read them
    assert served.reload() is False
    assert {u: answer(Recommender.load(root).recommend(u, k=K)) for u in user_ids[:40]} == before
    second = releases.publish_release(root)
    assert second["model_version"] == "model-B" and second["code_versions"] == {}
    assert served.reload() is True and served.release["release_id"] == second["release_id"]
    assert served.recommend(user_ids[0], k=K).release_id == second["release_id"]
    assert [m["release_id"] for m in releases.list_releases(root)] == [first["release_id"], second["release_id"]]
    assert first["artifacts"]["item_index"] != second["artifacts"]["item_index"]
    assert first["artifacts"]["items"] == second["artifacts"]["items"]  # unchanged tables are stored once


def test_vectors_of_another_model_are_refused(root, versions):
    user_ids, by_name = versions
    stage(root, by_name["A"], user_ids)
    first = releases.publish_release(root)
    import pyarrow as pa

    labels = pa.array(["model-A"] * (len(user_ids) - 10) + ["model-B"] * 10)
    table = vector_table("user_id", user_ids, by_name["A"].user_vectors, "model-A")
    write_parquet(table.set_column(2, "model_version", labels), root / "user_embeddings.parquet")
    with pytest.raises(releases.ReleaseError, match="name 2 different models"):
        releases.publish_release(root)
    stage(root, by_name["A"], user_ids)
    write_parquet(
        vector_table("item_id", by_name["B"].item_ids, by_name["B"].item_vectors, "model-A"),
        root / "item_embeddings.parquet",
    )  # labelled A, but not the vectors the index holds
    with pytest.raises(releases.ReleaseError, match="item_index does not hold the item_embeddings"):
        releases.publish_release(root)
    assert releases.current_release(root)["release_id"] == first["release_id"]
    assert len(releases.list_releases(root)) == 1


def test_a_trained_model_requires_vectors_naming_it(tmp_path):
    """With a model in the set, a vector table without (or with another) model_version is refused, naming
    the file, the column and the count of rows."""
    import torch
    from safetensors.torch import save_file

    (tmp_path / "two_tower_model").mkdir()
    save_file({"w": torch.ones(2)}, str(tmp_path / "two_tower_model" / "model.safetensors"))
    version = releases.model_version(tmp_path / "two_tower_model")
    artifacts = {"user_embeddings": "u.parquet"}
    write_parquet(vector_table("user_id", ["a", "b", "c"], np.eye(3, dtype=np.float32)), tmp_path / "u.parquet")
    with pytest.raises(releases.ReleaseError, match="column model_version missing"):
        releases._vectors_model_version(tmp_path, artifacts, version)
    write_parquet(
        vector_table("user_id", ["a", "b", "c"], np.eye(3, dtype=np.float32), "other"), tmp_path / "u.parquet"
    )
    with pytest.raises(
        releases.ReleaseError,
        match=f"model_version: 3 of 3 rows come from another model than two_tower_model \\({version}\\)",
    ):
        releases._vectors_model_version(tmp_path, artifacts, version)
    write_parquet(
        vector_table("user_id", ["a", "b", "c"], np.eye(3, dtype=np.float32), version), tmp_path / "u.parquet"
    )
    assert releases._vectors_model_version(tmp_path, artifacts, version) == version


def test_rollback_and_retention(root, versions):
    user_ids, by_name = versions
    published = []
    for name in "ABABA":
        stage(root, by_name[name], user_ids)
        published.append(releases.publish_release(root, keep=3)["release_id"])
    kept = [m["release_id"] for m in releases.list_releases(root)]
    assert kept == published[-3:]
    named = {p for m in releases.list_releases(root) for p in m["artifacts"].values()}
    stored = {str(p.relative_to(root)) for p in (root / "releases" / "store").glob("*/*")}
    assert stored == named  # the two dropped releases' index builds are gone, nothing kept is missing

    back = releases.rollback(root)
    assert back["release_id"] == published[-2] and releases.current_release(root)["activation"] == "rollback"
    assert releases.rollback(root)["release_id"] == published[-3]
    with pytest.raises(releases.ReleaseError, match="oldest kept release"):
        releases.rollback(root)
    assert releases.rollback(root, published[-1])["release_id"] == published[-1]
    with pytest.raises(releases.ReleaseError, match="no kept release 'nope'"):
        releases.rollback(root, "nope")
    releases.rollback(root, published[-3])
    assert releases.prune(root, keep=1) == [published[-2]]  # the release being served is never pruned
    assert [m["release_id"] for m in releases.list_releases(root)] == [published[-3], published[-1]]
    assert Recommender.load(root).release["release_id"] == published[-3]


def test_release_files_are_readable_per_umask(root, versions):
    import torch
    from safetensors.torch import save_model

    user_ids, by_name = versions
    stage(root, by_name["A"], user_ids)
    with atomic_directory(root / "two_tower_model") as staging:  # safetensors writes through a 0600 temporary file
        save_model(torch.nn.Linear(2, 2), str(staging / "model.safetensors"))
    assert oct((root / "two_tower_model" / "model.safetensors").stat().st_mode & 0o777) == oct(0o666 & ~_umask())
    os.remove(root / "two_tower_model" / "model.safetensors")
    releases.publish_release(root)
    modes = {p.relative_to(root): p.stat().st_mode & 0o777 for p in (root / "releases").rglob("*")}
    expected_file, expected_dir = 0o666 & ~_umask(), 0o777 & ~_umask()
    assert modes and all(mode == (expected_dir if (root / p).is_dir() else expected_file) for p, mode in modes.items())


def _umask() -> int:
    from rec_core.storage import _process_umask

    return _process_umask()


def test_rollback_and_rerelease_under_load(root, versions):
    """8 threads serve while the release is rolled back and re-released (and reloaded) 6 times: no
    errors, and every answer is exactly its user's answer under the release it names."""
    user_ids, by_name = versions
    stage(root, by_name["A"], user_ids)
    release_a = releases.publish_release(root)
    stage(root, by_name["B"], user_ids)
    release_b = releases.publish_release(root)
    expected = {
        release_a["release_id"]: _answers(root, release_a, user_ids),
        release_b["release_id"]: _answers(root, release_b, user_ids),
    }
    recommender = Recommender.load(root)
    errors, wrong, served = [], [], {}
    lock, done = threading.Lock(), threading.Event()

    def serve(worker):
        rng = np.random.default_rng(worker)
        count = 0
        while count < 200 or not done.is_set():
            user_id = user_ids[int(rng.integers(len(user_ids)))]
            try:
                result = recommender.recommend(user_id, k=K)
            except Exception as exc:  # noqa: BLE001 - any failure is what this test counts
                with lock:
                    errors.append(repr(exc))
                continue
            count += 1
            with lock:
                served[result.release_id] = served.get(result.release_id, 0) + 1
                if expected.get(result.release_id, {}).get(user_id) != answer(result):
                    wrong.append((result.release_id, user_id))

    def operate():
        try:
            for step in range(6):
                if step % 2 == 0:
                    releases.rollback(root)
                else:  # re-release B's working copies: a new release id with B's answers
                    again = releases.publish_release(root)
                    expected[again["release_id"]] = expected[release_b["release_id"]]
                assert recommender.reload()
                time.sleep(0.05)
        except Exception as exc:  # noqa: BLE001
            errors.append(f"operator: {exc!r}")
        finally:
            done.set()

    threads = [threading.Thread(target=serve, args=(w,)) for w in range(8)] + [threading.Thread(target=operate)]
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=300)
    finally:
        sys.setswitchinterval(switch)
    print(f"\nanswers by release: {served}")
    assert errors == [] and wrong == []
    assert sum(served.values()) >= 8 * 200 and len(served) >= 3  # A, B and at least one re-release were served


KILLED_PUBLISHER = textwrap.dedent("""
    import sys
    from pathlib import Path
    sys.path.insert(0, sys.argv[2])
    from rec_core.generation.synthetic import GeneratorConfig, generate_dataset
    from rec_core.release import publish_release
    from tests.test_release import build_versions, stage
    root = Path(sys.argv[1])
    user_ids, by_name = build_versions(generate_dataset(GeneratorConfig(n_users=300, n_items=800, n_interactions=15_000,
                                                                        seed=7)))  # conftest's small_dataset
    print("ready", flush=True)
    step = 0
    while True:
        stage(root, by_name["AB"[step % 2]], user_ids)
        publish_release(root, keep=2)
        step += 1
""")


def test_sigkill_while_publishing_keeps_a_servable_release(root, versions):
    user_ids, by_name = versions
    stage(root, by_name["A"], user_ids)
    first = releases.publish_release(root)
    expected = _answers(root, first, user_ids[:30])
    seen = set()
    for attempt in range(4):
        process = subprocess.Popen(
            [sys.executable, "-c", KILLED_PUBLISHER, str(root), str(REPO)], stdout=subprocess.PIPE, cwd=REPO
        )
        assert process.stdout.readline().strip() == b"ready"
        time.sleep(1.0 + 0.7 * attempt)
        process.send_signal(signal.SIGKILL)
        process.wait()
        current = releases.current_release(root)
        seen.add(current["release_id"])
        recommender = Recommender.load(root)  # whatever is current is complete and servable
        assert recommender.release["release_id"] == current["release_id"]
        if current["release_id"] == first["release_id"]:
            assert {u: answer(recommender.recommend(u, k=K)) for u in user_ids[:30]} == expected
    stage(root, by_name["B"], user_ids)
    clean = releases.publish_release(root, keep=2)  # a rerun publishes cleanly after the kills
    assert Recommender.load(root).release["release_id"] == clean["release_id"]
    named = {p for m in releases.list_releases(root) for p in m["artifacts"].values()}
    stored = {str(p.relative_to(root)) for p in (root / "releases" / "store").glob("*/*") if not p.name.startswith(".")}
    assert stored == named
    print(f"\nreleases seen after kills: {len(seen)}")


def test_cli_lists_and_rolls_back(root, versions):
    user_ids, by_name = versions
    ids = []
    for name in "AB":
        stage(root, by_name[name], user_ids)
        ids.append(releases.publish_release(root)["release_id"])

    def run(*args):
        return subprocess.run(
            [sys.executable, "-m", "rec_core.release", "--root", str(root), *args],
            capture_output=True,
            text=True,
            cwd=REPO,
        )

    listed = run("list")
    assert listed.returncode == 0 and f"* {ids[1]}" in listed.stdout and f"  {ids[0]}" in listed.stdout
    back = run("rollback")
    assert back.returncode == 0 and ids[0] in back.stdout
    assert releases.current_release(root)["release_id"] == ids[0]
    refused = run("rollback")
    assert refused.returncode == 1 and "oldest kept release" in refused.stderr
    assert run("rollback", ids[1]).returncode == 0 and releases.current_release(root)["release_id"] == ids[1]


def test_feature_store_vectors_of_another_model_are_not_scored(root, versions, tmp_path_factory, caplog):
    """Online vectors carry their model version; a vector of another model than the release's is
    replaced by the release's own vector for that user, and the fallback is logged."""
    from rec_core import feature_store as fs

    user_ids, by_name = versions
    stage(root, by_name["A"], user_ids)
    releases.publish_release(root)
    store = fs.load_feature_store(profile="sqlite", data_dir=tmp_path_factory.mktemp("feast"))
    fs.apply_definitions(store, fs.load_definitions(None, str(root)))
    snapshot = pd.Timestamp.now(tz="UTC").to_pydatetime()

    def push(version: Version):
        table = read_parquet(root / "user_embeddings.parquet").to_pandas()
        table["embedding"] = list(version.user_vectors)
        table["model_version"] = version.model
        fs.push_latest(
            store, {"user_tower_embeddings": fs.feast_source_frame("user_tower_embeddings", table, snapshot)}
        )

    source = fs.FeastFeatureSource(store)
    push(by_name["A"])
    assert source.user_vector(user_ids[0])[1] == "model-A"
    served = Recommender.load(root, feature_source=source)
    caplog.clear()  # the publishing above may have logged (at INFO, when a Dagster test left rec_core at INFO)

    def warnings():
        return [record for record in caplog.records if record.levelno >= logging.WARNING]

    with caplog.at_level(logging.WARNING, logger="rec_core.serving.features"):
        from_feast = {u: answer(served.recommend(u, k=K)) for u in user_ids[:20]}
        assert not warnings()
        push(by_name["B"])  # a later run pushed vectors of a model that was never released
        assert np.allclose(source.user_vector(user_ids[0])[0], by_name["B"].user_vectors[0])
        assert {u: answer(served.recommend(u, k=K)) for u in user_ids[:20]} == from_feast
    assert len(warnings()) == 20 and "model-B" in warnings()[0].getMessage()
    assert "the release's vector" in warnings()[0].getMessage()


def test_manifest_is_one_json_file_naming_every_served_artifact(root, versions):
    user_ids, by_name = versions
    stage(root, by_name["A"], user_ids)
    manifest = releases.publish_release(root, code_versions={"two_tower_model": "1"}, details={"gate": {"x": 1.0}})
    on_disk = json.loads((root / "releases" / "current.json").read_text())
    assert {k: on_disk[k] for k in manifest} == manifest
    assert set(manifest["artifacts"]) == {
        "items",
        "users",
        "interactions",
        "user_embeddings",
        "item_embeddings",
        "item_index",
    }
    assert manifest["index_build_id"] in manifest["artifacts"]["item_index"]
    assert manifest["details"] == {"gate": {"x": 1.0}}
