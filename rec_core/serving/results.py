"""What a serving request gives back: a ranked `Recommendations` list, or a `ServingError` saying why not.

The errors split by who must act (a web backend maps them to 4xx statuses): the caller sent
something malformed (`InvalidRequestError`), named an id the catalog or the users lack
(`UnknownItemError`, `UnknownUserError`), or asked for a capability whose artifacts were not
materialized (`FeatureUnavailableError`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass

DISPLAY_FIELDS = ("product_name", "category", "discounted_price", "actual_price", "rating", "rating_count", "img_link")
"""The item columns each `RecommendedItem` carries for display, besides its id and score."""


# ---- errors --------------------------------------------------------------------------------
class ServingError(ValueError):
    """A request that cannot be answered as asked; the message says why (a 4xx for a web backend)."""


class InvalidRequestError(ServingError):
    """Malformed arguments: k out of range, an empty query, an unreadable image, a bad filter."""


class UnknownItemError(ServingError, KeyError):
    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class UnknownUserError(ServingError, KeyError):
    def __str__(self) -> str:
        return str(self.args[0])


class FeatureUnavailableError(ServingError):
    """A capability whose artifacts are absent (CLIP disabled, no text embeddings, no model)."""


# ---- results -------------------------------------------------------------------------------
@dataclass(slots=True)
class RecommendedItem:
    item_id: str
    score: float
    match: str  # how it was found: "model", "similar", "exact_name", "prefix_name", "semantic", "image"
    product_name: str
    category: str
    discounted_price: float | None
    actual_price: float | None
    rating: float | None
    rating_count: int | None
    img_link: str | None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Recommendations(Sequence[RecommendedItem]):
    """A ranked list; `reason`: why it holds fewer than `requested` items; `release_id`: the release answering."""

    items: tuple[RecommendedItem, ...]
    requested: int
    reason: str | None = None
    release_id: str | None = None

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index):
        return self.items[index]

    def __iter__(self) -> Iterator[RecommendedItem]:
        return iter(self.items)

    @property
    def item_ids(self) -> list[str]:
        return [item.item_id for item in self.items]

    def to_dict(self) -> dict:
        return {
            "items": [item.to_dict() for item in self.items],
            "requested": self.requested,
            "reason": self.reason,
            "release_id": self.release_id,
        }
