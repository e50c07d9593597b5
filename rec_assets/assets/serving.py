"""Group `serving`: item and user vectors from the trained two-tower, the item index, and top-k per user.

The logic lives in `rec_core` (`TwoTowerEncoder`, `ItemIndex`, `Recommender`); these assets only
wire artifacts together. They are working copies: serving reads them only once `serving_release`
(group `release`) has published them, so each records the version a release will name (the
vectors' `model_version` column, the index build id). A backend then needs nothing but
`rec_core.Recommender.load(<root>)`.
"""

import dagster as dg
import pandas as pd

from rec_assets.assets.media import product_images
from rec_assets.gpu import GPU_ASSET_KWARGS
from rec_assets.resources import ArtifactStore, DeviceResource
from rec_core.data.paths import ITEM_INDEX_DIR, MODEL_DIR
from rec_core.index import IndexConfig, ItemIndex
from rec_core.serving import (
    InMemoryFeatureSource,
    Recommender,
    model_version,
    vector_table,
)
from rec_core.showcase import markdown_image, sample_users_grid

SERVING_VERSION = "3"  # 2: finer nprobe tuning; filters applied inside the batched scan; 3: vectors name their model


class ItemIndexConfig(dg.Config):
    exact_max_items: int = IndexConfig.exact_max_items  # catalogs up to this size get an exact index; larger ones IVF
    lists_per_sqrt_item: float = IndexConfig.lists_per_sqrt_item  # IVF cells = this * sqrt(n_items)
    target_recall: float = (
        IndexConfig.target_recall
    )  # nprobe is tuned to the smallest reaching this recall@10 vs exact search
    max_nprobe: int = IndexConfig.max_nprobe  # tuning stops here even if the target is not met
    recall_queries: int = IndexConfig.recall_queries  # user vectors nprobe is tuned and recall measured on


class UserRecommendationsConfig(dg.Config):
    k: int = 50  # items kept per user
    batch_size: int = 65_536  # users per batched index search (memory: their profiles and exclusion pairs)


def _encoder(artifacts: ArtifactStore, device: DeviceResource):
    """(the two-tower encoder, its model version)."""
    from rec_core.inference import TwoTowerEncoder

    directory = artifacts.path(MODEL_DIR)
    return TwoTowerEncoder.load(directory, device=device.torch_device()), model_version(directory)


def _optional(table: pd.DataFrame) -> pd.DataFrame | None:
    return table if len(table) else None


@dg.asset(
    group_name="serving",
    code_version=SERVING_VERSION,
    deps=["two_tower_model"],
    description="Every item through the item tower: item_id and an L2-normalized float32 embedding.",
    **GPU_ASSET_KWARGS,
)
def item_embeddings(
    items: pd.DataFrame,
    item_text_embeddings: pd.DataFrame,
    item_clip_embeddings: pd.DataFrame,
    artifacts: ArtifactStore,
    device: DeviceResource,
) -> dg.Output:
    encoder, version = _encoder(artifacts, device)
    item_ids, vectors = encoder.encode_items(items, _optional(item_text_embeddings), _optional(item_clip_embeddings))
    return dg.Output(
        vector_table("item_id", item_ids, vectors, version),
        metadata={"rows": float(len(item_ids)), "dimension": float(vectors.shape[1]), "model_version": version},
    )


@dg.asset(
    group_name="serving",
    code_version=SERVING_VERSION,
    deps=["two_tower_model"],
    description="Every user through the user tower with their full interaction history (users with none are "
    "encoded from demographics and stated preferences): user_id and an L2-normalized float32 embedding.",
    **GPU_ASSET_KWARGS,
)
def user_embeddings(
    users: pd.DataFrame,
    interactions: pd.DataFrame,
    user_text_embeddings: pd.DataFrame,
    artifacts: ArtifactStore,
    device: DeviceResource,
) -> dg.Output:
    encoder, version = _encoder(artifacts, device)
    user_ids, vectors = encoder.encode_users(users, interactions, _optional(user_text_embeddings))
    cold = int((~users["user_id"].isin(interactions["user_id"])).sum())
    return dg.Output(
        vector_table("user_id", user_ids, vectors, version),
        metadata={
            "rows": float(len(user_ids)),
            "cold_start_users": float(cold),
            "dimension": float(vectors.shape[1]),
            "model_version": version,
        },
    )


@dg.asset(
    group_name="serving",
    code_version=SERVING_VERSION,
    description="FAISS inner-product index over item_embeddings (exact for small catalogs, IVF beyond, nprobe "
    "tuned to a recall target), with its id map and a build report holding recall@10 against exact search on user vectors.",
)
def item_index(
    config: ItemIndexConfig, item_embeddings: pd.DataFrame, user_embeddings: pd.DataFrame, artifacts: ArtifactStore
) -> dg.MaterializeResult:
    from rec_core.embeddings import embedding_matrix

    index = ItemIndex.build(
        item_embeddings["item_id"].tolist(),
        embedding_matrix(item_embeddings, "embedding"),
        IndexConfig(
            exact_max_items=config.exact_max_items,
            lists_per_sqrt_item=config.lists_per_sqrt_item,
            target_recall=config.target_recall,
            max_nprobe=config.max_nprobe,
            recall_queries=config.recall_queries,
        ),
        recall_queries=embedding_matrix(user_embeddings, "embedding") if len(user_embeddings) else None,
    )
    path = artifacts.path(ITEM_INDEX_DIR)
    index.save(path)
    report = index.report
    return dg.MaterializeResult(
        metadata={
            "index_type": report.index_type,
            "items": float(report.n_items),
            "dimension": float(report.dim),
            "recall_at_10_vs_exact": float(report.recall_at_k),
            "ivf_lists": float(report.n_lists),
            "nprobe": float(report.nprobe),
            "build_seconds": float(report.build_seconds),
            "build_id": report.build_id,  # the index version a release names
            "path": dg.MetadataValue.path(str(path)),
        }
    )


@dg.asset(
    group_name="serving",
    code_version=SERVING_VERSION,
    # product_images directly, not only through the CLIP embeddings: the sample-user grid reads its files
    deps=[item_index, product_images],
    description="Top-k items per user (available, not already interacted with), from multithreaded batched index "
    "searches that apply the filters while they scan: "
    "user_id, top_k_item_ids, top_k_scores, model_version. Its metadata shows sample users' latest items "
    "and top recommendations as one image grid, drawn from the product_images files.",
)
def user_recommendations(
    config: UserRecommendationsConfig,
    items: pd.DataFrame,
    users: pd.DataFrame,
    interactions: pd.DataFrame,
    user_embeddings: pd.DataFrame,
    artifacts: ArtifactStore,
) -> dg.Output:
    from rec_core.embeddings import embedding_matrix

    source = InMemoryFeatureSource.from_tables(user_embeddings, users, interactions)
    recommender = Recommender(items, ItemIndex.load(artifacts.path(ITEM_INDEX_DIR)), source)
    table = recommender.recommend_batch(
        source.user_ids, embedding_matrix(user_embeddings, "embedding"), k=config.k, batch_size=config.batch_size
    )
    table["model_version"] = model_version(artifacts.path(MODEL_DIR))
    lengths = table["top_k_item_ids"].list.len().to_numpy()  # Arrow list columns: no Python object per item
    return dg.Output(
        table,
        metadata={
            "users": float(len(table)),
            "k": float(config.k),
            "users_with_fewer_than_k": float((lengths < config.k).sum()),
            "distinct_items_recommended": float(table["top_k_item_ids"].list.flatten().nunique()),
            "mean_top1_score": float(table["top_k_scores"][lengths > 0].list[0].mean()) if (lengths > 0).any() else 0.0,
            "sample_users": dg.MetadataValue.md(
                markdown_image(
                    sample_users_grid(table, interactions, artifacts.path()),
                    "sample users: latest items, then top recommendations",
                )
            ),
        },
    )
