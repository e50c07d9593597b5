"""Command line for the synthetic dataset, with the seed's interface:

    python -m rec_core.generation.dataset_gen_amazon --n_users N --n_items M --n_interactions K --seed S --output DIR

Writes `recommendation_users.parquet`, `recommendation_items.parquet`,
`recommendation_interactions.parquet`, `category_tree.json`, the generator config and the
oracle (the true affinity model, for evaluation) into DIR.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from rec_core.generation.synthetic import GeneratorConfig, generate_dataset, preference_match


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n_users", type=int, default=GeneratorConfig.n_users)
    parser.add_argument("--n_items", type=int, default=GeneratorConfig.n_items)
    parser.add_argument("--n_interactions", type=int, default=GeneratorConfig.n_interactions)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args(argv)
    config = GeneratorConfig(
        n_users=args.n_users, n_items=args.n_items, n_interactions=args.n_interactions, seed=args.seed
    )
    start = time.perf_counter()
    dataset = generate_dataset(config, progress=True)
    dataset.save(args.output)
    matched, random_share = preference_match(dataset.users, dataset.items, dataset.interactions)
    print(
        f"wrote {len(dataset.users)} users, {len(dataset.items)} items, {len(dataset.interactions)} interactions "
        f"to {args.output} in {time.perf_counter() - start:.1f} s; "
        f"{matched:.1%} of interactions match stated preferences (random: {random_share:.1%})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
