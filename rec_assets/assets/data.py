"""Group `data`: users, items and interactions from one source, and their splits.

The source is chosen by run config: the synthetic generator (sizes and seed) or a dataset
path (MovieLens folder, Amazon sales CSV, Amazon review JSON lines, a folder of parquet tables,
or any format registered with `rec_core.data.loaders.register_source_format`).
"""

from typing import Literal

import dagster as dg
import pandas as pd

from rec_assets.metadata import counts_table, table_preview
from rec_assets.resources import ArtifactStore
from rec_core.data.landing import ingest, merge_landed
from rec_core.data.paths import LANDED_INTERACTIONS_DIR, SYNTHETIC_TRUTH_DIR
from rec_core.data.sources import load_source
from rec_core.data.splits import split_interactions
from rec_core.data.validation import DataValidationError, check_references, conform, split_coverage
from rec_core.generation.synthetic import GeneratorConfig, preference_match

DATA_VERSION = "1"


class DatasetConfig(dg.Config):
    """Where users, items and interactions come from."""

    source: Literal["synthetic", "path"] = "synthetic"
    n_users: int = GeneratorConfig.n_users  # synthetic: number of users
    n_items: int = GeneratorConfig.n_items  # synthetic: number of items
    n_interactions: int = GeneratorConfig.n_interactions  # synthetic: number of interactions
    seed: int = GeneratorConfig.seed  # synthetic: random seed
    # path source: a MovieLens folder, an Amazon sales CSV, Amazon review JSON lines (a file, or a folder with one
    # reviews file and an optional meta_* file; see rec_core.data.amazon_reviews), or a folder of parquet tables
    path: str | None = None
    # auto (detected), movielens, amazon, amazon-reviews, parquet, or a registered format's name
    format: str = "auto"

    def generator_config(self) -> GeneratorConfig:
        return GeneratorConfig(
            n_users=self.n_users, n_items=self.n_items, n_interactions=self.n_interactions, seed=self.seed
        )


def _source_table_metadata(table: pd.DataFrame, source_label: str) -> dict:
    """What every source table shows in the UI: its size, where it came from and its first rows."""
    return {"rows": len(table), "source": source_label, "preview": table_preview(table)}


@dg.multi_asset(
    outs={
        "users": dg.AssetOut(
            group_name="data", code_version=DATA_VERSION, description="Users and their stated preferences."
        ),
        "items": dg.AssetOut(group_name="data", code_version=DATA_VERSION, description="The item catalog."),
        "source_interactions": dg.AssetOut(
            group_name="data",
            code_version=DATA_VERSION,
            description="User-item events as generated or loaded from the source.",
        ),
    },
    can_subset=False,
)
def source_tables(config: DatasetConfig, artifacts: ArtifactStore):
    """Generates or loads the three tables together, validated before anything is written
    (`rec_core.data.sources.load_source`); synthetic data's oracle goes to `synthetic_truth/`."""
    source = load_source(
        config.source,
        config.path,
        config.format,
        config.generator_config(),
        truth_dir=artifacts.path(SYNTHETIC_TRUTH_DIR),
    )
    users, items, interactions = source.users, source.items, source.interactions
    match, random_share = preference_match(users, items, interactions)
    yield dg.Output(
        users,
        "users",
        metadata=_source_table_metadata(users, source.label),
    )
    yield dg.Output(
        items,
        "items",
        metadata={
            **_source_table_metadata(items, source.label),
            "top_level_categories": counts_table(items["category"].str.split("|").str[0], "category"),
            "leaf_categories": counts_table(items["category"].str.split("|").str[-1], "leaf"),
        },
    )
    yield dg.Output(
        interactions,
        "source_interactions",
        metadata={
            **_source_table_metadata(interactions, source.label),
            "interaction_types": counts_table(interactions["interaction_type"], "type"),
            "preference_match_share": float(match),
            "preference_match_random_share": float(random_share),
        },
    )


class InteractionsConfig(dg.Config):
    """New interaction files to ingest (the landing sensor fills this in)."""

    landing_files: list[str] = []


@dg.asset(
    group_name="data",
    code_version=DATA_VERSION,
    description="All interactions: the source's plus every ingested landing file, each interaction once.",
)
def interactions(
    context: dg.AssetExecutionContext,
    config: InteractionsConfig,
    artifacts: ArtifactStore,
    source_interactions: pd.DataFrame,
    users: pd.DataFrame,
    items: pd.DataFrame,
) -> pd.DataFrame:
    landed_dir = artifacts.path(LANDED_INTERACTIONS_DIR)
    if config.landing_files:
        kept = ingest(config.landing_files, landed_dir)
        context.log.info(f"ingested {len(kept)} landing file(s): {', '.join(config.landing_files)}")
    merged, added = merge_landed(source_interactions, landed_dir, users, items)
    context.add_output_metadata(
        {
            "rows": len(merged),
            "rows_from_landing": added,
            "landing_files": len(config.landing_files),
            "preview": table_preview(merged.tail(5)),
        }
    )
    return merged


class SplitConfig(dg.Config):
    """How interactions are split into train, validation and test, per user. The defaults are those of
    `split_interactions` (tests/test_architecture.py holds every Dagster config to its library's defaults)."""

    method: Literal["time", "random"] = "time"  # time: latest held out; random: seeded per-user shuffle
    seed: int = 0
    test_fraction: float = 0.2
    validation_fraction: float = 0.1


@dg.asset(
    group_name="data", code_version=DATA_VERSION, description="Interactions with a train/validation/test split column."
)
def interaction_splits(
    context: dg.AssetExecutionContext, config: SplitConfig, interactions: pd.DataFrame
) -> pd.DataFrame:
    splits = split_interactions(
        interactions,
        method=config.method,
        seed=config.seed,
        test_fraction=config.test_fraction,
        validation_fraction=config.validation_fraction,
    )
    counts = splits["split"].value_counts()
    held_out_users = splits.loc[splits["split"] == "test", "user_id"].nunique()
    context.add_output_metadata(
        {
            "method": config.method,
            "train_rows": int(counts.get("train", 0)),
            "validation_rows": int(counts.get("validation", 0)),
            "test_rows": int(counts.get("test", 0)),
            "users_with_test_items": int(held_out_users),
        }
    )
    return splits


def _schema_check(kind: str, frame: pd.DataFrame) -> dg.AssetCheckResult:
    try:
        conform(frame, kind, f"stored {kind}")
    except DataValidationError as exc:
        return dg.AssetCheckResult(
            passed=False, metadata={"column": exc.column or "", "bad_rows": exc.bad_rows, "problem": exc.problem}
        )
    return dg.AssetCheckResult(passed=True, metadata={"rows": len(frame)})


@dg.asset_check(asset="users", description="Schema, required values and unique user_id.")
def users_schema(users: pd.DataFrame) -> dg.AssetCheckResult:
    return _schema_check("users", users)


@dg.asset_check(asset="items", description="Schema, value ranges and unique item_id.")
def items_schema(items: pd.DataFrame) -> dg.AssetCheckResult:
    return _schema_check("items", items)


@dg.asset_check(asset="interactions", description="Schema, interaction types and unique interaction_id.")
def interactions_schema(interactions: pd.DataFrame) -> dg.AssetCheckResult:
    return _schema_check("interactions", interactions)


@dg.asset_check(
    asset="interactions",
    additional_ins={"users": dg.AssetIn("users"), "items": dg.AssetIn("items")},
    description="Every interaction names a known user and a known item.",
)
def interactions_reference_known_entities(
    interactions: pd.DataFrame, users: pd.DataFrame, items: pd.DataFrame
) -> dg.AssetCheckResult:
    try:
        check_references(interactions, users, items, "stored interactions")
    except DataValidationError as exc:
        return dg.AssetCheckResult(passed=False, metadata={"column": exc.column or "", "bad_rows": exc.bad_rows})
    return dg.AssetCheckResult(passed=True)


@dg.asset_check(
    asset="interaction_splits",
    additional_ins={"interactions": dg.AssetIn("interactions")},
    description="Train and test are present and every interaction is in exactly one split.",
)
def splits_complete(interaction_splits: pd.DataFrame, interactions: pd.DataFrame) -> dg.AssetCheckResult:
    coverage = split_coverage(interaction_splits, interactions)
    return dg.AssetCheckResult(
        passed=coverage.pop("complete"), metadata={**coverage, "splits": ", ".join(coverage["splits"])}
    )
