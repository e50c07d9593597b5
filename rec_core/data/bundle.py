"""The tables a model is trained, gated and evaluated on, carried as one object.

Training, the release gate and the baseline comparison all read the same six tables: users,
items, the split interactions and the three embedding tables (item text, user text, item
CLIP). `DataBundle` carries them together, so a signature names one argument instead of six and
no call can pass one model's users with another's items. Field names are the Dagster asset
names, so the assets build it with `DataBundle(**tables)`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import pandas as pd

EMBEDDING_TABLES = ("item_text_embeddings", "user_text_embeddings", "item_clip_embeddings")


@dataclass(frozen=True)
class DataBundle:
    users: pd.DataFrame
    items: pd.DataFrame
    interaction_splits: pd.DataFrame  # interactions with a `split` column: train, validation or test
    item_text_embeddings: pd.DataFrame | None = None  # None or empty: the model has no item text input
    user_text_embeddings: pd.DataFrame | None = None
    item_clip_embeddings: pd.DataFrame | None = None  # None or empty: CLIP is disabled

    @classmethod
    def table_names(cls) -> tuple[str, ...]:
        """The six tables, by their asset names."""
        return tuple(field.name for field in dataclasses.fields(cls))

    def embeddings(self) -> dict[str, pd.DataFrame | None]:
        """The three embedding tables as keyword arguments (`encode_items`, `prepare_training_data`, ...)."""
        return {name: getattr(self, name) for name in EMBEDDING_TABLES}

    def with_inputs(self, text: bool = True, images: bool = True) -> DataBundle:
        """The bundle with the text tables (`text=False`) or the CLIP table (`images=False`) left out, as a
        model trained without those inputs sees the data."""
        return dataclasses.replace(
            self,
            item_text_embeddings=self.item_text_embeddings if text else None,
            user_text_embeddings=self.user_text_embeddings if text else None,
            item_clip_embeddings=self.item_clip_embeddings if images else None,
        )

    def split(self, name: str) -> pd.DataFrame:
        """The interactions of one split (`train`, `validation` or `test`)."""
        return self.interaction_splits[self.interaction_splits["split"] == name]
