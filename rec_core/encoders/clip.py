"""CLIP text and image embeddings in one space, through transformers.

Loads a hub id or a local directory holding a saved `CLIPModel` and its processor. Hub ids
honour `HF_HUB_OFFLINE`: offline, only weights already in the local cache load. When no weights
can be found this raises `ClipUnavailableError` rather than inventing vectors; callers decide
what runs without image features.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from rec_core.device import resolve_device

DEFAULT_CLIP_MODEL = "openai/clip-vit-base-patch32"

HOW_TO_ENABLE = (
    "On a machine with internet access run `hf download {model}` (weights land in the Hugging Face cache; "
    "copy that cache and point HF_HOME at it), or save a CLIPModel and CLIPProcessor with "
    "`save_pretrained(DIR)` and set REC_CLIP_MODEL=DIR; then re-materialize item_clip_embeddings."
)


class ClipUnavailableError(RuntimeError):
    """No CLIP weights could be loaded; carries the model name and a hint on how to provide them."""

    def __init__(self, model_name: str, reason: str):
        self.model_name, self.reason = model_name, reason
        self.how_to_enable = HOW_TO_ENABLE.format(model=model_name)
        super().__init__(f"CLIP model '{model_name}' cannot be loaded: {reason}")


def _looks_local(model_name: str) -> bool:
    return model_name.startswith((".", "/", "~")) or Path(model_name).exists()


class ClipEncoder:
    """Normalized CLIP vectors for texts and PIL images, shape [n, projection_dim]."""

    def __init__(self, model_name: str = DEFAULT_CLIP_MODEL, *, device: str = "auto", batch_size: int = 32):
        from transformers import CLIPModel, CLIPProcessor

        self.model_name = model_name or os.environ.get("REC_CLIP_MODEL", DEFAULT_CLIP_MODEL)
        self.device = resolve_device(device)
        self.batch_size = batch_size
        if _looks_local(self.model_name) and not Path(self.model_name).expanduser().is_dir():
            raise ClipUnavailableError(self.model_name, "the local directory does not exist")
        try:
            self.processor = CLIPProcessor.from_pretrained(self.model_name)
            self.model = CLIPModel.from_pretrained(self.model_name)
        except (OSError, ValueError) as exc:  # missing files, offline cache miss, invalid repo id
            raise ClipUnavailableError(self.model_name, str(exc).splitlines()[0]) from exc
        self.model.to(self.device).eval()
        if self.device.startswith("cuda"):
            self.model.half()

    @property
    def model_id(self) -> str:
        return self.model_name

    @property
    def dimension(self) -> int:
        return int(self.model.config.projection_dim)

    def encode_text(self, texts: list[str]) -> np.ndarray:
        """Unit vectors of texts, [len(texts), projection_dim]; cut at the model's 77-token context."""
        return self._encode(texts, self._text_batch)

    def encode_image(self, images: list) -> np.ndarray:
        """Unit vectors of PIL images, [len(images), projection_dim]."""
        return self._encode([image.convert("RGB") for image in images], self._image_batch)

    def _encode(self, inputs: list, encode_batch) -> np.ndarray:
        import torch

        if not inputs:
            return np.zeros((0, self.dimension), dtype=np.float32)
        chunks = []
        with torch.inference_mode():
            for start in range(0, len(inputs), self.batch_size):
                features = encode_batch(inputs[start : start + self.batch_size])  # [batch, projection_dim]
                chunks.append(torch.nn.functional.normalize(features.float(), dim=-1).cpu().numpy())
        return np.concatenate(chunks).astype(np.float32, copy=False)

    def _text_batch(self, texts: list[str]):
        max_length = self.model.config.text_config.max_position_embeddings
        tokens = self.processor.tokenizer(
            list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt"
        ).to(self.device)
        return self.model.get_text_features(**tokens).pooler_output

    def _image_batch(self, images: list):
        pixels = self.processor.image_processor(images=images, return_tensors="pt")["pixel_values"]
        pixels = pixels.to(self.device, dtype=self.model.dtype)  # [batch, 3, H, W]
        return self.model.get_image_features(pixel_values=pixels).pooler_output
