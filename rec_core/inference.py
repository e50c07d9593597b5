"""Serving-side encoding: load a trained two-tower artifact and turn users / items into unit vectors.

The artifact directory (written by `rec_core.training.write_artifact`) holds only safetensors
and JSON, so loading never unpickles:
    model.safetensors     weights
    model_config.json     `TwoTowerConfig` (architecture + input sizes)
    preprocessing.json    `FittedPreprocessing` (scalers, vocabularies, the item-id vocabulary)
    metrics.json          evaluation results
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_model

from rec_core.data.paths import MODEL_CONFIG, MODEL_WEIGHTS, PREPROCESSING
from rec_core.models import TwoTower, TwoTowerConfig
from rec_core.preprocessing import FittedPreprocessing, ItemFeatures, UserFeatures

# Tower keyword -> feature attribute; a tower's optional inputs (text, image) may be None.
ITEM_TOWER_INPUTS = {
    "id_index": "id_index",
    "numerical": "numerical",
    "categorical": "categorical",
    "category_tokens": "category_tokens",
    "text": "text",
    "image": "image",
}
USER_TOWER_INPUTS = {
    "numerical": "numerical",
    "categorical": "categorical",
    "preference_tokens": "preference_tokens",
    "text": "text",
    "user_id_index": "id_index",
}


def _rows_on_device(tensor: torch.Tensor | None, rows: torch.Tensor, device: str | torch.device) -> torch.Tensor | None:
    """Rows `rows` of `tensor` on `device`; an absent optional input stays None."""
    return None if tensor is None else tensor[rows].to(device, non_blocking=True)


def _tower_inputs(
    features: ItemFeatures | UserFeatures, inputs: dict[str, str], rows: torch.Tensor, device: str | torch.device
) -> dict[str, torch.Tensor | None]:
    """The rows `rows` of each feature tensor named in `inputs`, keyed by tower keyword, on `device`."""
    return {
        keyword: _rows_on_device(getattr(features, attribute), rows, device) for keyword, attribute in inputs.items()
    }


def item_inputs(
    features: ItemFeatures, rows: torch.Tensor, device: str | torch.device
) -> dict[str, torch.Tensor | None]:
    """Keyword inputs of `ItemTower.forward` for item rows `rows` [B]."""
    return _tower_inputs(features, ITEM_TOWER_INPUTS, rows, device)


def user_inputs(
    features: UserFeatures, history: torch.Tensor, rows: torch.Tensor, device: str | torch.device
) -> dict[str, torch.Tensor | None]:
    """Keyword inputs of `UserTower.forward` for user rows `rows` [B]; `history` is [n_users, L]."""
    return _tower_inputs(features, USER_TOWER_INPUTS, rows, device) | {
        "history": _rows_on_device(history, rows, device)
    }


@torch.no_grad()
def encode_item_features(
    model: TwoTower, features: ItemFeatures, device: str | torch.device, batch_size: int = 4096
) -> torch.Tensor:
    """[n_items, dim] unit vectors, on `device`."""
    was_training = model.training
    model.eval()
    n = len(features.ids)
    out = [
        model.encode_items(**item_inputs(features, torch.arange(s, min(s + batch_size, n)), device))
        for s in range(0, n, batch_size)
    ]
    model.train(was_training)
    return torch.cat(out) if out else torch.zeros(0, model.config.embedding_dim, device=device)


@torch.no_grad()
def encode_user_features(
    model: TwoTower,
    features: UserFeatures,
    history: torch.Tensor,
    device: str | torch.device,
    rows: torch.Tensor | None = None,
    batch_size: int = 4096,
) -> torch.Tensor:
    """[len(rows), dim] unit vectors for user rows `rows` (all users by default), on `device`."""
    was_training = model.training
    model.eval()
    rows = torch.arange(len(features.ids)) if rows is None else rows
    out = [
        model.encode_users(**user_inputs(features, history, rows[s : s + batch_size], device))
        for s in range(0, len(rows), batch_size)
    ]
    model.train(was_training)
    return torch.cat(out) if out else torch.zeros(0, model.config.embedding_dim, device=device)


class TwoTowerEncoder:
    """A trained two-tower ready to encode raw user and item tables (the serving contract)."""

    def __init__(self, model: TwoTower, preprocessing: FittedPreprocessing, device: str = "cpu"):
        self.model = model.to(device).eval()
        self.preprocessing = preprocessing
        self.device = device

    @classmethod
    def load(cls, model_dir, device: str = "cpu") -> TwoTowerEncoder:
        """Reads model.safetensors + model_config.json + preprocessing.json (no pickle).

        `model_dir` may be on object storage (`s3://...`): the three files are then fetched to a
        temporary local folder first, since safetensors maps weights from a local file.
        """
        from rec_core import storage

        files = (MODEL_WEIGHTS, MODEL_CONFIG, PREPROCESSING)
        missing = [name for name in files if not (storage.as_path(model_dir) / name).is_file()]
        if missing:
            raise FileNotFoundError(f"{model_dir}: not a two-tower artifact, missing {', '.join(missing)}")
        with storage.local_copy(model_dir, files) as local:
            config = TwoTowerConfig(**json.loads((local / MODEL_CONFIG).read_text()))
            model = TwoTower(config)
            load_model(model, str(local / MODEL_WEIGHTS), strict=True, device="cpu")
            return cls(model, FittedPreprocessing.load(local / PREPROCESSING), device)

    @property
    def dim(self) -> int:
        return self.model.config.embedding_dim

    def encode_items(
        self,
        items: pd.DataFrame,
        item_text_embeddings: pd.DataFrame | None = None,
        item_clip_embeddings: pd.DataFrame | None = None,
        batch_size: int = 4096,
    ) -> tuple[list[str], np.ndarray]:
        """(item_ids, float32 [n, dim] L2-normalized). Missing text/image rows count as zeros."""
        features = self.preprocessing.transform_items(items, item_text_embeddings, item_clip_embeddings)
        vectors = encode_item_features(self.model, features, self.device, batch_size)
        return features.ids, vectors.float().cpu().numpy()

    def encode_users(
        self,
        users: pd.DataFrame,
        history: pd.DataFrame | None = None,
        user_text_embeddings: pd.DataFrame | None = None,
        batch_size: int = 4096,
    ) -> tuple[list[str], np.ndarray]:
        """(user_ids, float32 [n, dim] L2-normalized).

        `history`: interactions; each user's most recent positive ones (up to the fitted
        `max_history`) are summarised through the item-id embeddings. Users absent from it, or
        `history=None`, are encoded cold (demographics and stated preferences only).
        """
        features = self.preprocessing.transform_users(users, user_text_embeddings)
        history_rows = self.preprocessing.history_matrix(features.ids, history)
        vectors = encode_user_features(self.model, features, history_rows, self.device, batch_size=batch_size)
        return features.ids, vectors.float().cpu().numpy()
