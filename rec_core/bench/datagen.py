"""`bench datagen`: synthetic generation speed, memory and signal at 1M interactions.

Generates 10k users x 50k items x 1M interactions several times (in memory, as the `users`,
`items` and `interactions` assets do before writing) and reports the median time, rows per
second, peak resident memory, and the share of interactions that match the user's stated
preferences against the share random items would match.
"""

from __future__ import annotations

from rec_core.bench.common import int_options_parser, median, peak_rss_mb, timed_runs
from rec_core.generation.synthetic import GeneratorConfig, generate_dataset, preference_match


def run(argv: list[str]) -> dict[str, float]:
    parser = int_options_parser(
        "bench datagen",
        {
            "--n-users": (10_000, None),
            "--n-items": (50_000, None),
            "--n-interactions": (1_000_000, None),
            "--repeats": (5, None),
            "--seed": (0, None),
        },
    )
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
