"""Retrieval quality: the two-tower against popularity, EASE and (synthetic) the oracle, same split, same run.

    python -m rec_core.bench quality --dataset synthetic|FORMAT:PATH [--split time|random|cold-items] [--seed S]

Trains the default recipe as the `two_tower_model` asset does: the default `TrainingConfig` plus the
default validation-split search (`rec_core.tuning`), on the train split. Validation drives early
stopping, the search, EASE's lambda and ALS's search; the test split only scores. Prints every
model's test recall@10, NDCG@10 and coverage@10.

`--split cold-items` holds out 10% of the items with all their interactions; the two-tower then
also sees the items' text embeddings (the packaged text encoder), and the report adds recall@10
among the cold items for the two-tower (id path off for them), the text-content baseline and
random (`rec_core.cold_start`).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def load_named_dataset(spec: str, seed: int):
    """(users, items, interactions, oracle or None) for `synthetic` or `FORMAT:PATH`, FORMAT being a dataset format of
    `rec_core.data.loaders` (`movielens`, `amazon` (the sales CSV), `amazon-reviews` (review JSON lines: a file, or a
    folder with a reviews file and an optional `meta_*` file), `parquet`, or a registered one)."""
    from rec_core.data.loaders import load_dataset, source_formats

    kind, _, path = spec.partition(":")
    if kind == "synthetic":
        from rec_core.generation.synthetic import GeneratorConfig, generate_dataset

        dataset = generate_dataset(GeneratorConfig(seed=seed))
        return dataset.users, dataset.items, dataset.interactions, dataset.oracle
    formats = source_formats()
    if kind in formats and path:
        return (*load_dataset(path, kind), None)
    raise ValueError(f"unknown dataset '{spec}': use synthetic or FORMAT:PATH with FORMAT one of {', '.join(formats)}")


def run(argv: list[str]) -> dict[str, float]:
    from rec_core.data.splits import SPLIT_METHODS

    parser = argparse.ArgumentParser(prog="python -m rec_core.bench quality")
    parser.add_argument(
        "--dataset",
        default="synthetic",
        help="synthetic, or FORMAT:PATH (movielens, amazon, amazon-reviews, parquet or a registered format)",
    )
    parser.add_argument("--split", choices=SPLIT_METHODS, default="time")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)

    from rec_core.data.bundle import DataBundle
    from rec_core.data.splits import split_interactions
    from rec_core.device import resolve_device
    from rec_core.evaluation import baseline_table, compare_with_baselines
    from rec_core.inference import TwoTowerEncoder
    from rec_core.training import TrainingConfig, configure_torch_threads
    from rec_core.training_run import train_and_write
    from rec_core.tuning import TuningConfig

    configure_torch_threads()
    device = resolve_device(args.device)
    users, items, interactions, oracle = load_named_dataset(args.dataset, args.seed)
    splits = split_interactions(interactions, method=args.split, seed=args.seed)
    cold_items = args.split == "cold-items"
    item_text = _item_text_embeddings(items, device) if cold_items else None
    data = DataBundle(users, items, splits, item_text_embeddings=item_text)
    with tempfile.TemporaryDirectory() as tmp:  # evaluate what serving would load, not the in-memory model
        run = train_and_write(
            data,
            tmp,
            TrainingConfig(seed=args.seed),
            TuningConfig(seed=args.seed),
            device=device,
            progress=lambda line: print(line, file=sys.stderr, flush=True),
        )
        encoder = TwoTowerEncoder.load(run.model_dir, device=device)
        print(
            "evaluating the two-tower and baselines on the test split (EASE: one fit per lambda, ALS: one per trial) ...",
            file=sys.stderr,
            flush=True,
        )
        results = compare_with_baselines(encoder, data, oracle=oracle, seed=args.seed)
        if cold_items:
            from rec_core.cold_start import cold_item_metrics
            from rec_core.data.splits import cold_item_ids

            cold = cold_item_metrics(
                encoder, users, items, splits, cold_item_ids(interactions, seed=args.seed), item_text, seed=args.seed
            )
    search, trained = run.search, run.search.trained
    print(baseline_table(results), file=sys.stderr)
    out = {
        "two_tower_recall_at_10": results["two_tower"]["recall_at_10"],
        "two_tower_recall_capped_at_10": results["two_tower"]["recall_capped_at_10"],
        "two_tower_ndcg_at_10": results["two_tower"]["ndcg_at_10"],
        "coverage_at_10": results["two_tower"]["coverage_at_10"],
        "popularity_recall_at_10": results["popularity"]["recall_at_10"],
        "popularity_ndcg_at_10": results["popularity"]["ndcg_at_10"],
        "ease_recall_at_10": results["ease"]["recall_at_10"],
        "ease_ndcg_at_10": results["ease"]["ndcg_at_10"],
        "ease_coverage_at_10": results["ease"]["coverage_at_10"],
        "ease_lambda": results["ease"]["ease_lambda"],
        "ease_items": results["ease"]["ease_items"],
        "als_recall_at_10": results["als"]["recall_at_10"],
        "als_ndcg_at_10": results["als"]["ndcg_at_10"],
        "als_coverage_at_10": results["als"]["coverage_at_10"],
        **{
            name: results["als"][name]
            for name in (
                "als_factors",
                "als_regularization",
                "als_alpha",
                "als_iterations",
                "als_trials",
                "als_tuning_s",
            )
        },
        "two_tower_over_als_recall_ratio": results["two_tower"]["recall_at_10"]
        / max(results["als"]["recall_at_10"], 1e-12),
        "two_tower_over_ease_recall_ratio": results["two_tower"]["recall_at_10"]
        / max(results["ease"]["recall_at_10"], 1e-12),
        "two_tower_over_popularity_recall_ratio": results["two_tower"]["recall_at_10"]
        / max(results["popularity"]["recall_at_10"], 1e-12),
        "two_tower_best_epoch": float(trained.best_epoch),
        "two_tower_train_s": trained.train_seconds,
        "tuning_trials": float(len(search.trials)),
        "tuning_wall_s": search.wall_s,
        "tuning_base_validation_recall_at_10": search.trials[0]["validation_recall"],
        "tuning_best_validation_recall_at_10": max(t["validation_recall"] for t in search.trials),
        "evaluated_users": results["two_tower"]["evaluated_users"],
    }
    if cold_items:
        print(baseline_table(cold), file=sys.stderr)
        out |= {
            f"{model}_cold_recall_at_10": cold[model]["recall_at_10"] for model in ("two_tower", "content", "random")
        }
        out["cold_evaluated_users"] = cold["two_tower"]["evaluated_users"]
    if oracle is not None:
        out["oracle_recall_at_10"] = results["oracle"]["recall_at_10"]
        out["oracle_ndcg_at_10"] = results["oracle"]["ndcg_at_10"]
        out["two_tower_over_oracle_recall_ratio"] = results["two_tower"]["recall_at_10"] / max(
            results["oracle"]["recall_at_10"], 1e-12
        )
    return out


def _item_text_embeddings(items, device: str):
    """Name and description embeddings of every item with the packaged text encoder (what the assets compute)."""
    from rec_core.bench.encode import TEXT_COLUMNS
    from rec_core.embeddings import text_embeddings
    from rec_core.encoders import TextEncoder, TextEncoderConfig

    print(f"encoding the text of {len(items)} items ...", file=sys.stderr, flush=True)
    texts = {column: items[source].tolist() for column, source in TEXT_COLUMNS.items()}
    return text_embeddings("item_id", items["item_id"], texts, TextEncoder(TextEncoderConfig(device=device))).table
