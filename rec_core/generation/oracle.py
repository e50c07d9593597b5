"""The synthetic data's ground truth: every user's true affinity to every item.

`generate_dataset` samples interactions from these scores, so ranking by them is the best any
model could do on that data: evaluation reports it as the upper reference (the oracle).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from safetensors.numpy import load as load_safetensors
from safetensors.numpy import save_file

from rec_core.data.paths import ORACLE_ARRAYS, ORACLE_IDS
from rec_core.storage import as_path, atomic_file, write_bytes


@dataclass
class OracleScorer:
    """The generator's true affinity: `score(user_ids, item_ids)` -> [n_users, n_items]."""

    user_ids: np.ndarray  # [U] str
    item_ids: np.ndarray  # [I] str
    user_factors: np.ndarray  # [U, F]
    item_factors: np.ndarray  # [I, F]
    user_pref: np.ndarray  # [U, M] stated (w_pref) and hidden (w_hidden) bonuses per mid category
    item_mid: np.ndarray  # [I] mid-category index
    item_bias: np.ndarray  # [I] popularity + quality + recency part of the score
    user_price_sens: np.ndarray  # [U]
    item_log_price: np.ndarray  # [I]
    _user_index: pd.Index = field(default=None, repr=False)
    _item_index: pd.Index = field(default=None, repr=False)
    _user_aug: np.ndarray = field(default=None, repr=False)
    _item_aug: np.ndarray = field(default=None, repr=False)
    _item_mean: np.ndarray = field(default=None, repr=False)
    _item_second: np.ndarray = field(default=None, repr=False)

    def __post_init__(self):
        self._user_index = pd.Index(self.user_ids)
        self._item_index = pd.Index(self.item_ids)
        # The whole score is one inner product of augmented vectors:
        # user [factors, pref bonus per mid, -price sensitivity, 1] . item [factors, one-hot mid, log price, bias]
        n_mid = self.user_pref.shape[1]
        self._user_aug = np.hstack(
            [
                self.user_factors,
                self.user_pref,
                -self.user_price_sens[:, None],
                np.ones((len(self.user_ids), 1), np.float32),
            ]
        ).astype(np.float32)
        self._item_aug = np.hstack(
            [
                self.item_factors,
                np.eye(n_mid, dtype=np.float32)[self.item_mid],
                self.item_log_price[:, None],
                self.item_bias[:, None],
            ]
        ).astype(np.float32)
        # First and second moments of item vectors give each user's score mean and spread cheaply.
        self._item_mean = self._item_aug.mean(0)
        self._item_second = (self._item_aug.T @ self._item_aug) / len(self.item_ids)

    def score_rows(self, rows: np.ndarray) -> np.ndarray:
        """Scores of users at positions `rows` against every item: [len(rows), I] float32."""
        return self._user_aug[rows] @ self._item_aug.T  # [B, I]

    def score_pairs(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Scores of (user position, item position) pairs: [n] float32."""
        return np.einsum("nd,nd->n", self._user_aug[rows], self._item_aug[cols])

    def score_moments(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Mean and standard deviation of each user's scores over the catalog, without scoring it."""
        u = self._user_aug[rows]
        mean = u @ self._item_mean
        second = np.einsum("bd,de,be->b", u, self._item_second, u)
        return mean, np.sqrt(np.maximum(second - mean**2, 1e-12))

    def score(self, user_ids, item_ids=None) -> np.ndarray:
        rows = self._positions(self._user_index, user_ids, "user")
        scores = self.score_rows(rows)
        if item_ids is None:
            return scores
        return scores[:, self._positions(self._item_index, item_ids, "item")]

    @staticmethod
    def _positions(index: pd.Index, ids, kind: str) -> np.ndarray:
        positions = index.get_indexer(np.asarray(ids, dtype=object))
        if (positions < 0).any():
            raise KeyError(
                f"{int((positions < 0).sum())} unknown {kind} id(s), e.g. {np.asarray(ids)[positions < 0][0]!r}"
            )
        return positions

    def save(self, directory: str | Path) -> None:
        """Writes `oracle.safetensors` (arrays) and `oracle.json` (ids) atomically."""
        directory = as_path(directory)
        arrays = {
            k: np.ascontiguousarray(getattr(self, k))
            for k in (
                "user_factors",
                "item_factors",
                "user_pref",
                "item_mid",
                "item_bias",
                "user_price_sens",
                "item_log_price",
            )
        }
        with atomic_file(directory / ORACLE_ARRAYS) as tmp:
            save_file(arrays, str(tmp))
        write_bytes(
            json.dumps({"user_ids": self.user_ids.tolist(), "item_ids": self.item_ids.tolist()}).encode(),
            directory / ORACLE_IDS,
        )

    @classmethod
    def load(cls, directory: str | Path) -> OracleScorer:
        directory = as_path(directory)
        ids = json.loads((directory / ORACLE_IDS).read_text())
        arrays = load_safetensors(bytes((directory / ORACLE_ARRAYS).read_bytes()))
        return cls(user_ids=np.array(ids["user_ids"]), item_ids=np.array(ids["item_ids"]), **arrays)
