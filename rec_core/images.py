"""Input hygiene for images that come from outside (uploads, search by image, external catalogs).

`load_image` returns a fully decoded RGB `PIL.Image` or raises `ImageInputError` naming the
source. It refuses what cannot be trusted (non-images, truncated files, decompression bombs,
oversized files) and converts what is merely unusual (alpha, palette, CMYK, 16-bit and float
modes, EXIF rotation, animated first frames). Pillow's process-wide limits are left untouched:
the pixel cap is checked per call from the header, before any pixel is decoded.
"""

from __future__ import annotations

import io
import os
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

DEFAULT_MAX_PIXELS = 40_000_000  # ~ 8000 x 5000; larger is refused before decoding
DEFAULT_MAX_BYTES = 50 * 1024 * 1024  # encoded size cap
BACKGROUND = (255, 255, 255)  # what transparent pixels become


class ImageInputError(ValueError):
    """An image that cannot be used; names the source and the problem."""

    def __init__(self, source: str, problem: str):
        self.source, self.problem = source, problem
        super().__init__(f"{source}: {problem}")


def load_image(
    source: bytes | str | os.PathLike,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_bytes: int = DEFAULT_MAX_BYTES,
    name: str | None = None,
) -> Image.Image:
    """Decodes `source` (raw bytes or a file path) into an RGB image; `name` labels bytes in errors."""
    label, raw = _read(source, max_bytes, name)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(raw))
            width, height = image.size
            if width <= 0 or height <= 0:
                raise ImageInputError(label, f"has an empty size {width}x{height}")
            if width * height > max_pixels:
                raise ImageInputError(
                    label, f"is {width}x{height} = {width * height:,} pixels, over the limit of {max_pixels:,}"
                )
            image.seek(0)  # animated formats: the first frame
            image.load()
    except ImageInputError:
        raise
    except UnidentifiedImageError:
        raise ImageInputError(label, "is not an image in a format Pillow can read") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageInputError(label, f"refused as a possible decompression bomb ({exc})") from None
    except (OSError, SyntaxError, ValueError) as exc:  # truncated or corrupt data
        raise ImageInputError(label, f"is truncated or corrupt ({exc})") from None
    return to_rgb(ImageOps.exif_transpose(image))


def to_rgb(image: Image.Image) -> Image.Image:
    """An RGB copy of any Pillow mode: alpha is flattened on white, high bit depths are scaled to 8 bits."""
    if image.mode == "RGB":
        return image
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        flat = Image.new("RGB", rgba.size, BACKGROUND)
        flat.paste(rgba, mask=rgba.getchannel("A"))
        return flat
    if image.mode.startswith("I") or image.mode == "F":
        sixteen_bit = image.mode.startswith("I;16")
        return Image.fromarray(_scale_to_uint8(np.asarray(image), sixteen_bit)).convert("RGB")
    return image.convert("RGB")  # 1, L, CMYK, YCbCr, LAB, HSV


def _scale_to_uint8(values: np.ndarray, sixteen_bit: bool) -> np.ndarray:
    """Maps integer or float pixels to 0..255: by the full range for 16-bit, else by the image's own range."""
    values = values.astype(np.float64)
    if sixteen_bit:
        scaled = values / 257.0
    else:
        low, high = float(values.min()), float(values.max())
        scaled = (values - low) / (high - low) * 255.0 if high > low else np.zeros_like(values)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def _read(source: bytes | str | os.PathLike, max_bytes: int, name: str | None) -> tuple[str, bytes]:
    if isinstance(source, (bytes, bytearray, memoryview)):
        raw = bytes(source)
        label = name or f"<{len(raw)} bytes>"
    else:
        label = name or str(source)
        try:
            size = os.path.getsize(source)
            if size > max_bytes:
                raise ImageInputError(label, f"is {size:,} bytes, over the limit of {max_bytes:,}")
            with open(source, "rb") as fh:
                raw = fh.read()
        except ImageInputError:
            raise
        except OSError as exc:
            raise ImageInputError(label, f"cannot be read ({exc.strerror or exc})") from None
    if not raw:
        raise ImageInputError(label, "is empty")
    if len(raw) > max_bytes:
        raise ImageInputError(label, f"is {len(raw):,} bytes, over the limit of {max_bytes:,}")
    return label, raw


def gallery_markdown(images: list[tuple[str, Image.Image]], thumbnail_px: int = 128) -> str:
    """A markdown gallery of (caption, image) pairs as inline base64 PNG thumbnails (for the Dagster UI)."""
    import base64

    images = [(caption.replace("|", "/"), image) for caption, image in images]  # a pipe would split the table cell
    cells = []
    for caption, image in images:
        thumbnail = image.copy()
        thumbnail.thumbnail((thumbnail_px, thumbnail_px))
        buffer = io.BytesIO()
        thumbnail.save(buffer, format="PNG", optimize=True)
        encoded = base64.b64encode(buffer.getvalue()).decode("ascii")
        cells.append(f"![{caption}](data:image/png;base64,{encoded})")
    captions = " | ".join(caption for caption, _ in images)
    return f"| {captions} |\n|{'---|' * len(images)}\n| {' | '.join(cells)} |" if images else "_no images_"
