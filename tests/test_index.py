"""The FAISS item index: exact vs IVF choice, nprobe tuning, recall measurement, persistence and atomic replace."""

import json
from pathlib import Path

import numpy as np
import pytest

from rec_core.index import REPORT_FILE, IndexConfig, ItemIndex


def clustered_vectors(n: int, dim: int = 16, clusters: int = 20, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim))
    vectors = centres[rng.integers(0, clusters, n)] + 0.6 * rng.normal(size=(n, dim))
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def ids(n: int) -> list[str]:
    return [f"I{i:06d}" for i in range(n)]


def test_small_catalog_gets_exact_index_with_true_top_k():
    vectors = clustered_vectors(500)
    index = ItemIndex.build(ids(500), vectors, IndexConfig(exact_max_items=1000))
    assert index.report.index_type == "flat_ip" and index.is_exact
    scores, rows = index.search(vectors[:3], 5)
    expected = np.argsort(-(vectors[:3] @ vectors.T), axis=1)[:, :5]
    np.testing.assert_array_equal(rows, expected)
    np.testing.assert_allclose(scores[:, 0], 1.0, atol=1e-5)  # each vector is its own best match


def test_exact_scores_are_all_inner_products():
    vectors = clustered_vectors(400)
    index = ItemIndex.build(ids(400), vectors)
    np.testing.assert_allclose(index.exact_scores(vectors[5]), vectors @ vectors[5], rtol=1e-5, atol=1e-6)


def test_large_catalog_gets_ivf_with_tuned_nprobe_and_measured_recall(tmp_path):
    vectors = clustered_vectors(3000)
    config = IndexConfig(exact_max_items=1000, target_recall=0.9, recall_queries=200)
    index = ItemIndex.build(ids(3000), vectors, config)
    report = index.report
    assert report.index_type == "ivf_flat_ip" and not index.is_exact
    assert report.n_lists == round(np.sqrt(3000)) and report.recall_queries == 200
    # nprobe is the smallest tried value reaching the target; every smaller one fell short
    assert report.recall_at_k >= 0.9 and report.recall_by_nprobe[str(report.nprobe)] == report.recall_at_k
    assert all(r < 0.9 for p, r in report.recall_by_nprobe.items() if int(p) < report.nprobe)
    assert report.nprobe < report.n_lists  # the target was met without scanning everything
    # the recorded recall is the measured one: recomputing on the same queries agrees
    rng = np.random.default_rng(config.seed)
    queries = vectors[np.sort(rng.choice(3000, 200, replace=False))]
    assert index.recall_against_exact(queries, 10) == pytest.approx(report.recall_at_k)
    # scanning every cell is exact
    index.index.nprobe = report.n_lists
    assert index.recall_against_exact(queries, 10) == pytest.approx(1.0)
    index.index.nprobe = report.nprobe
    index.save(tmp_path / "ivf")
    loaded = ItemIndex.load(tmp_path / "ivf")
    assert (
        not loaded.is_exact and loaded.index.nprobe == report.nprobe and loaded.report.recall_at_k == report.recall_at_k
    )
    np.testing.assert_array_equal(loaded.search(queries[:5], 10)[1], index.search(queries[:5], 10)[1])


def test_batched_search_equals_one_query_at_a_time():
    vectors = clustered_vectors(3000)
    index = ItemIndex.build(ids(3000), vectors, IndexConfig(exact_max_items=1000, recall_queries=100))
    queries = clustered_vectors(50, seed=3)
    scores, rows = index.search_batch(queries, 40, threads=2)
    for q in range(len(queries)):
        single_scores, single_rows = index.search(queries[q], 40)
        np.testing.assert_allclose(single_scores[0], scores[q], rtol=1e-5)
        # same rows in the same order, except swaps of scores equal up to float rounding (BLAS vs SIMD sums)
        moved = np.flatnonzero(single_rows[0] != rows[q])
        assert set(single_rows[0][moved]) == set(rows[q][moved])
        assert all(min(abs(scores[q][i] - scores[q][j]) for j in (i - 1, i + 1) if 0 <= j < 40) < 1e-5 for i in moved)


@pytest.mark.parametrize("exact_max_items", [5000, 1000])  # exact, then IVF
def test_filtered_batched_search_is_the_best_allowed_of_the_probed_cells(exact_max_items):
    vectors = clustered_vectors(3000)
    index = ItemIndex.build(ids(3000), vectors, IndexConfig(exact_max_items=exact_max_items, recall_queries=100))
    queries = clustered_vectors(40, seed=4)
    rng = np.random.default_rng(1)
    allowed = rng.random(3000) < 0.7
    truth_rows = np.argsort(-(queries @ vectors.T), axis=1)
    # each query excludes 3 of its 5 best rows and 20 random ones; query 0 excludes nothing
    pairs = [(q, int(r)) for q in range(1, 40) for r in [*truth_rows[q, [0, 2, 4]], *rng.choice(3000, 20)]]
    excluded = (np.array([q for q, _ in pairs]), np.array([r for _, r in pairs]))
    scores, rows = index.search_batch(queries, 10, threads=2, allowed=allowed, excluded=excluded)
    probed = np.ones((40, 3000), bool)
    if not index.is_exact:
        _, probes = index.index.quantizer.search(queries, index.index.nprobe)
        probed = np.stack([np.isin(index._cells.cell_of_row, cells) for cells in probes])
    for q in range(40):
        candidates = allowed & probed[q]
        candidates[[r for p, r in pairs if p == q]] = False
        expected = np.flatnonzero(candidates)[np.argsort(-(vectors[candidates] @ queries[q]), kind="stable")[:10]]
        assert set(rows[q].tolist()) == set(expected.tolist())
        np.testing.assert_allclose(scores[q], np.sort(vectors[expected] @ queries[q])[::-1], rtol=1e-5)


def test_filtered_batched_search_pads_when_the_allowed_candidates_run_out():
    vectors = clustered_vectors(3000)
    index = ItemIndex.build(ids(3000), vectors, IndexConfig(exact_max_items=1000, recall_queries=100))
    allowed = np.zeros(3000, bool)
    allowed[[5, 77, 2999]] = True
    scores, rows = index.search_batch(vectors[[5, 77]], 4, allowed=allowed, excluded=(np.array([1]), np.array([77])))
    for q in range(2):
        found = rows[q][rows[q] >= 0]
        assert set(found) <= {5, 77, 2999} - ({77} if q == 1 else set())  # only allowed, never the excluded pair
        assert (rows[q][len(found) :] == -1).all() and len(found) < 4
    assert rows[0][0] == 5  # a vector is its own best match


def test_recall_is_measured_on_given_queries():
    vectors = clustered_vectors(2000)
    users = clustered_vectors(100, seed=5)
    index = ItemIndex.build(
        ids(2000), vectors, IndexConfig(exact_max_items=10, recall_queries=50), recall_queries=users
    )
    assert index.report.recall_queries == 50


def test_save_load_round_trip_and_atomic_replace(tmp_path, monkeypatch):
    vectors = clustered_vectors(300)
    target = tmp_path / "item_index"
    ItemIndex.build(ids(300), vectors).save(target)
    loaded = ItemIndex.load(target)
    assert loaded.item_ids == ids(300) and loaded.position_of["I000007"] == 7
    np.testing.assert_array_equal(
        loaded.search(vectors[:2], 4)[1], ItemIndex.build(ids(300), vectors).search(vectors[:2], 4)[1]
    )
    report = json.loads((target / REPORT_FILE).read_text())
    assert report["index_type"] == "flat_ip" and report["n_items"] == 300

    # a rebuild that fails half-way through writing leaves the previous index whole, and no debris
    real_write = Path.write_bytes
    calls = []

    def fail_on_second_file(self, data):
        calls.append(self.name)
        if len(calls) == 2:
            raise OSError("disk full")
        return real_write(self, data)

    monkeypatch.setattr(Path, "write_bytes", fail_on_second_file)
    with pytest.raises(OSError, match="disk full"):
        ItemIndex.build(ids(10), clustered_vectors(10)).save(target)
    monkeypatch.setattr(Path, "write_bytes", real_write)
    assert len(ItemIndex.load(target)) == 300
    assert sorted(p.name for p in tmp_path.iterdir()) == ["item_index"]
    ItemIndex.build(ids(10), clustered_vectors(10)).save(target)
    assert len(ItemIndex.load(target)) == 10


def test_incomplete_directory_is_refused(tmp_path):
    ItemIndex.build(ids(20), clustered_vectors(20)).save(tmp_path / "idx")
    (tmp_path / "idx" / REPORT_FILE).unlink()
    with pytest.raises(FileNotFoundError, match="not a complete item index"):
        ItemIndex.load(tmp_path / "idx")


@pytest.mark.parametrize(
    "item_ids, vectors, message",
    [
        (ids(3), np.zeros((2, 4), np.float32), "expected shape"),
        (["a", "a"], np.ones((2, 4), np.float32), "duplicate"),
        (ids(2), np.array([[1, np.nan], [0, 1]], np.float32), "NaN"),
        ([], np.zeros((0, 4), np.float32), "empty"),
    ],
)
def test_bad_vectors_are_refused(item_ids, vectors, message):
    with pytest.raises(ValueError, match=message):
        ItemIndex.build(item_ids, vectors)


def test_k_larger_than_catalog_is_clipped():
    index = ItemIndex.build(ids(5), clustered_vectors(5))
    scores, rows = index.search(clustered_vectors(1, seed=3), 50)
    assert rows.shape == (1, 5) and sorted(rows[0].tolist()) == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("exact_max_items", [10_000, 10])  # flat, then IVF
def test_search_allowed_returns_best_allowed_rows(exact_max_items):
    vectors = clustered_vectors(2000)
    index = ItemIndex.build(ids(2000), vectors, IndexConfig(exact_max_items=exact_max_items))
    query = vectors[0]
    truth = np.argsort(-(vectors @ query), kind="stable")
    allowed = np.ones(2000, bool)
    allowed[truth[:50]] = False  # the 50 nearest are filtered out
    found = index.search_allowed(query, allowed, 10)
    assert len(found) == 10 and all(allowed[row] for row, _ in found)
    candidates = allowed.copy()
    if not index.is_exact:  # IVF: the best allowed rows of the cells the query probes
        _, probes = index.index.quantizer.search(query[None], index.index.nprobe)
        candidates &= np.isin(index._cells.cell_of_row, probes[0])
    expected = np.flatnonzero(candidates)[np.argsort(-(vectors[candidates] @ query), kind="stable")[:10]]
    assert sorted(row for row, _ in found) == sorted(expected.tolist())
    scores = [score for _, score in found]
    assert scores == sorted(scores, reverse=True)
    # only 3 rows allowed: all 3 come back (the exact scan guarantees completeness), best first
    few = np.zeros(2000, bool)
    few[[1500, 7, 999]] = True
    rows = [row for row, _ in index.search_allowed(query, few, 10)]
    assert sorted(rows) == [7, 999, 1500] and rows == sorted(rows, key=lambda r: -float(vectors[r] @ query))


def test_load_rereads_when_a_new_version_is_swapped_in_mid_read(tmp_path, monkeypatch):
    from rec_core import index as index_module

    target = tmp_path / "item_index"
    ItemIndex.build(ids(30), clustered_vectors(30)).save(target)
    newer = ItemIndex.build(ids(40), clustered_vectors(40, seed=1))
    real_deserialize = index_module.faiss.deserialize_index
    calls = []

    def deserialize_then_swap(data):
        calls.append(1)
        if len(calls) == 1:
            newer.save(target)  # a materialization replaces the index while this reader is mid-way
        return real_deserialize(data)

    monkeypatch.setattr(index_module.faiss, "deserialize_index", deserialize_then_swap)
    loaded = ItemIndex.load(target)
    assert len(calls) == 2  # the mixed read was noticed and repeated
    assert len(loaded) == 40 and loaded.report.build_id == newer.report.build_id
