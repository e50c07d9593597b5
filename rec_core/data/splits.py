"""Per-user train / validation / test splits of interactions.

`time` (default) holds out each user's most recent interactions, as a deployed model meets
them; `random` holds out a seeded random share per user, the protocol of most published
MovieLens numbers. Users with fewer than `min_interactions` interactions stay in train.

`cold-items` measures what a model does with items it never saw: a seeded share of the items
(`cold_item_fraction`, 10% by default) is cold and every interaction with them goes to test;
the other interactions are split per user exactly as `random` does. `cold_item_ids` names the
cold items again from the same inputs, so evaluation can rank among them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

SPLIT_METHODS = ("time", "random", "cold-items")
COLD_ITEM_FRACTION = 0.1
"""Share of the interacted items the `cold-items` split holds out by default."""


def split_interactions(
    interactions: pd.DataFrame,
    method: str = "time",
    seed: int = 0,
    test_fraction: float = 0.2,
    validation_fraction: float = 0.1,
    min_interactions: int = 3,
    cold_item_fraction: float = COLD_ITEM_FRACTION,
) -> pd.DataFrame:
    """Returns `interactions` with a `split` column: train, validation or test.

    Per user with n >= min_interactions: round(n * test_fraction) (at least 1) go to test and
    round(n * validation_fraction) (at least 1 when the fraction is positive) to validation;
    the rest is train. With `cold-items` this applies to each user's warm-item interactions.
    """
    if method not in SPLIT_METHODS:
        raise ValueError(f"unknown split method '{method}': use one of {SPLIT_METHODS}")
    if not (0 < test_fraction < 1 and 0 <= validation_fraction < 1 and test_fraction + validation_fraction < 1):
        raise ValueError("fractions must satisfy 0 < test, 0 <= validation, test + validation < 1")
    frame = interactions.reset_index(drop=True)
    if method == "cold-items":
        cold = frame["item_id"].astype(str).isin(cold_item_ids(frame, cold_item_fraction, seed)).to_numpy()
        warm = split_interactions(frame[~cold], "random", seed, test_fraction, validation_fraction, min_interactions)
        result = frame.copy()
        result["split"] = "test"
        result.loc[~cold, "split"] = warm["split"].to_numpy()  # the recursive call keeps row order
        return result
    if method == "time":
        order_key = pd.to_datetime(frame["timestamp"], utc=True).astype("int64").to_numpy()
    else:
        order_key = np.random.default_rng(seed).permutation(len(frame))
    user_codes = pd.factorize(frame["user_id"])[0]
    order = _user_order(frame["interaction_id"].to_numpy(), order_key, user_codes)
    sorted_users = user_codes[order]
    counts = np.bincount(user_codes)
    n = counts[sorted_users]
    # Position from the end of each user's sequence: 0 is the latest (or last shuffled).
    first = np.concatenate([[0], np.cumsum(counts)[:-1]])
    from_end = n - 1 - (np.arange(len(order)) - first[sorted_users])
    n_test = np.maximum(1, np.round(n * test_fraction)).astype(int)
    n_val = np.where(validation_fraction > 0, np.maximum(1, np.round(n * validation_fraction)), 0).astype(int)
    eligible = n >= min_interactions
    split = np.full(len(order), "train", dtype=object)
    split[eligible & (from_end < n_test)] = "test"
    split[eligible & (from_end >= n_test) & (from_end < n_test + n_val)] = "validation"
    result = frame.copy()
    result.loc[order, "split"] = split
    return result


def _user_order(interaction_ids: np.ndarray, order_key: np.ndarray, user_codes: np.ndarray) -> np.ndarray:
    """Row order by user, then `order_key`, then interaction id as a string (a user's interactions at the same
    time). Only tied rows need their ids compared, so only theirs are ranked: no string array of every id."""
    order = np.lexsort((order_key, user_codes))
    sorted_users, sorted_keys = user_codes[order], order_key[order]
    same_as_next = (sorted_users[1:] == sorted_users[:-1]) & (sorted_keys[1:] == sorted_keys[:-1])
    tied = np.zeros(len(order), bool)
    tied[1:] |= same_as_next
    tied[:-1] |= same_as_next
    if not tied.any():
        return order
    id_rank = np.zeros(len(order), np.int64)
    rows = order[tied]
    id_rank[rows] = pc.rank(pa.array(interaction_ids[rows].astype(str)), tiebreaker="dense").to_numpy()
    return np.lexsort((id_rank, order_key, user_codes))


def cold_item_ids(interactions: pd.DataFrame, fraction: float = COLD_ITEM_FRACTION, seed: int = 0) -> list[str]:
    """The items the `cold-items` split holds out: round(fraction * items interacted with), at least 1, seeded.

    Drawn from the sorted distinct item ids, so the choice depends on the data and the seed only,
    not on row order.
    """
    if not 0 < fraction < 1:
        raise ValueError(f"cold_item_fraction must be within (0, 1), got {fraction}")
    items = np.sort(interactions["item_id"].astype(str).unique())
    n_cold = max(1, round(fraction * len(items)))
    chosen = np.random.default_rng(seed).choice(len(items), n_cold, replace=False)
    return sorted(items[chosen].tolist())
