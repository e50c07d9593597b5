"""Serving benchmark: `python -m rec_core.bench serving --n-items 100000 [--json PATH]`.

Measures, in one run:
- single-request `recommend` latency (p50, p99) and requests per second, with filters on
  (availability, already-seen exclusion, a price range), FAISS on one thread as a server runs it;
- users per second of the batched top-k (`Recommender.recommend_batch`, what the
  `user_recommendations` asset runs: per-cell matrix products on every core, with the filters
  applied inside the scan) against a loop of one `recommend` call per user with the same
  filters, and the ratio (each timed 3 times, medians; `batch_loop_overlap` checks both give
  the same lists);
- the index's recall@10 against exact search at its tuned nprobe (on user vectors), and the
  overlap of filtered `recommend` lists with the exact filtered top-k (brute force per user, which
  is also timed as the naive per-user baseline: `batch_speedup_vs_naive_loop`).

The catalog, users and interactions come from the synthetic generator at the requested size.
The vectors are synthesized, not trained (training a two-tower on a 100k catalog per benchmark
run is out of budget): item vectors follow the generator's latent item factors and category, user
vectors the users' latent factors and stated preferences, both L2-normalized, so the index sees
the clustered geometry of real embeddings rather than uniform noise.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
from tqdm import tqdm

from rec_core.bench.common import int_options_parser, median, percentile, timed_runs
from rec_core.filtering import Available, ExcludeInteracted, PriceRange, keep_mask
from rec_core.index import IndexConfig, ItemIndex
from rec_core.serving import InMemoryFeatureSource, Recommender, build_profiles


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = int_options_parser(
        "python -m rec_core.bench serving",
        {
            "--n-items": (100_000, None),
            "--n-users": (5_000, None),
            "--interactions-per-user": (20, None),
            "--dim": (64, "embedding width (the two-tower default)"),
            "--k": (10, None),
            "--requests": (2_000, "timed single requests"),
            "--batch-users": (5_000, "users in the batched top-k run"),
            "--loop-users": (1_000, "users in the one-request-per-user loop"),
            "--naive-users": (200, "users scored by brute force (ground truth)"),
            "--exact-max-items": (IndexConfig.exact_max_items, None),
            "--seed": (0, None),
        },
    )
    return parser.parse_args(argv)


def synthesize_vectors(dataset, dim: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(item vectors [n_items, dim], user vectors [n_users, dim]), unit length, sharing one latent space."""
    rng = np.random.default_rng(seed)
    oracle = dataset.oracle
    factors = oracle.item_factors.shape[1]
    n_mid = oracle.user_pref.shape[1]
    projection = rng.normal(size=(factors + n_mid, dim)) / np.sqrt(dim)
    item_mid = np.eye(n_mid)[oracle.item_mid]  # [n_items, n_mid]
    items = np.hstack([oracle.item_factors * np.sqrt(factors), item_mid]) @ projection
    items += 0.3 * rng.normal(size=items.shape) / np.sqrt(dim)
    users = (
        np.hstack([oracle.user_factors * np.sqrt(factors), oracle.user_pref / max(oracle.user_pref.max(), 1e-9)])
        @ projection
    )
    items /= np.linalg.norm(items, axis=1, keepdims=True)
    users /= np.linalg.norm(users, axis=1, keepdims=True)
    return items.astype(np.float32), users.astype(np.float32)


def synthetic_catalog(args) -> tuple:
    """(dataset, item vectors, user vectors) for `--n-users`, `--n-items`, `--interactions-per-user`, `--dim`, `--seed`."""
    from rec_core.generation.synthetic import GeneratorConfig, generate_dataset

    n_interactions = args.n_users * args.interactions_per_user
    config = GeneratorConfig(n_users=args.n_users, n_items=args.n_items, n_interactions=n_interactions, seed=args.seed)
    dataset = generate_dataset(config)
    return (dataset, *synthesize_vectors(dataset, args.dim, args.seed))


def run(argv: list[str]) -> dict[str, float]:
    args = _parse(argv)
    steps = tqdm(total=5, desc="serving bench", unit="step", file=sys.stderr)
    started = time.perf_counter()
    dataset, item_vectors, user_vectors = synthetic_catalog(args)
    user_ids = dataset.users["user_id"].tolist()
    steps.update()
    steps.set_postfix_str("building index")
    index = ItemIndex.build(
        dataset.items["item_id"].tolist(),
        item_vectors,
        IndexConfig(exact_max_items=args.exact_max_items),
        recall_queries=user_vectors,
    )
    source = InMemoryFeatureSource(user_ids, user_vectors, build_profiles(dataset.users, dataset.interactions))
    recommender = Recommender(dataset.items, index, source)
    build_seconds = time.perf_counter() - started
    steps.update()

    filters = [
        Available(),
        ExcludeInteracted(),
        PriceRange(max_price=float(np.quantile(dataset.items["discounted_price"], 0.9))),
    ]
    rng = np.random.default_rng(args.seed)
    for user_id in rng.choice(user_ids, 200):  # warm-up: caches, branch predictors, lazy faiss state
        recommender.recommend(user_id, args.k, filters)
    latencies = []
    steps.set_postfix_str("single requests")
    for user_id in rng.choice(user_ids, args.requests):
        start = time.perf_counter()
        recommender.recommend(user_id, args.k, filters)
        latencies.append(time.perf_counter() - start)
    steps.update()

    steps.set_postfix_str("batched vs loop")
    batch_ids = user_ids[: args.batch_users]
    batch_vectors = user_vectors[: len(batch_ids)]
    batch = recommender.recommend_batch(batch_ids, batch_vectors, args.k, filters)
    batch_seconds = timed_runs(lambda: recommender.recommend_batch(batch_ids, batch_vectors, args.k, filters), 3)
    batch_users_per_s = len(batch_ids) / median(batch_seconds)
    loop_ids = user_ids[: args.loop_users]
    looped = [recommender.recommend(user_id, args.k, filters).item_ids for user_id in loop_ids]
    loop_seconds = timed_runs(lambda: [recommender.recommend(user_id, args.k, filters) for user_id in loop_ids], 3)
    loop_users_per_s = len(loop_ids) / median(loop_seconds)
    agreement = float(np.mean([len(set(a) & set(b)) / args.k for a, b in zip(batch["top_k_item_ids"], looped)]))
    steps.update()

    # Brute force, one user at a time (score the whole catalog, filter, sort): the ground truth for
    # the served lists, and the naive per-user baseline
    steps.set_postfix_str("exact comparison")
    exact_match = []
    naive_seconds = 0.0
    for row in rng.choice(len(user_ids), args.naive_users, replace=False):
        start = time.perf_counter()
        profile = source.user_profile(user_ids[row])
        allowed = np.flatnonzero(keep_mask(recommender.attributes, np.arange(len(index)), profile, filters))
        exact = allowed[np.argsort(-index.exact_scores(user_vectors[row])[allowed], kind="stable")[: args.k]]
        naive_seconds += time.perf_counter() - start
        served = recommender.recommend(user_ids[row], args.k, filters).item_ids
        exact_match.append(len(set(served) & {index.item_ids[r] for r in exact}) / args.k)
    naive_users_per_s = args.naive_users / naive_seconds
    steps.update()
    steps.close()

    return {
        "serving_n_items": float(args.n_items),
        "recommend_p50_ms": median(latencies) * 1e3,
        "recommend_p99_ms": percentile(latencies, 99) * 1e3,
        "recommend_requests_per_s": len(latencies) / sum(latencies),
        "batch_users_per_s": batch_users_per_s,
        "loop_users_per_s": loop_users_per_s,
        "batch_speedup_vs_loop": batch_users_per_s / loop_users_per_s,
        "batch_loop_overlap": agreement,
        "naive_loop_users_per_s": naive_users_per_s,
        "batch_speedup_vs_naive_loop": batch_users_per_s / naive_users_per_s,
        "index_recall_vs_exact": index.report.recall_at_k,
        "index_is_approximate": float(not index.is_exact),
        "index_nprobe": float(index.report.nprobe),
        "index_lists": float(index.report.n_lists),
        "cpu_threads_batch": float(os.cpu_count() or 1),
        "recommend_recall_vs_exact_filtered": float(np.mean(exact_match)),
        "serving_setup_s": build_seconds,
    }
