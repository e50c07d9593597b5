"""The item index: FAISS inner-product search over item vectors, saved with its id mapping.

Why two kinds: an exact `IndexFlatIP` is perfect and fast enough for small catalogs, but its
cost grows linearly with the catalog; beyond `IndexConfig.exact_max_items` an inverted-file index
(`IndexIVFFlat`: k-means cells, each query scans only its `nprobe` nearest cells) answers in tens
of microseconds. IVF rather than a graph (HNSW) for two reasons. The offline top-k for every user
is a batch, and an IVF scan regroups by cell into matrix products (`search_batch`), which a graph
walk cannot. And a query's candidates (its cells) do not depend on how many results it asks for,
so over-fetching more, or searching only the rows that pass the filters, never reorders what an
unfiltered search found: one user gets the same list from `search`, `search_batch` and
`search_allowed`. About sqrt(n) cells of about sqrt(n) items: fewer, larger cells made the
batched products cheaper (measured at 100k items: ~2x the batch throughput of 4*sqrt(n) cells)
at the same single-query latency.

`nprobe` is tuned when the index is built: the smallest value whose recall@k against exact
search, on sample queries (user vectors when given), reaches `IndexConfig.target_recall`. The
chosen nprobe and the recall measured at it go into the build report, so nobody has to take the
approximation on trust.

On disk an index is a directory: `index.faiss` (the serialized FAISS index), `item_ids.json`
(FAISS row -> item id), `item_vectors.safetensors` (the vectors, for exact fallbacks and item
lookups) and `build_report.json`. It is written through `storage.publish_files`, so a serving
process loading it sees either the complete old index or the complete new one.

The batched scan behind `search_batch` lives in `rec_core.cell_scan`.
"""

from __future__ import annotations

import functools
import json
import math
import os
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, fields

import faiss
import numpy as np
from safetensors.numpy import load as load_safetensors
from safetensors.numpy import save as save_safetensors
from threadpoolctl import threadpool_limits

from rec_core.cell_scan import CellScanner, faiss_threads
from rec_core.data.paths import IDS_FILE, INDEX_FILE, REPORT_FILE, VECTORS_FILE
from rec_core.storage import as_path, publish_files

SWAP_RETRY_S = 0.05  # pause before looking again for files missing while a new version is swapped in


ExcludedPairs = tuple[np.ndarray, np.ndarray]
"""(query positions [m], catalog rows [m]): pairs a batched search skips."""

BATCH_CHUNK = 8192
"""Queries per task in `search_batch`: bounds the memory of one scan (queries gathered per probed cell)."""

NPROBE_LADDER = (
    1,
    2,
    3,
    4,
    5,
    6,
    7,
    8,
    10,
    12,
    14,
    16,
    20,
    24,
    28,
    32,
    40,
    48,
    56,
    64,
    80,
    96,
    112,
    128,
    160,
    192,
    224,
    256,
    320,
    384,
    448,
    512,
    640,
    768,
    896,
    1024,
)
"""nprobe values tried at build time, smallest first. Each is at most 1.25x the last, so the chosen
value scans at most a quarter more cells than the target needs (every query pays for that
overshoot; a try is one batched search of the sample queries, paid once)."""


@dataclass
class IndexConfig:
    # catalogs up to this size get an exact IndexFlatIP; larger ones IVF. Top-50 for 20k users (64 dims, 2 shared
    # cores): exact 1.8 s at 20k items and 8.3 s at 50k; IVF, build and nprobe tuning included, 1.8 s and 3.1 s
    # at recall@10 0.97 and 0.95 against exact. Exact search costs users x items, IVF about users x sqrt(items).
    exact_max_items: int = 20_000
    lists_per_sqrt_item: float = 1.0  # IVF cells = this * sqrt(n_items): 316 cells of ~316 items at 100k
    target_recall: float = 0.95  # nprobe is the smallest reaching this recall@k against exact search
    max_nprobe: int = 256  # tuning stops here even if the target is not met (the report then says so)
    recall_k: int = 10  # recall@k measured against exact search at build time
    recall_queries: int = 500  # sample queries for tuning and measuring
    seed: int = 0  # k-means initialisation and sampling of recall queries


@dataclass
class IndexBuildReport:
    """What was built and how good it is; stored as `build_report.json` and shown as asset metadata."""

    index_type: str  # "flat_ip" (exact) or "ivf_flat_ip" (approximate)
    n_items: int
    dim: int
    recall_at_k: float  # mean |approx top-k ∩ exact top-k| / k at the chosen nprobe; 1.0 for the exact index
    recall_k: int
    recall_queries: int  # 0 when the index is exact (nothing to measure)
    build_seconds: float  # training, adding and nprobe tuning
    n_lists: int = 0  # IVF cells (0: exact)
    nprobe: int = 0  # cells scanned per query, as tuned (0: exact)
    recall_by_nprobe: dict = field(default_factory=dict)  # every nprobe tried -> its recall@k
    build_id: str = field(default_factory=lambda: uuid.uuid4().hex)  # tells one saved version from the next


class ItemIndex:
    """Top-k inner-product search over item vectors; rows are positions in `item_ids`."""

    def __init__(
        self,
        item_ids: list[str],
        vectors: np.ndarray,
        index: faiss.Index,
        report: IndexBuildReport,
        config: IndexConfig,
    ):
        self.item_ids = list(item_ids)
        self.vectors = vectors  # [n_items, dim] float32
        self.index = index
        self.report = report
        self.config = config
        self.position_of = {item_id: row for row, item_id in enumerate(self.item_ids)}

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def __len__(self) -> int:
        return len(self.item_ids)

    @property
    def is_exact(self) -> bool:
        return not isinstance(self.index, faiss.IndexIVF)

    # ---- building -----------------------------------------------------------------------
    @classmethod
    def build(
        cls,
        item_ids: list[str],
        vectors: np.ndarray,
        config: IndexConfig | None = None,
        recall_queries: np.ndarray | None = None,
    ) -> ItemIndex:
        """Indexes `vectors` ([n, dim], one row per id) and measures recall against exact search.

        `recall_queries` ([q, dim], e.g. user embeddings) are the queries recall is measured on;
        by default a sample of the item vectors themselves.
        """
        config = config or IndexConfig()
        item_ids = [str(i) for i in item_ids]
        vectors = _validated_vectors(item_ids, vectors)
        started = time.perf_counter()
        n, dim = vectors.shape
        if n <= config.exact_max_items:
            index = faiss.IndexFlatIP(dim)
            index.add(vectors)
            report = IndexBuildReport("flat_ip", n, dim, 1.0, config.recall_k, 0, time.perf_counter() - started)
            return cls(item_ids, vectors, index, report, config)
        n_lists = max(
            1, min(n // 39, round(config.lists_per_sqrt_item * math.sqrt(n)))
        )  # k-means wants >= 39 points per cell
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, n_lists, faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = config.seed
        with faiss_threads(os.cpu_count() or 1):
            index.train(vectors)
            index.add(vectors)
        built = cls(
            item_ids,
            vectors,
            index,
            IndexBuildReport("ivf_flat_ip", n, dim, float("nan"), config.recall_k, 0, 0.0, n_lists),
            config,
        )
        built._tune_nprobe(_recall_queries(vectors, recall_queries, config))
        built.report.build_seconds = time.perf_counter() - started
        return built

    def _tune_nprobe(self, queries: np.ndarray) -> None:
        """Sets nprobe to the smallest ladder value whose recall@k on `queries` reaches the target."""
        k = min(self.config.recall_k, len(self))
        truth = self._exact_top(queries, k)
        n_lists = self.index.nlist
        tried: dict[str, float] = {}
        for nprobe in [p for p in NPROBE_LADDER if p < min(n_lists, self.config.max_nprobe)] + [
            min(n_lists, self.config.max_nprobe)
        ]:
            self.index.nprobe = nprobe
            tried[str(nprobe)] = _recall(truth, self.search_batch(queries, k)[1])
            if tried[str(nprobe)] >= self.config.target_recall:
                break
        self.report.nprobe = int(self.index.nprobe)
        self.report.recall_at_k = tried[str(self.index.nprobe)]
        self.report.recall_queries = len(queries)
        self.report.recall_by_nprobe = tried

    def recall_against_exact(self, queries: np.ndarray, k: int) -> float:
        """Mean recall@k of this index's answers against an exact scan, over `queries` [q, dim]."""
        k = min(k, len(self))
        queries = np.ascontiguousarray(queries, dtype=np.float32).reshape(-1, self.dim)
        return _recall(self._exact_top(queries, k), self.search_batch(queries, k)[1])

    def _exact_top(self, queries: np.ndarray, k: int) -> np.ndarray:
        """[q, k] rows of the exact top-k (one scan of the stored vectors, all cores)."""
        exact = faiss.IndexFlatIP(self.dim)
        exact.add(self.vectors)
        with faiss_threads(os.cpu_count() or 1):
            return exact.search(queries, k)[1]

    # ---- searching ----------------------------------------------------------------------
    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k rows per query: (scores [q, k] float32, rows [q, k] int64, -1 where the probed cells run out).

        Runs on the FAISS threads the caller set (one, for a server answering a request per core).
        """
        queries = np.ascontiguousarray(queries, dtype=np.float32).reshape(-1, self.dim)
        k = max(1, min(int(k), len(self)))
        return self.index.search(queries, k)

    def search_batch(
        self,
        queries: np.ndarray,
        k: int,
        threads: int | None = None,
        allowed: np.ndarray | None = None,
        excluded: ExcludedPairs | Callable[[], ExcludedPairs] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """`search` for many queries at once, on `threads` threads (default: every core), with filters.

        Returns each query's top-k among its candidates (the probed cells; the whole catalog when
        exact) that are `allowed` ([n_items] bool, default all) and not `excluded` for it
        (`(query positions [m], rows [m])` pairs, e.g. what each user already bought), as
        (scores [q, k], rows [q, k]), -1 rows where the candidates run out. Unfiltered, the
        answers are `search`'s (scores can differ in the last float bit: BLAS sums). `excluded`
        may be a function returning the pairs: it is called on this thread while FAISS assigns
        the queries to cells on another, so preparing the pairs costs no extra time.

        Why not FAISS's own batched search: for IVF it still scans each query's cells one vector
        at a time, so a batch costs about as much per query as single requests. Here the scan is
        regrouped by cell: the queries probing a cell are scored against its vectors with one
        matrix product, whose rows go straight into per-query FAISS heaps; filtered-out items are
        dropped from the cells before the products and excluded pairs set to -inf in them, so no
        over-fetching is needed. Thread counts (FAISS's and BLAS's) are process-wide, so this is
        for offline batches, not for a server thread while others answer requests.
        """
        queries = np.ascontiguousarray(queries, dtype=np.float32).reshape(-1, self.dim)
        k = max(1, min(int(k), len(self)))
        threads = max(1, threads or os.cpu_count() or 1)
        scores = np.empty((len(queries), k), dtype=np.float32)
        rows = np.empty((len(queries), k), dtype=np.int64)
        # one BLAS thread per worker: the per-cell products are small, and nested pools oversubscribe the cores
        with threadpool_limits(limits=1, user_api="blas"), ThreadPoolExecutor(threads) as pool:
            assigned = pool.submit(self._probes, queries, threads)  # FAISS releases the GIL for the whole call
            cells = self._cells if allowed is None else self._cells.restricted(np.asarray(allowed, dtype=bool))
            pairs = excluded() if callable(excluded) else excluded
            ex_queries, ex_rows = (np.asarray(a, np.int64) for a in (pairs or (np.empty(0), np.empty(0))))
            by_query = np.argsort(ex_queries, kind="stable")
            ex_queries, ex_rows = ex_queries[by_query], ex_rows[by_query]
            probes = assigned.result()  # [q, nprobe]
            for start in range(0, len(queries), BATCH_CHUNK):
                chunk = slice(start, start + BATCH_CHUNK)
                lo, hi = np.searchsorted(ex_queries, (start, start + len(probes[chunk])))
                scores[chunk], rows[chunk] = cells.top_k(
                    queries[chunk], probes[chunk], k, ex_queries[lo:hi] - start, ex_rows[lo:hi], pool, threads
                )
        return scores, rows

    def _probes(self, queries: np.ndarray, threads: int) -> np.ndarray:
        """[q, nprobe] cells each query scans, nearest first (one cell, the whole catalog, when exact)."""
        if self.is_exact:
            return np.zeros((len(queries), 1), np.int64)
        with faiss_threads(threads):
            return self.index.quantizer.search(queries, self.index.nprobe)[1]  # one matrix product

    def exact_scores(self, query: np.ndarray) -> np.ndarray:
        """Exact inner products [n_items] of one query [dim] with every item vector.

        FAISS's SIMD kernel on one thread: numpy's BLAS matvec spins up its thread pool per call,
        which on a busy machine costs several times the arithmetic.
        """
        query = np.ascontiguousarray(query, dtype=np.float32).reshape(self.dim)
        scores = np.empty(len(self), dtype=np.float32)
        faiss.fvec_inner_products_ny(
            faiss.swig_ptr(scores), faiss.swig_ptr(query), faiss.swig_ptr(self.vectors), self.dim, len(self)
        )
        return scores

    def search_allowed(self, query: np.ndarray, allowed: np.ndarray, k: int) -> list[tuple[int, float]]:
        """Top-k (row, score) among rows where `allowed` [n_items] is True, best first.

        IVF scans its probed cells for allowed rows only (a FAISS bitmap selector), which keeps a
        heavily filtered request near normal cost and returns what an unfiltered search would once
        the disallowed rows are dropped; when that finds fewer than k, or the index is exact, every
        allowed row is scored exactly, so a short answer means fewer than k are allowed.
        """
        k = max(1, min(int(k), len(self)))
        query = np.ascontiguousarray(query, dtype=np.float32).reshape(1, self.dim)
        if not self.is_exact:
            bitmap = np.packbits(allowed, bitorder="little")
            selector = faiss.IDSelectorBitmap(len(self), faiss.swig_ptr(bitmap))
            params = faiss.SearchParametersIVF(sel=selector, nprobe=self.index.nprobe)
            scores, rows = self.index.search(query, k, params=params)
            found = rows[0] >= 0
            if found.sum() >= k:
                return list(zip(rows[0][found].tolist(), scores[0][found].tolist()))
        scores = self.exact_scores(query[0])
        masked = np.where(allowed, scores, -np.inf)  # [n_items]
        rows = np.argpartition(masked, len(masked) - k)[-k:] if len(masked) > k else np.arange(len(masked))
        rows = rows[np.isfinite(masked[rows])]
        rows = rows[np.lexsort((rows, -masked[rows]))]  # best first, ties by row
        return [(int(r), float(scores[r])) for r in rows]

    @functools.cached_property
    def _cells(self) -> CellScanner:
        return CellScanner.of(self.index, self.vectors)

    # ---- persistence --------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> None:
        """Writes the index directory; readers never see a half-written one (see module docs)."""
        files = {
            INDEX_FILE: faiss.serialize_index(self.index).tobytes(),
            IDS_FILE: json.dumps(self.item_ids).encode(),
            VECTORS_FILE: save_safetensors({"vectors": self.vectors}),
            REPORT_FILE: json.dumps({**asdict(self.report), "config": asdict(self.config)}, indent=2).encode(),
        }
        publish_files(path, files)  # the report goes last: on object storage its presence marks completion

    @classmethod
    def load(cls, path: str | os.PathLike, attempts: int = 3) -> ItemIndex:
        """Reads an index directory; if a new version is swapped in while reading, reads again.

        The build report is read before and after the other files: the same `build_id` both
        times means every file came from one version. A local swap moves the old directory
        aside before renaming the new one in, so for an instant there is no index at `path`:
        missing files are looked for again after a short pause before being reported.
        """
        directory = as_path(path)
        for attempt in range(attempts):
            try:
                before = json.loads((directory / REPORT_FILE).read_text())
                index = faiss.deserialize_index(np.frombuffer((directory / INDEX_FILE).read_bytes(), dtype=np.uint8))
                item_ids = json.loads((directory / IDS_FILE).read_text())
                vectors = load_safetensors((directory / VECTORS_FILE).read_bytes())["vectors"]
                after = json.loads((directory / REPORT_FILE).read_text())
            except FileNotFoundError:
                missing = [n for n in (INDEX_FILE, IDS_FILE, VECTORS_FILE, REPORT_FILE) if not (directory / n).exists()]
                if missing and attempt < attempts - 1:
                    time.sleep(SWAP_RETRY_S * (attempt + 1))  # a swap in progress: the new version is being renamed in
                    continue
                if missing:
                    raise FileNotFoundError(
                        f"{path}: not a complete item index (missing {', '.join(missing)}); "
                        "materialize the item_index asset"
                    ) from None
                continue  # the old version was removed mid-read: read the new one
            if before.get("build_id") != after.get("build_id"):
                continue
            if index.ntotal != len(item_ids) or len(vectors) != len(item_ids):
                raise ValueError(
                    f"{path}: index has {index.ntotal} rows, {len(item_ids)} ids and {len(vectors)} vectors"
                )
            known = {f.name for f in fields(IndexConfig)}
            config = IndexConfig(**{key: value for key, value in after.pop("config").items() if key in known})
            if isinstance(index, faiss.IndexIVF):
                index.nprobe = int(after["nprobe"])  # the tuned value, whatever the serialized index holds
            return cls(item_ids, vectors, index, IndexBuildReport(**after), config)
        raise RuntimeError(f"{path}: the index kept changing while being read ({attempts} attempts)")


def _validated_vectors(item_ids: list[str], vectors: np.ndarray) -> np.ndarray:
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or len(vectors) != len(item_ids):
        raise ValueError(f"item vectors: expected shape [{len(item_ids)}, dim], got {list(vectors.shape)}")
    if len(item_ids) == 0:
        raise ValueError("item vectors: the catalog is empty; there is nothing to index")
    bad = int((~np.isfinite(vectors).all(axis=1)).sum())
    if bad:
        raise ValueError(f"item vectors: {bad} row(s) contain NaN or infinite values")
    duplicates = len(item_ids) - len(set(item_ids))
    if duplicates:
        raise ValueError(f"item ids: {duplicates} duplicate id(s); every indexed item needs a unique id")
    return vectors


def _recall_queries(vectors: np.ndarray, queries: np.ndarray | None, config: IndexConfig) -> np.ndarray:
    rng = np.random.default_rng(config.seed)
    if queries is None or len(queries) == 0:
        queries = vectors
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    take = rng.choice(len(queries), size=min(config.recall_queries, len(queries)), replace=False)
    return queries[np.sort(take)]


def _recall(truth: np.ndarray, found: np.ndarray) -> float:
    """Mean |found ∩ truth| / k over queries; truth and found are [q, k] rows (-1 = none found)."""
    k = truth.shape[1]
    hits = [len(np.intersect1d(t, f[f >= 0])) for t, f in zip(truth, found)]
    return float(np.mean(hits) / k) if hits else 1.0
