"""Encoders that turn item and user text and product images into vectors."""

from rec_core.encoders.clip import DEFAULT_CLIP_MODEL, ClipEncoder, ClipUnavailableError
from rec_core.encoders.text import (
    PACKAGED_MODEL_NAME,
    TextEncoder,
    TextEncoderConfig,
    packaged_model_path,
    resolve_text_model,
)

__all__ = [
    "DEFAULT_CLIP_MODEL",
    "PACKAGED_MODEL_NAME",
    "ClipEncoder",
    "ClipUnavailableError",
    "TextEncoder",
    "TextEncoderConfig",
    "packaged_model_path",
    "resolve_text_model",
]
