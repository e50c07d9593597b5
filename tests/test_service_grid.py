"""The sample-user image grid of `user_recommendations` (library side: `rec_core.showcase`), on a tiny
catalog with placeholder product images, one of them missing."""

import numpy as np
import pandas as pd

from rec_core.data.paths import image_link
from rec_core.generation.generate_images import ImageGenerationConfig, generate_images
from rec_core.showcase import (
    TILE_PX,
    UserHistory,
    markdown_image,
    product_image,
    sample_users_grid,
)


def test_grid_shows_each_sample_users_latest_items_and_recommendations(tmp_path, tiny_dataset):
    items, interactions = tiny_dataset.items, tiny_dataset.interactions
    generate_images(items, tmp_path / "product_images", ImageGenerationConfig(image_size=64))
    item_ids = items["item_id"].astype(str).tolist()
    users = sorted(interactions["user_id"].astype(str).unique())
    table = pd.DataFrame(
        {
            "user_id": users,
            "top_k_item_ids": [item_ids[:6]] * len(users),
            "top_k_scores": [[0.9, 0.8, 0.7, 0.6, 0.5, 0.4]] * len(users),
        }
    )
    (tmp_path / image_link(item_ids[0])).unlink()  # the first recommendation of every user has no image

    grid = sample_users_grid(table, interactions, tmp_path, n_users=3, n_items=5)

    history = UserHistory(interactions)
    longest = max(len(history.recent_item_ids(u, 5)) for u in (users[0], users[len(users) // 2], users[-1]))
    assert grid.width >= (longest + 5) * TILE_PX  # one tile per latest item and per recommendation
    pixels = np.asarray(grid)
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50  # product images were drawn, not blank tiles
    assert product_image(tmp_path, item_ids[0]) is None and product_image(tmp_path, item_ids[1]) is not None
    markdown = markdown_image(grid, "sample users")
    assert markdown.startswith("![sample users](data:image/png;base64,") and len(markdown) > 1000


def test_history_is_newest_first_and_limited(tiny_dataset):
    interactions = tiny_dataset.interactions
    history = UserHistory(interactions, tiny_dataset.items, keep=3)
    user = interactions["user_id"].value_counts().index[0]
    recent = history.recent(user, 10)
    mine = interactions[interactions["user_id"] == user].sort_values("timestamp", ascending=False)
    assert [r["item_id"] for r in recent] == mine["item_id"].head(3).tolist()
    assert recent[0]["product_name"] == tiny_dataset.items.set_index("item_id").at[recent[0]["item_id"], "product_name"]
    assert history.active_users(1) == [user] and history.recent("nobody") == []


def test_user_recommendations_depends_on_product_images_directly():
    """The grid in `user_recommendations`' metadata reads the product_images files, so the code location's
    graph holds that edge itself, not only through item_clip_embeddings: Dagster then runs the images
    first and marks the grid stale when new images are drawn."""
    import dagster as dg

    from rec_assets import defs

    graph = defs.get_repository_def().asset_graph
    assert dg.AssetKey("product_images") in graph.get(dg.AssetKey("user_recommendations")).parent_keys
