"""Synthetic e-commerce data with a known ground truth.

Users have latent tastes (stated and hidden category preferences, latent factors, price
sensitivity); items have latent attributes (factors near their category's, popularity,
quality, price). Each interaction's item is drawn from the exact affinity model

    P(item | user) ∝ exp(score(user, item))
    score = w_latent·<u, v> + w_pref·[item's mid category is stated] + w_hidden·[... is a hidden taste]
            + w_pop·popularity + w_quality·quality − sensitivity·log(price) + w_new·recency

and a share of exposures is drawn from popularity alone (these become mostly negative views).
Interaction type and rating follow the affinity. `OracleScorer` exposes `score` for evaluation:
no learned model can beat it in expectation, so it bounds what a model can reach.

Generation is vectorized over chunks of users, so memory stays bounded (one chunk x catalog
score matrix at a time) and 1M interactions over 10k users x 50k items take a few seconds.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from rec_core.data.paths import exported_table_file, image_link
from rec_core.data.validation import conform
from rec_core.generation.catalog import BRANDS, TAXONOMY, USES, category_tree, display_name, leaves
from rec_core.generation.oracle import OracleScorer
from rec_core.storage import write_bytes, write_parquet

START = pd.Timestamp("2024-01-01", tz="UTC")
END = pd.Timestamp("2026-01-01", tz="UTC")
DAY_S = 86_400.0


@dataclass
class GeneratorConfig:
    n_users: int = 2_000
    n_items: int = 5_000
    n_interactions: int = 100_000
    seed: int = 0
    n_factors: int = 16  # latent dimensions of tastes and attributes
    w_latent: float = 2.5  # weight of the latent-factor match
    w_pref: float = 2.0  # bonus for an item in a stated preference
    w_hidden: float = 1.5  # bonus for an item in a hidden (unstated) taste
    w_pop: float = 0.8  # weight of item popularity
    w_quality: float = 0.4  # weight of item quality
    w_new: float = 0.5  # boost for recently arrived items
    exposure_share: float = 0.12  # share of interactions drawn from popularity alone (exposures)
    min_per_user: int = 3  # every user gets at least this many interactions
    chunk_users: int = 256  # users scored at once (bounds memory: chunk x n_items floats)

    def __post_init__(self):
        for name in ("n_users", "n_items", "n_interactions"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.n_interactions < self.min_per_user * self.n_users:
            raise ValueError(
                f"n_interactions ({self.n_interactions}) must be at least min_per_user x n_users "
                f"({self.min_per_user * self.n_users})"
            )


@dataclass
class SyntheticDataset:
    users: pd.DataFrame
    items: pd.DataFrame
    interactions: pd.DataFrame
    oracle: OracleScorer
    category_tree: dict
    config: GeneratorConfig

    def save(self, directory: str | Path) -> None:
        """Writes the three tables, the category tree, the oracle and the config."""
        directory = Path(directory)
        for name, frame, kind in (
            ("users", self.users, "users"),
            ("items", self.items, "items"),
            ("interactions", self.interactions, "interactions"),
        ):
            write_parquet(conform(frame, kind, f"generated {name}"), directory / exported_table_file(name))
        write_bytes(json.dumps(self.category_tree, indent=2).encode(), directory / "category_tree.json")
        write_bytes(json.dumps(asdict(self.config), indent=2).encode(), directory / "generator_config.json")
        self.oracle.save(directory)


def _ids(prefix: str, n: int) -> np.ndarray:
    """Zero-padded ids such as U000001, built in Arrow's string kernels (fast at millions of rows)."""
    width = max(6, len(str(n)))
    digits = pc.utf8_lpad(pa.array(np.arange(1, n + 1)).cast(pa.string()), width=width, padding="0")
    return pc.binary_join_element_wise(prefix, digits, "").to_numpy(zero_copy_only=False)


def _timestamps(seconds: np.ndarray) -> pd.DatetimeIndex:
    micros = START.value // 1_000 + (seconds * 1e6).astype(np.int64)
    return pd.to_datetime(micros, unit="us", utc=True)


def _make_items(cfg: GeneratorConfig, rng: np.random.Generator):
    leaf_list = leaves()
    mids = sorted({(t, m) for t, m, _ in leaf_list})
    mid_index = {m: i for i, (_, m) in enumerate(mids)}
    n_leaf = len(leaf_list)
    F = cfg.n_factors
    # Category structure in latent space: mid centroids, leaves near them, items near leaves.
    mid_centroids = rng.normal(size=(len(mids), F))
    leaf_mid = np.array([mid_index[m] for _, m, _ in leaf_list])
    leaf_centroids = mid_centroids[leaf_mid] + 0.6 * rng.normal(size=(n_leaf, F))
    leaf_weight = rng.dirichlet(np.full(n_leaf, 3.0))
    item_leaf = rng.choice(n_leaf, size=cfg.n_items, p=leaf_weight)
    item_factors = leaf_centroids[item_leaf] + 0.6 * rng.normal(size=(cfg.n_items, F))
    item_factors /= np.sqrt(F)

    popularity = rng.normal(size=cfg.n_items)
    quality = rng.normal(size=cfg.n_items)
    base_price = np.array([TAXONOMY[t][m][leaf][2] for t, m, leaf in leaf_list])[item_leaf]
    actual_price = np.round(base_price * rng.lognormal(0.0, 0.35, cfg.n_items), 0) - 0.01
    actual_price = np.maximum(actual_price, 0.99)
    discount = rng.choice([0, 0, 0, 5, 10, 15, 20, 25, 30, 40, 50], size=cfg.n_items).astype(float)
    discounted = np.round(actual_price * (1 - discount / 100), 2)
    rating_count = rng.poisson(np.exp(2.5 + 0.9 * popularity))
    rating = np.round(np.clip(3.9 + 0.45 * quality + 0.2 * rng.normal(size=cfg.n_items), 1.0, 5.0), 1)
    arrival_s = rng.uniform(-365 * DAY_S, (END - START).total_seconds() - 30 * DAY_S, cfg.n_items)
    recency = np.exp(-((END - START).total_seconds() - arrival_s) / (180 * DAY_S))

    # Text from the leaf's vocabulary, so names and descriptions say what the item is.
    item_ids = _ids("I", cfg.n_items)
    brand = rng.integers(len(BRANDS), size=cfg.n_items)
    noun_pick = rng.integers(1 << 30, size=cfg.n_items)
    adj_pick = rng.integers(1 << 30, size=(cfg.n_items, 2))
    use_pick = rng.integers(len(USES), size=cfg.n_items)
    model_no = rng.integers(100, 999, size=cfg.n_items)
    names, abouts, categories = [], [], []
    for i in range(cfg.n_items):
        top, mid, leaf = leaf_list[item_leaf[i]]
        nouns, adjs, _ = TAXONOMY[top][mid][leaf]
        noun = nouns[noun_pick[i] % len(nouns)]
        fitting = [a for a in adjs if a.lower() not in noun.lower()]
        a1 = fitting[adj_pick[i, 0] % len(fitting)]
        a2 = fitting[(adj_pick[i, 0] + 1 + adj_pick[i, 1] % (len(fitting) - 1)) % len(fitting)]
        names.append(f"{BRANDS[brand[i]]} {a1} {noun} {model_no[i]}")
        abouts.append(
            f"{a1} and {a2.lower()} {noun.lower()} from {BRANDS[brand[i]]}. "
            f"Part of our {display_name(mid)} range in {display_name(top)}, made for {USES[use_pick[i]]}."
        )
        categories.append(f"{top}|{mid}|{leaf}")
    items = pd.DataFrame(
        {
            "item_id": item_ids,
            "product_name": names,
            "category": categories,
            "actual_price": actual_price,
            "discounted_price": discounted,
            "discount_percentage": discount,
            "rating": np.where(rating_count > 0, rating, np.nan),
            "rating_count": rating_count.astype(np.int64),
            "about_product": abouts,
            "arrival_date": _timestamps(arrival_s),
            "img_link": [image_link(i) for i in item_ids],
        }
    )
    item_mid = leaf_mid[item_leaf]
    bias = cfg.w_pop * popularity + cfg.w_quality * quality + cfg.w_new * recency
    log_price = np.log1p(discounted)
    log_price = (log_price - log_price.mean()) / (log_price.std() + 1e-9)
    return items, item_factors, item_mid, bias, log_price, arrival_s, mid_centroids, mids, popularity


def _make_users(cfg: GeneratorConfig, rng: np.random.Generator, mid_centroids: np.ndarray, mids: list):
    n_mid = len(mids)
    F = cfg.n_factors
    n_pref = rng.choice([1, 2, 3], size=cfg.n_users, p=[0.35, 0.45, 0.2])
    # Stated tastes follow a skewed interest distribution; one hidden taste is never stated.
    interest = rng.dirichlet(np.full(n_mid, 2.0))
    order = np.argsort(rng.random((cfg.n_users, n_mid)) ** (1.0 / interest[None, :]), axis=1)[:, ::-1]
    stated = np.zeros((cfg.n_users, n_mid), dtype=bool)
    ranks = np.arange(n_mid)[None, :]
    np.put_along_axis(stated, order, ranks < n_pref[:, None], axis=1)
    hidden = np.zeros_like(stated)
    np.put_along_axis(hidden, order, ranks == n_pref[:, None], axis=1)
    hidden &= rng.random(cfg.n_users)[:, None] < 0.6
    pref_bonus = (cfg.w_pref * stated + cfg.w_hidden * hidden).astype(np.float32)
    taste = (stated | hidden).astype(float)
    user_factors = (taste @ mid_centroids) / taste.sum(1, keepdims=True) + 0.7 * rng.normal(size=(cfg.n_users, F))
    user_factors = cfg.w_latent * user_factors / np.sqrt(F)
    price_sens = np.clip(rng.normal(0.3, 0.25, cfg.n_users), 0.0, None)

    mid_names = np.array([m for _, m in mids], dtype=object)
    preferences = ["|".join(mid_names[row]) for row in stated]
    signup_s = rng.uniform(0, (END - START).total_seconds() - 60 * DAY_S, cfg.n_users)
    age = np.clip(rng.normal(38, 13, cfg.n_users), 16, 90).astype(np.int32)
    gender = rng.choice(np.array(["F", "M", "X"], dtype=object), size=cfg.n_users, p=[0.48, 0.48, 0.04])
    users = pd.DataFrame(
        {
            "user_id": _ids("U", cfg.n_users),
            "signup_date": _timestamps(signup_s),
            "preferences": preferences,
            "age": age,
            "gender": gender,
        }
    )
    return users, user_factors, pref_bonus, price_sens, signup_s


SAMPLE_BLOCK = 64  # items per block in two-level sampling


def _sample_rows(weights: np.ndarray, counts: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Draws counts[r] items with probability proportional to weights[r]: (row index, item index).

    Two-level inverse-CDF sampling, exact: pick a block of SAMPLE_BLOCK items from the block
    sums, then an item inside the block. This avoids a cumulative sum over the whole
    [rows, catalog] matrix; only the drawn blocks are summed item by item.
    """
    n_rows, n_items = weights.shape
    starts = np.arange(0, n_items, SAMPLE_BLOCK)
    block_cdf = np.cumsum(np.add.reduceat(weights, starts, axis=1), axis=1, dtype=np.float64)  # [B, nb]
    totals = block_cdf[:, -1:]
    rows = np.repeat(np.arange(n_rows), counts)
    u = rng.random(len(rows))
    flat = (block_cdf / totals + np.arange(n_rows)[:, None]).ravel()  # rows stacked, increasing
    blocks = np.minimum(np.searchsorted(flat, rows + u, side="right") - rows * len(starts), len(starts) - 1)
    below = np.where(blocks > 0, block_cdf[rows, np.maximum(blocks - 1, 0)], 0.0)
    residual = u * totals[rows, 0] - below  # mass still to cover inside the block
    cols = starts[blocks][:, None] + np.arange(SAMPLE_BLOCK)[None, :]  # [n, BLOCK]
    inside = cols < n_items
    within = np.take(weights.ravel(), rows[:, None] * n_items + np.minimum(cols, n_items - 1))
    within[~inside] = 0.0
    pick = (np.cumsum(within, axis=1, dtype=np.float64) <= residual[:, None]).sum(1)
    pick = np.minimum(pick, inside.sum(1) - 1)
    return rows, starts[blocks] + pick


def _sample_chunk(
    oracle: OracleScorer,
    item_aug: np.ndarray,
    rows: np.ndarray,
    n_affinity: np.ndarray,
    n_exposure: np.ndarray,
    pop_cdf: np.ndarray,
    seed: np.random.SeedSequence,
):
    """Samples one chunk of users: affinity draws and popularity exposures, with affinity z-scores."""
    rng = np.random.default_rng(seed)
    mean, std = oracle.score_moments(rows)
    user_aug = np.hstack([oracle._user_aug[rows], -mean[:, None].astype(np.float32)])
    weights = user_aug @ item_aug.T  # [B, I] score - user's mean score
    np.exp(weights, out=weights)
    if not np.isfinite(weights).all():  # extreme weights: shift by the max instead
        weights = oracle.score_rows(rows)
        np.exp(weights - weights.max(1, keepdims=True), out=weights)
    r, c = _sample_rows(weights, n_affinity, rng)
    er = np.repeat(np.arange(len(rows)), n_exposure)
    ec = np.minimum(np.searchsorted(pop_cdf, rng.random(len(er)), side="right"), len(pop_cdf) - 1)
    local = np.concatenate([r, er])
    rr, cc = rows[local], np.concatenate([c, ec])
    z = ((oracle.score_pairs(rr, cc) - mean[local]) / std[local]).astype(np.float32)
    exposed = np.concatenate([np.zeros(len(r), bool), np.ones(len(er), bool)])
    return rr, cc, z, exposed


def generate_dataset(config: GeneratorConfig | None = None, progress: bool = False) -> SyntheticDataset:
    """Generates users, items and interactions from the affinity model; deterministic for a seed."""
    cfg = config or GeneratorConfig()
    rng = np.random.default_rng(cfg.seed)
    items, item_factors, item_mid, item_bias, log_price, arrival_s, mid_centroids, mids, popularity = _make_items(
        cfg, rng
    )
    users, user_factors, pref_bonus, price_sens, signup_s = _make_users(cfg, rng, mid_centroids, mids)
    oracle = OracleScorer(
        user_ids=users["user_id"].to_numpy().astype(str),
        item_ids=items["item_id"].to_numpy().astype(str),
        user_factors=user_factors.astype(np.float32),
        item_factors=item_factors.astype(np.float32),
        user_pref=pref_bonus,
        item_mid=item_mid.astype(np.int64),
        item_bias=item_bias.astype(np.float32),
        user_price_sens=price_sens.astype(np.float32),
        item_log_price=log_price.astype(np.float32),
    )

    activity = rng.lognormal(0.0, 0.8, cfg.n_users)
    counts = cfg.min_per_user + rng.multinomial(
        cfg.n_interactions - cfg.min_per_user * cfg.n_users, activity / activity.sum()
    )
    n_exposure = rng.binomial(counts, cfg.exposure_share)
    pop_weights = np.exp(cfg.w_pop * popularity - (cfg.w_pop * popularity).max())
    pop_cdf = np.cumsum(pop_weights) / pop_weights.sum()

    starts = list(range(0, cfg.n_users, cfg.chunk_users))
    seeds = np.random.SeedSequence([cfg.seed, 1]).spawn(len(starts))
    item_aug = np.hstack([oracle._item_aug, np.ones((cfg.n_items, 1), np.float32)])

    def chunk(i: int):
        rows = np.arange(starts[i], min(starts[i] + cfg.chunk_users, cfg.n_users))
        return _sample_chunk(
            oracle, item_aug, rows, counts[rows] - n_exposure[rows], n_exposure[rows], pop_cdf, seeds[i]
        )

    # numpy releases the GIL in the heavy kernels, so two threads use two cores; results are
    # collected in chunk order and each chunk has its own seed, so output is deterministic.
    with ThreadPoolExecutor(max_workers=min(2, len(starts))) as pool:
        results = pool.map(chunk, range(len(starts)))
        if progress:
            from tqdm import tqdm

            results = tqdm(results, total=len(starts), desc="interactions", unit="chunk")
        parts_user, parts_item, parts_z, parts_exposed = map(list, zip(*results))
    u_idx, i_idx = np.concatenate(parts_user), np.concatenate(parts_item)
    z, exposed = np.concatenate(parts_z), np.concatenate(parts_exposed)
    interactions = _describe_interactions(cfg, rng, users, items, u_idx, i_idx, z, exposed, signup_s, arrival_s)
    return SyntheticDataset(users, items, interactions, oracle, category_tree(), cfg)


def _describe_interactions(cfg, rng, users, items, u_idx, i_idx, z, exposed, signup_s, arrival_s) -> pd.DataFrame:
    """Timestamps, types, ratings, quantities and reviews for sampled (user, item) pairs."""
    n = len(u_idx)
    # Time: after both signup and arrival, uniformly until the end of the window.
    begin = np.maximum(signup_s[u_idx], arrival_s[i_idx])
    span = (END - START).total_seconds() - begin
    t = begin + rng.random(n) * span
    order = np.lexsort((t, u_idx))
    u_idx, i_idx, z, exposed, t = u_idx[order], i_idx[order], z[order], exposed[order], t[order]

    # Type follows affinity: exposures the user does not like become negative views;
    # liked items are more often bought, carted and rated.
    draw = rng.random(n)
    p_purchase = np.clip(0.04 + 0.05 * z, 0.02, 0.3)
    p_cart = np.full(n, 0.12)
    p_rate = np.full(n, 0.1)
    kind = np.full(n, "positive_view", dtype=object)
    kind[draw < p_purchase + p_cart + p_rate] = "rate"
    kind[draw < p_purchase + p_cart] = "cart"
    kind[draw < p_purchase] = "purchase"
    kind[exposed & (z < 1.0)] = "negative_view"
    rated = (kind == "rate") | ((kind == "purchase") & (rng.random(n) < 0.5))
    stars = np.clip(np.round(2.6 + 0.55 * z + 0.8 * rng.normal(size=n)), 1, 5)
    rating = np.where(rated, stars, np.nan)
    quantity = np.where(np.isin(kind, ["cart", "purchase"]), 1 + rng.poisson(0.3, n), 0).astype(np.int32)

    reviewed = kind == "rate"
    titles = np.array(
        ["Disappointing", "Not great", "It's okay", "Really good", "Excellent, highly recommend"], dtype=object
    )
    bodies = np.array(
        [
            "Broke quickly and did not match the description.",
            "Works, but the quality is below what I expected for the price.",
            "Does the job. Nothing special.",
            "Good quality and arrived quickly. Happy with it.",
            "Fantastic, exactly what I wanted. Would buy again.",
        ],
        dtype=object,
    )
    star_idx = np.nan_to_num(rating, nan=3).astype(int) - 1
    user_ids = users["user_id"].to_numpy()
    item_ids = items["item_id"].to_numpy()
    return pd.DataFrame(
        {
            "interaction_id": _ids("X", n),
            "user_id": user_ids[u_idx],
            "item_id": item_ids[i_idx],
            "timestamp": _timestamps(t),
            "interaction_type": kind,
            "rating": rating,
            "quantity": pd.Series(quantity, dtype="Int32").mask(quantity == 0),
            "review_title": np.where(reviewed, titles[star_idx], None),
            "review_content": np.where(reviewed, bodies[star_idx], None),
        }
    )


def preference_match(users: pd.DataFrame, items: pd.DataFrame, interactions: pd.DataFrame) -> tuple[float, float]:
    """(share of interactions whose item is in one of the user's stated categories, the share
    expected if items were drawn uniformly at random for the same users)."""
    mid = items["category"].str.split("|").str[1]
    mid_codes, mid_names = pd.factorize(mid)
    name_to_code = {n: i for i, n in enumerate(mid_names)}
    pref_matrix = np.zeros((len(users), len(mid_names)), dtype=bool)
    for row, prefs in enumerate(users["preferences"].to_numpy()):
        for p in filter(None, str(prefs).split("|")):
            if p in name_to_code:
                pref_matrix[row, name_to_code[p]] = True
    user_pos = pd.Index(users["user_id"]).get_indexer(interactions["user_id"])
    item_pos = pd.Index(items["item_id"]).get_indexer(interactions["item_id"])
    matched = pref_matrix[user_pos, mid_codes[item_pos]].mean()
    mid_share = np.bincount(mid_codes, minlength=len(mid_names)) / len(items)
    random_share = (pref_matrix[user_pos] @ mid_share).mean()
    return float(matched), float(random_share)
