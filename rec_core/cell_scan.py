"""The batched top-k scan behind `ItemIndex.search_batch`: item vectors grouped by cell, each cell scored with
one matrix product per batch of queries, the products fed straight into FAISS heaps.

Why regroup by cell rather than call FAISS's batched search is explained in `ItemIndex.search_batch`;
this module holds the scan itself, so `rec_core.index` keeps the index's building, single-query
search and storage.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import faiss
import numpy as np

BLOCK_SCORES = 1 << 20
"""Scores per matrix product in a scan (4 MiB): an exact index's one cell is split into blocks of queries."""


class CellScanner:
    """Item vectors grouped in cells, each scanned with one matrix product per batch of queries.

    The cells are an IVF index's, or one cell holding the whole catalog for an exact index. Their
    rows are listed back to back in cell order (`rows`; cell c is `offsets[c]:offsets[c+1]`), so
    `restricted` filters every cell with one mask. The vectors stay the index's own (catalog
    order): an IVF cell's are gathered when it is scanned, so gathers run on the scanning threads
    instead of as one serial copy up front, and no second copy of the catalog is kept.
    """

    def __init__(
        self,
        rows: np.ndarray,
        vectors: np.ndarray,
        offsets: np.ndarray,
        n_items: int,
        positions: np.ndarray | None = None,
    ):
        self.rows = rows  # [m] int64 catalog rows, cell after cell
        self.vectors = vectors  # [n, dim] float32: the vectors `positions` point into
        self.positions = (
            positions  # [m] int64: the row of `vectors` of each of `rows`; None: `vectors` is in that order
        )
        self.offsets = offsets  # [n_cells + 1] int64: where each cell starts in `rows`
        sizes = np.diff(offsets)
        self.cell_of_row = np.full(n_items, -1, np.int64)  # [n_items]: -1 for rows in no cell (filtered out)
        self.cell_of_row[rows] = np.repeat(np.arange(len(sizes)), sizes)
        self.column_of_row = np.full(n_items, -1, np.int64)  # [n_items]: position within its cell
        self.column_of_row[rows] = np.arange(len(rows)) - np.repeat(offsets[:-1], sizes)

    @classmethod
    def of(cls, index: faiss.Index, vectors: np.ndarray) -> CellScanner:
        if not isinstance(index, faiss.IndexIVF):
            return cls(np.arange(len(vectors), dtype=np.int64), vectors, np.array([0, len(vectors)]), len(vectors))
        invlists = index.invlists
        sizes = [invlists.list_size(cell) for cell in range(index.nlist)]
        rows = np.concatenate(
            [
                faiss.rev_swig_ptr(invlists.get_ids(cell), size) if size else np.empty(0, np.int64)
                for cell, size in enumerate(sizes)
            ]
        ).astype(np.int64)
        return cls(rows, vectors, np.r_[0, np.cumsum(sizes)], len(vectors), positions=rows)

    def restricted(self, allowed: np.ndarray) -> CellScanner:
        """The same cells holding only the rows where `allowed` [n_items] is True."""
        keep = allowed[self.rows]
        positions = np.flatnonzero(keep) if self.positions is None else self.positions[keep]
        return CellScanner(
            self.rows[keep], self.vectors, np.r_[0, np.cumsum(keep)][self.offsets], len(allowed), positions
        )

    def cell_vectors(self, first: int, last: int) -> np.ndarray:
        """[last - first, dim] vectors of `rows[first:last]` (a view of an exact index's, else a gather)."""
        if self.positions is None:
            return self.vectors[first:last]
        return self.vectors[self.positions[first:last]]

    def top_k(
        self,
        queries: np.ndarray,
        probes: np.ndarray,
        k: int,
        ex_queries: np.ndarray,
        ex_rows: np.ndarray,
        pool: ThreadPoolExecutor,
        threads: int,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Each query's top-k (scores [q, k], rows [q, k], best first) over its probed cells [q, nprobe],
        without the (query, row) pairs in `ex_queries`/`ex_rows`.

        The (query, cell) pairs are grouped by cell, so each cell is one matrix product with all
        the queries probing it, fed whole to FAISS heaps (a compare per score, in C++). The cells
        are shared out among `threads` workers of `pool` by work, each with its own heaps, merged
        at the end; the products and heaps run without the GIL. An excluded pair is found among
        its query's probes and set to -inf in its cell's product.
        """
        q, nprobe = probes.shape
        flat = probes.reshape(-1)  # [q * nprobe]: pair p is query p // nprobe, its (p % nprobe)-th nearest cell
        by_cell = np.argsort(
            flat.astype(np.uint16) if len(self.offsets) <= 1 << 16 else flat, kind="stable"
        )  # radix sort
        slot_of_pair = np.empty_like(by_cell)
        slot_of_pair[by_cell] = np.arange(len(by_cell))  # pairs grouped by cell, queries ascending within one
        query_of = by_cell // nprobe  # [q * nprobe] int64, the query of each slot
        ex_cells = self.cell_of_row[ex_rows]  # [m], -1 for rows filtered out
        ex_probe = probes[ex_queries] == ex_cells[:, None]  # [m, nprobe]
        probed = ex_probe.any(axis=1) & (ex_cells >= 0)  # excluded pairs whose cell the query scans
        ex_slots = slot_of_pair[ex_queries[probed] * nprobe + ex_probe[probed].argmax(axis=1)]
        order = np.argsort(ex_slots, kind="stable")
        ex_slots, ex_columns = ex_slots[order], self.column_of_row[ex_rows[probed]][order]
        cells = flat[by_cell]
        starts = np.flatnonzero(np.r_[True, cells[1:] != cells[:-1]])
        stops = np.r_[starts[1:], len(cells)]
        cell = cells[starts]
        starts, stops, cell = starts[cell >= 0], stops[cell >= 0], cell[cell >= 0]
        firsts, lasts = self.offsets[cell], self.offsets[cell + 1]
        # a big cell (an exact index's only one) is scanned in blocks of queries, bounding a product's memory
        step = np.maximum(1, BLOCK_SCORES // np.maximum(1, lasts - firsts))
        blocks = [
            (a, min(a + s, stop), first, last)
            for start, stop, first, last, s in zip(
                starts.tolist(), stops.tolist(), firsts.tolist(), lasts.tolist(), step.tolist()
            )
            if last > first
            for a in range(start, stop, s)
        ]
        bounds = np.searchsorted(ex_slots, [b[0] for b in blocks] + [len(cells)]).tolist()
        work = np.cumsum([(b - a) * (last - first) for a, b, first, last in blocks])
        cuts = (
            [0, *np.searchsorted(work, work[-1] * np.arange(1, threads) / threads).tolist(), len(blocks)]
            if blocks
            else [0, 0]
        )

        def scan(part: range) -> tuple[np.ndarray, np.ndarray]:
            scores = np.empty((q, k), dtype=np.float32)
            rows = np.empty((q, k), dtype=np.int64)
            heaps = _heaps(scores, rows)  # the k largest inner products per query
            vectors, gathered = None, -1
            for i in part:
                a, b, first, last = blocks[i]
                if first != gathered:  # a cell split into several blocks is gathered once
                    vectors, gathered = self.cell_vectors(first, last), first
                block = queries[query_of[a:b]] @ vectors.T  # [b - a, cell size]
                lo, hi = bounds[i], bounds[i + 1]
                if hi > lo:
                    block[ex_slots[lo:hi] - a, ex_columns[lo:hi]] = -np.inf
                heaps.addn_query_subset_with_ids(
                    b - a,
                    faiss.swig_ptr(query_of[a:b]),
                    last - first,
                    faiss.swig_ptr(block),
                    faiss.swig_ptr(self.rows[first:last]),
                    0,
                )
            return scores, rows

        with faiss_threads(1):
            parts = list(pool.map(scan, [range(a, b) for a, b in zip(cuts[:-1], cuts[1:])]))
        scores, rows = parts[0]
        heaps = _heaps(scores, rows, fresh=False)
        for other_scores, other_rows in parts[1:]:
            heaps.addn_with_ids(k, faiss.swig_ptr(other_scores), faiss.swig_ptr(other_rows), k, 0, q)
        heaps.reorder()
        return scores, rows


def _heaps(scores: np.ndarray, rows: np.ndarray, fresh: bool = True) -> faiss.float_minheap_array_t:
    """FAISS min-heaps over `scores`/`rows` [q, k] (one per row), emptied first when `fresh`."""
    heaps = faiss.float_minheap_array_t()
    heaps.nh, heaps.k = scores.shape
    heaps.val, heaps.ids = faiss.swig_ptr(scores), faiss.swig_ptr(rows)
    if fresh:
        heaps.heapify()
    return heaps


@contextmanager
def faiss_threads(threads: int):
    """FAISS's OpenMP thread count set to `threads` for a block, then restored (it is process-wide)."""
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(threads)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)
