"""Training speed: wall time and examples per second to early stop on 100K synthetic interactions.

    python -m rec_core.bench train [--interactions N] [--repeats R] [--device cpu|cuda]

Each repeat fits preprocessing and trains the default config from scratch to early stop
(data generation and splitting are not timed); the medians over repeats are reported.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def run(argv: list[str]) -> dict[str, float]:
    parser = argparse.ArgumentParser(prog="python -m rec_core.bench train")
    parser.add_argument("--interactions", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)

    from rec_core.bench.common import median
    from rec_core.data.splits import split_interactions
    from rec_core.device import resolve_device
    from rec_core.generation.synthetic import GeneratorConfig, generate_dataset
    from rec_core.training import TrainingConfig, configure_torch_threads, prepare_training_data, train_two_tower

    configure_torch_threads()
    device = resolve_device(args.device)
    n_users = max(20, args.interactions // 50)
    dataset = generate_dataset(
        GeneratorConfig(
            n_users=n_users, n_items=max(50, args.interactions // 20), n_interactions=args.interactions, seed=args.seed
        )
    )
    splits = split_interactions(dataset.interactions, method="time", seed=args.seed)
    walls, rates, epochs, recalls = [], [], [], []
    for _ in range(args.repeats):
        config = TrainingConfig(seed=args.seed)
        started = time.perf_counter()
        data = prepare_training_data(dataset.users, dataset.items, splits, config=config)
        trained = train_two_tower(data, config, device=device)
        wall = time.perf_counter() - started
        walls.append(wall)
        rates.append(trained.examples_seen / trained.train_seconds)
        epochs.append(float(len(trained.history)))
        recalls.append(max(h[f"validation_recall_at_{config.eval_k}"] for h in trained.history))
    return {
        "train_100k_wall_s" if args.interactions == 100_000 else f"train_{args.interactions}_wall_s": median(walls),
        "train_examples_per_s": median(rates),
        "train_epochs_to_stop": median(epochs),
        "train_best_validation_recall_at_10": median(recalls),
        "train_repeats": float(args.repeats),
    }
