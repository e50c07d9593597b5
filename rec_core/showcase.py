"""A user's latest items beside their recommendations, for people to judge at a glance.

Two places show this picture: the explorer page of the recommendation service (history and
recommendation cards for the user picked) and the `user_recommendations` asset's metadata in the
Dagster UI (one image grid for a few sample users). So "which items a user touched last" and
"how such a row of product images is drawn" are defined here, once.

Product images are the `product_images` asset's files, found through the artifact root by the
hashed item id (`rec_core.data.paths.image_link`); an item without one is drawn as a grey tile,
so a missing image shows as missing rather than breaking the picture.
"""

from __future__ import annotations

import base64
import io
import os
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd
from PIL import Image, ImageDraw, ImageFont

from rec_core.data.paths import image_link
from rec_core.images import ImageInputError, load_image
from rec_core.storage import as_path

HISTORY_KEPT = 20  # latest interactions kept per user: what a page or grid shows, not the full log
CARD_FIELDS = ("product_name", "category", "discounted_price", "rating")


class UserHistory:
    """Each user's latest interactions, newest first, with the item fields a card shows.

    Built once from the `interactions` and `items` tables (a group-by, then dictionaries), so a
    request for a user's history is a lookup. Items missing from the item table still appear,
    with their id only: the history is what happened, whatever the catalog holds today.
    """

    def __init__(self, interactions: pd.DataFrame, items: pd.DataFrame | None = None, keep: int = HISTORY_KEPT):
        latest = (
            interactions.sort_values("timestamp", ascending=False, kind="stable")
            .groupby("user_id", sort=False)
            .head(keep)
        )
        timestamps = pd.to_datetime(latest["timestamp"], utc=True).dt.strftime("%Y-%m-%dT%H:%M:%SZ")
        self._events: dict[str, list[tuple[str, str, str]]] = {}
        for user_id, item_id, kind, when in zip(
            latest["user_id"].astype(str),
            latest["item_id"].astype(str),
            latest["interaction_type"].astype(str),
            timestamps,
        ):
            self._events.setdefault(user_id, []).append((item_id, kind, when))
        counts = interactions["user_id"].astype(str).value_counts().rename("n").rename_axis("user_id").reset_index()
        self._by_activity = counts.sort_values(["n", "user_id"], ascending=[False, True])["user_id"].tolist()
        items = pd.DataFrame(columns=["item_id"]) if items is None else items  # None: ids only, no card fields
        fields = [name for name in CARD_FIELDS if name in items]
        catalog = items.drop_duplicates("item_id", keep="last")
        self._cards = {
            str(item_id): {name: _plain(value) for name, value in zip(fields, values)}
            for item_id, *values in catalog[["item_id", *fields]].itertuples(index=False)
        }

    @classmethod
    def from_release(cls, root: str | os.PathLike, release: dict | None, keep: int = HISTORY_KEPT) -> UserHistory:
        """From the `interactions` and `items` tables of a release of `root` (`rec_core.release`; None: a root
        without releases, read as it lies), either of which may be absent."""
        from rec_core.release import artifact_paths
        from rec_core.storage import read_table_file

        paths = artifact_paths(root, release)
        interactions, items = (
            read_table_file(paths[name], name, required=False) if name in paths else None
            for name in ("interactions", "items")
        )
        if interactions is None:
            interactions = pd.DataFrame(columns=["user_id", "item_id", "interaction_type", "timestamp"])
        return cls(interactions, items, keep)

    def recent(self, user_id: str, n: int = 10) -> list[dict]:
        """The user's last `n` interactions, newest first: item_id, interaction_type, timestamp and card fields."""
        return [
            {"item_id": item_id, "interaction_type": kind, "timestamp": when, **self._cards.get(item_id, {})}
            for item_id, kind, when in self._events.get(str(user_id), [])[:n]
        ]

    def recent_item_ids(self, user_id: str, n: int = 10) -> list[str]:
        return [item_id for item_id, _, _ in self._events.get(str(user_id), [])[:n]]

    def active_users(self, limit: int) -> list[str]:
        """Up to `limit` user ids, most interactions first: users with a history worth looking at."""
        return self._by_activity[:limit]


def product_image(root: str | os.PathLike, item_id: str) -> Image.Image | None:
    """The item's product image from the artifact root, or None when it has none (or it is unreadable)."""
    path = as_path(root) / image_link(item_id)
    try:
        return load_image(path.read_bytes(), name=str(path))
    except (FileNotFoundError, ImageInputError):
        return None


# ---- the grid -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GridRow:
    """One user's line: a label, their latest items and their recommendations, each (caption, image or None)."""

    label: str
    history: Sequence[tuple[str, Image.Image | None]]
    recommendations: Sequence[tuple[str, Image.Image | None]]


TILE_PX = 96
_GAP = 8
_CAPTION_LINES = 2
_TEXT = (30, 30, 30)
_MISSING = (215, 215, 215)


def recommendation_grid(rows: Sequence[GridRow], tile_px: int = TILE_PX) -> Image.Image:
    """Per user: a label line, then the latest items, a divider, and the recommendations, each tile captioned."""
    font = ImageFont.load_default(size=max(9, tile_px // 9))
    line_px = font.size + 2
    columns = max((len(r.history) + len(r.recommendations) for r in rows), default=0)
    width = max(2 * _GAP + columns * (tile_px + _GAP) + 3 * _GAP, 480)
    header_px = 2 * line_px + _GAP
    row_px = header_px + tile_px + _CAPTION_LINES * line_px + 2 * _GAP
    grid = Image.new("RGB", (width, max(1, len(rows)) * row_px), "white")
    draw = ImageDraw.Draw(grid)
    for r, row in enumerate(rows):
        top = r * row_px + _GAP
        draw.text((_GAP, top), row.label, font=font, fill=_TEXT)
        x = _GAP
        for title, tiles in (("latest items", row.history), ("recommended", row.recommendations)):
            draw.text((x, top + line_px), title if tiles else f"{title}: none", font=font, fill=(90, 90, 90))
            for caption, image in tiles:
                _draw_tile(grid, draw, (x, top + header_px), image, caption, tile_px, font, line_px)
                x += tile_px + _GAP
            if title == "latest items":
                draw.line(
                    (x + _GAP // 2, top + header_px, x + _GAP // 2, top + header_px + tile_px), fill=_TEXT, width=2
                )
                x += 3 * _GAP
        if r:
            draw.line((0, r * row_px, width, r * row_px), fill=_MISSING, width=1)
    return grid


def _draw_tile(
    grid: Image.Image,
    draw: ImageDraw.ImageDraw,
    corner: tuple[int, int],
    image: Image.Image | None,
    caption: str,
    tile_px: int,
    font,
    line_px: int,
) -> None:
    x, y = corner
    if image is None:
        draw.rectangle((x, y, x + tile_px - 1, y + tile_px - 1), fill=_MISSING)
        draw.text((x + tile_px // 2, y + tile_px // 2), "no image", font=font, fill=_TEXT, anchor="mm")
    else:
        thumbnail = image.copy()
        thumbnail.thumbnail((tile_px, tile_px))
        grid.paste(thumbnail, (x + (tile_px - thumbnail.width) // 2, y + (tile_px - thumbnail.height) // 2))
    chars = max(6, int(tile_px / (font.size * 0.55)))
    for i, line in enumerate(textwrap.wrap(caption, chars)[:_CAPTION_LINES]):
        draw.text((x, y + tile_px + 2 + i * line_px), line, font=font, fill=_TEXT)


def sample_users_grid(
    recommendations: pd.DataFrame,
    interactions: pd.DataFrame,
    root: str | os.PathLike,
    n_users: int = 3,
    n_items: int = 5,
) -> Image.Image:
    """The grid for `n_users` users spread evenly over the `recommendations` table (`user_id`,
    `top_k_item_ids`, `top_k_scores`, in user id order): each with their latest `n_items` items
    (from `interactions`) and their top `n_items` recommendations, product images from `root`."""
    table = recommendations.sort_values("user_id", kind="stable").reset_index(drop=True)
    picks = sorted({round(i * (len(table) - 1) / max(1, n_users - 1)) for i in range(n_users)}) if len(table) else []
    users = [str(table.at[position, "user_id"]) for position in picks]
    history = UserHistory(interactions[interactions["user_id"].astype(str).isin(users)], keep=n_items)
    rows = []
    for position, user_id in zip(picks, users):
        latest = [(item_id, product_image(root, item_id)) for item_id in history.recent_item_ids(user_id, n_items)]
        top = [
            (f"{item_id} {score:.2f}", product_image(root, item_id))
            for item_id, score in zip(
                list(table.at[position, "top_k_item_ids"])[:n_items], list(table.at[position, "top_k_scores"])
            )
        ]
        rows.append(GridRow(f"user {user_id}", latest, top))
    return recommendation_grid(rows)


def markdown_image(image: Image.Image, alt: str) -> str:
    """`image` as an inline base64 PNG in markdown (the Dagster UI renders it)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return f"![{alt}](data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode('ascii')})"


def _plain(value):
    """A JSON-ready value: numpy scalars as Python numbers, missing values as None."""
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    return value.item() if hasattr(value, "item") else value
