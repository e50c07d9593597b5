"""Artifact file names derived from ids: hashed, so no id or product name ever becomes a path."""

from __future__ import annotations

import hashlib


def id_hash(value: str, length: int = 16) -> str:
    """A stable hex digest of an id, safe as a file name."""
    return hashlib.sha256(str(value).encode("utf-8")).hexdigest()[:length]


def image_filename(item_id: str) -> str:
    """The file name of an item's product image, relative to the `product_images` artifact folder."""
    return f"{id_hash(item_id)}.png"


def image_link(item_id: str) -> str:
    """The `img_link` value of an item: its image path relative to the artifact root."""
    return f"product_images/{image_filename(item_id)}"
