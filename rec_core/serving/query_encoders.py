"""The encoders that turn a request into a vector: text (search queries, stated preferences) and CLIP images.

They are loaded on first use, not at `Recommender.load`, because most backends never search by
image and a model load takes seconds. Each is kept per model name: a reload may bring item
embeddings of another model, and queries must be encoded by the model that built them.
"""

from __future__ import annotations

import threading

from rec_core.serving.config import RecommenderConfig
from rec_core.serving.results import FeatureUnavailableError


class QueryEncoders:
    """A text and a CLIP encoder, each created once per model name, under a lock (requests share them)."""

    def __init__(self, config: RecommenderConfig):
        self.config = config
        self._lock = threading.Lock()
        self._text = None  # (model name, TextEncoder)
        self._clip = None  # (model name, ClipEncoder)

    def text(self, model_of_items: str):
        """The query text encoder: `config.text_model`, else `model_of_items` (the one that built the item vectors)."""
        model = self.config.text_model or model_of_items
        with self._lock:
            if self._text is None or self._text[0] != model:
                from rec_core.encoders.text import TextEncoder, TextEncoderConfig

                self._text = (model, TextEncoder(TextEncoderConfig(model=model, device=self.config.device)))
            return self._text[1]

    def clip(self, model_of_items: str):
        """The CLIP image encoder (`config.clip_model`, else `model_of_items`); `FeatureUnavailableError` without it."""
        model = self.config.clip_model or model_of_items
        with self._lock:
            if self._clip is None or self._clip[0] != model:
                from rec_core.encoders.clip import ClipEncoder, ClipUnavailableError

                try:
                    self._clip = (model, ClipEncoder(model, device=self.config.device))
                except ClipUnavailableError as exc:
                    raise FeatureUnavailableError(
                        f"search by image is unavailable: {exc}. {exc.how_to_enable}"
                    ) from None
            return self._clip[1]
