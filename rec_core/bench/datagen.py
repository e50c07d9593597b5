"""`bench datagen`: synthetic generation speed, memory and signal at 1M interactions.

Generates 10k users x 50k items x 1M interactions several times (in memory, as the `users`,
`items` and `interactions` assets do before writing) and reports the median time, rows per
second, peak resident memory, and the share of interactions that match the user's stated
preferences against the share random items would match.
"""

from __future__ import annotations

import argparse

from rec_core.bench.common import median, peak_rss_mb, timed_runs
from rec_core.generation.synthetic import GeneratorConfig, generate_dataset, preference_match


def run(argv: list[str]) -> dict[str, float]:
    parser = argparse.ArgumentParser(prog="bench datagen")
    parser.add_argument("--n-users", type=int, default=10_000)
    parser.add_argument("--n-items", type=int, default=50_000)
    parser.add_argument("--n-interactions", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    config = GeneratorConfig(
        n_users=args.n_users, n_items=args.n_items, n_interactions=args.n_interactions, seed=args.seed
    )
    result = {}
    times = timed_runs(lambda: result.setdefault("last", generate_dataset(config)), 1)
    times += timed_runs(lambda: generate_dataset(config), args.repeats - 1)
    dataset = result["last"]
    matched, random_share = preference_match(dataset.users, dataset.items, dataset.interactions)
    seconds = median(times)
    return {
        "datagen_1m_median_s": seconds,
        "datagen_rows_per_s": len(dataset.interactions) / seconds,
        "datagen_peak_rss_mb": peak_rss_mb(),
        "preference_match_share": matched,
        "preference_match_random_share": random_share,
    }
