"""`Recommender` under concurrent load while new item indexes are published and swapped in.

The artifact root holds the small synthetic catalog with two versions of the served vectors:
version "A" (exact index) and version "B" (an IVF index, items in another row order), each a
user-embeddings table and an item index, published in the pipeline's order (user embeddings, then the index) through the
atomic writers. Every user's answer under each version is computed beforehand, one request at
a time; under load each response must equal its own user's answer under one of the versions.
The 600 expected lists are all distinct, so a response holding another user's results (or half
of one version and half of the other) cannot pass. Latencies are printed, never asserted.
"""

import dataclasses
import multiprocessing
import os
import shutil
import sys
import threading
import time
import uuid

import numpy as np
import pytest

from rec_core.index import IndexConfig, ItemIndex
from rec_core.serving import Recommender, vector_table
from rec_core.storage import write_parquet

DIM = 16
K = 10
THREADS, REQUESTS_PER_THREAD, SWAPS = 8, 200, 6
PROCESSES, REQUESTS_PER_PROCESS = 3, 200


@dataclasses.dataclass
class Version:
    name: str
    user_vectors: np.ndarray  # [n_users, DIM]
    index: ItemIndex


def _unit(rng, n):
    vectors = rng.normal(size=(n, DIM)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def publish(root, version: Version, user_ids) -> str:
    """Writes one version as the pipeline does (user embeddings, then the index), with a fresh build id."""
    write_parquet(vector_table("user_id", user_ids, version.user_vectors), root / "user_embeddings.parquet")
    index = version.index
    report = dataclasses.replace(index.report, build_id=uuid.uuid4().hex)
    ItemIndex(index.item_ids, index.vectors, index.index, report, index.config).save(root / "item_index")
    return report.build_id


def answer(result):
    """A response as comparable data: ids and scores (rounded: IVF and exact kernels differ in the last bit)."""
    return tuple((item.item_id, round(item.score, 4)) for item in result)


@pytest.fixture(scope="module")
def load_root(tmp_path_factory, small_dataset):
    """(root, user ids, versions by name, expected answers: version name -> user id -> answer); A published."""
    root = tmp_path_factory.mktemp("load_artifacts")
    for name in ("users", "items", "interactions"):
        write_parquet(getattr(small_dataset, name), root / f"{name}.parquet")
    user_ids = small_dataset.users["user_id"].tolist()
    item_ids = small_dataset.items["item_id"].tolist()
    rng = np.random.default_rng(0)
    user_a, item_a = _unit(rng, len(user_ids)), _unit(rng, len(item_ids))
    user_b, item_b = _unit(rng, len(user_ids)), _unit(rng, len(item_ids))
    order = rng.permutation(len(item_ids))  # B's rows in another order: a row read against the wrong version shows
    ivf = ItemIndex.build(
        [item_ids[i] for i in order],
        item_b[order],
        IndexConfig(exact_max_items=100, target_recall=0.9, recall_queries=200),
        recall_queries=user_b,
    )
    assert not ivf.is_exact
    versions = {"A": Version("A", user_a, ItemIndex.build(item_ids, item_a)), "B": Version("B", user_b, ivf)}
    expected = {}
    for name in ("B", "A"):  # A stays published
        publish(root, versions[name], user_ids)
        recommender = Recommender.load(root)
        expected[name] = {user_id: answer(recommender.recommend(user_id, k=K)) for user_id in user_ids}
    all_answers = [a for by_user in expected.values() for a in by_user.values()]
    assert len(set(all_answers)) == len(all_answers) == 2 * len(user_ids)  # no two (user, version) answers alike
    assert all(len(a) == K for a in all_answers)
    return root, user_ids, versions, expected


def _p50_p99(latencies_ms: np.ndarray) -> str:
    return "{:.2f}/{:.2f}".format(*np.percentile(latencies_ms, [50, 99])) if len(latencies_ms) else "-"


def version_of(expected, user_id, response):
    """The version whose answer for `user_id` the response is, or None (wrong user, mixed or corrupt)."""
    return next((name for name, by_user in expected.items() if by_user[user_id] == response), None)


def test_threads_serving_through_index_swaps(load_root):
    """8 threads x >= 200 requests over all users while another thread republishes and reloads 6 times."""
    root, user_ids, versions, expected = load_root
    recommender = Recommender.load(root)
    errors, mixups, spans, served, swap_spans = [], [], [], {"A": 0, "B": 0}, []  # spans: (start, end) seconds
    lock = threading.Lock()
    swaps_done = threading.Event()

    def serve(worker: int):
        rng = np.random.default_rng(worker)
        done, mine, seen = 0, [], {"A": 0, "B": 0}
        while done < REQUESTS_PER_THREAD or not swaps_done.is_set():  # keep serving until every swap happened
            user_id = user_ids[int(rng.integers(len(user_ids)))]
            started = time.perf_counter()
            try:
                response = answer(recommender.recommend(user_id, k=K))
            except Exception as exc:  # noqa: BLE001 - any failure is what this test counts
                with lock:
                    errors.append(f"{user_id}: {exc!r}")
                continue
            finally:
                mine.append((started, time.perf_counter()))
                done += 1
            name = version_of(expected, user_id, response)
            if name is None:
                with lock:
                    mixups.append(user_id)
            else:
                seen[name] += 1
            if done >= REQUESTS_PER_THREAD:
                time.sleep(0.001)  # past its quota a worker only keeps requests in flight during the swaps
        with lock:
            spans.extend(mine)
            for name, count in seen.items():
                served[name] += count

    def republish():
        try:
            for swap in range(SWAPS):
                started = time.perf_counter()
                publish(root, versions["B" if swap % 2 == 0 else "A"], user_ids)
                assert recommender.reload()
                swap_spans.append((started, time.perf_counter()))
                time.sleep(0.02)  # let requests run on each version
        except Exception as exc:  # noqa: BLE001
            errors.append(f"republish: {exc!r}")
        finally:
            swaps_done.set()

    workers = [threading.Thread(target=serve, args=(w,)) for w in range(THREADS)]
    publisher = threading.Thread(target=republish)
    switch_interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # threads interleave every ~1 us instead of 5 ms, so races get their chance
    try:
        for thread in workers + [publisher]:
            thread.start()
        for thread in [publisher] + workers:
            thread.join(timeout=120)
    finally:
        sys.setswitchinterval(switch_interval)
    assert not any(thread.is_alive() for thread in workers + [publisher])
    latencies = np.array([end - start for start, end in spans]) * 1e3  # ms
    during_swap = np.array([any(start < t1 and end > t0 for t0, t1 in swap_spans) for start, end in spans])
    print(
        f"\nthreads: {THREADS} x >={REQUESTS_PER_THREAD} requests = {len(spans)} requests, {SWAPS} swaps, "
        f"errors {len(errors)}, mix-ups {len(mixups)}, answers by version {served}, latency ms p50/p99: "
        f"all {_p50_p99(latencies)}, overlapping a publish+reload ({during_swap.sum()}) {_p50_p99(latencies[during_swap])}, "
        f"others {_p50_p99(latencies[~during_swap])}"
    )
    assert errors == [] and mixups == []
    assert len(spans) >= THREADS * REQUESTS_PER_THREAD and sum(served.values()) == len(spans)
    assert served["A"] > 0 and served["B"] > 0  # requests really were answered on both sides of the swaps
    # the last swap published A: every user now gets A's answer, and a reload with nothing new is a no-op
    assert recommender.build_id == recommender.published_build_id()
    assert all(answer(recommender.recommend(u, k=K)) == expected["A"][u] for u in user_ids)
    assert recommender.reload() is False


def _serve_in_process(root, user_ids, expected, worker, ready, published, results):
    """A separate serving process: loads the root, answers half its requests, says so, keeps serving and
    polling `reload` every 25 requests until the new version arrives, then answers the other half."""
    try:
        recommender = Recommender.load(root)
        rng = np.random.default_rng(100 + worker)
        errors, mixups, latencies, served, after_swap = [], 0, [], {"A": 0, "B": 0}, 0
        half, swapped, deadline = REQUESTS_PER_PROCESS // 2, False, time.monotonic() + 60
        while after_swap < half and time.monotonic() < deadline:
            if len(latencies) == half:
                ready.put(worker)
            if not swapped and len(latencies) % 25 == 0 and published.is_set():
                swapped = recommender.reload()
            user_id = user_ids[int(rng.integers(len(user_ids)))]
            started = time.perf_counter()
            try:
                response = answer(recommender.recommend(user_id, k=K))
            except Exception as exc:  # noqa: BLE001 - any failure is what this test counts
                errors.append(f"{user_id}: {exc!r}")
                response = None
            latencies.append(time.perf_counter() - started)
            after_swap += swapped
            name = version_of(expected, user_id, response) if response is not None else None
            if name is None:
                mixups += response is not None
            else:
                served[name] += 1
        results.put(
            {
                "worker": worker,
                "errors": errors,
                "mixups": mixups,
                "latencies": latencies,
                "served": served,
                "after_swap": after_swap,
            }
        )
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which fails the test
        results.put(
            {
                "worker": worker,
                "errors": [f"process: {exc!r}"],
                "mixups": 0,
                "latencies": [],
                "served": {},
                "after_swap": 0,
            }
        )


def test_processes_serving_through_an_index_swap(load_root):
    """3 spawned processes, each with its own Recommender on the same root, serve while B replaces A
    (published by this process while they answer requests)."""
    root, user_ids, versions, expected = load_root
    publish(root, versions["A"], user_ids)
    context = multiprocessing.get_context("spawn")
    ready, results, published = context.Queue(), context.Queue(), context.Event()
    processes = [
        context.Process(
            target=_serve_in_process, args=(str(root), user_ids, expected, worker, ready, published, results)
        )
        for worker in range(PROCESSES)
    ]
    for process in processes:
        process.start()
    try:
        for _ in processes:  # every process is half way through its requests, on A
            ready.get(timeout=90)
        publish(root, versions["B"], user_ids)
        published.set()
        reports = [results.get(timeout=90) for _ in processes]
    finally:
        for process in processes:
            process.join(timeout=30)
            if process.is_alive():
                process.kill()
    latencies = np.concatenate([r["latencies"] for r in reports])
    errors = [e for r in reports for e in r["errors"]]
    mixups = sum(r["mixups"] for r in reports)
    print(
        f"\nprocesses: {PROCESSES} x >={REQUESTS_PER_PROCESS} requests = {len(latencies)} requests, "
        f"1 reload each, "
        f"errors {len(errors)}, mix-ups {mixups}, answers by version {[r['served'] for r in reports]}, "
        f"latency ms p50/p99 {_p50_p99(latencies * 1e3)}"
    )
    assert errors == [] and mixups == 0
    for report in reports:  # A answered every request before the reload, B every one after it
        assert report["after_swap"] == REQUESTS_PER_PROCESS // 2 == report["served"]["B"]
        assert report["served"]["A"] >= REQUESTS_PER_PROCESS // 2
        assert sum(report["served"].values()) == len(report["latencies"]) >= REQUESTS_PER_PROCESS


def test_failed_reload_keeps_serving_the_old_version(tmp_path, load_root):
    """A version that cannot be served (an index not matching the item table, user embeddings from
    another model) is refused by `reload`; requests keep getting the old answers meanwhile."""
    source, user_ids, versions, expected = load_root
    root = tmp_path / "root"
    shutil.copytree(source, root)
    publish(root, versions["A"], user_ids)
    recommender = Recommender.load(root)
    stale = versions["B"].index
    ItemIndex.build(["NOT_IN_ITEMS"] + stale.item_ids[1:], stale.vectors).save(root / "item_index")
    with pytest.raises(ValueError, match="not in the items table"):
        recommender.reload()
    assert all(answer(recommender.recommend(u, k=K)) == expected["A"][u] for u in user_ids[:50])
    other_model = np.ones((len(user_ids), DIM + 8), np.float32)
    write_parquet(vector_table("user_id", user_ids, other_model), root / "user_embeddings.parquet")
    stale.save(root / "item_index")
    with pytest.raises(ValueError, match="24 dimensions but the item index has 16"):
        recommender.reload()
    assert all(answer(recommender.recommend(u, k=K)) == expected["A"][u] for u in user_ids[:50])
    publish(root, versions["B"], user_ids)  # the next good version is picked up
    assert recommender.reload()
    assert all(answer(recommender.recommend(u, k=K)) == expected["B"][u] for u in user_ids[:50])


def test_index_load_waits_out_the_instant_of_a_swap(load_root, tmp_path):
    """A local swap moves the old directory aside before renaming the new one in; a load in between
    finds no directory and must look again rather than fail."""
    source = load_root[0] / "item_index"
    target, aside = tmp_path / "item_index", tmp_path / ".item_index.old"
    shutil.copytree(source, aside)
    renamer = threading.Timer(0.03, os.replace, args=(aside, target))  # the new version arrives 30 ms later
    renamer.start()
    try:
        loaded = ItemIndex.load(target)
    finally:
        renamer.join()
    assert loaded.item_ids == ItemIndex.load(source).item_ids


def test_reload_without_an_artifact_root_is_a_clear_error(load_root, small_dataset):
    index = load_root[2]["A"].index
    recommender = Recommender(small_dataset.items, index, Recommender.load(load_root[0]).feature_source)
    with pytest.raises(ValueError, match="not loaded from an artifact root"):
        recommender.reload()
