"""Product images for items that have none: a text-to-image model, or an offline placeholder card.

Backends:
- `placeholder` (default): a deterministic card (256 px by default) drawn with PIL from the item's category,
  name and price, marked PLACEHOLDER. Needs no weights and takes about a millisecond an image.
- `diffusers`: a text-to-image pipeline (default Stable Diffusion v1.5) from a hub id or a local
  directory, fp16 on CUDA, batched, seeded per item, prompted with the product name and description.

Files are named by a hash of the item id (`rec_core.data.paths.image_filename`), never by product
name, written atomically in batches with one durability barrier per batch, and tagged inside the
PNG with the backend that made them, so a later run can tell placeholders from real images. Items
whose file already exists are skipped.

Command line: `python -m rec_core.generation.generate_images --items items.parquet --output DIR`.
"""

from __future__ import annotations

import argparse
import colorsys
import functools
import hashlib
import io
import os
import sys
import textwrap
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import pandas as pd
from PIL import Image, ImageDraw, ImageFont, PngImagePlugin

from rec_core import storage
from rec_core.config_fields import config_from
from rec_core.data.paths import image_filename, image_link
from rec_core.data.validation import DataValidationError
from rec_core.progress import Progress

BACKENDS = ("placeholder", "diffusers")
DEFAULT_DIFFUSION_MODEL = "runwayml/stable-diffusion-v1-5"
BACKEND_TAG = "rec_backend"  # PNG text chunk naming the backend that drew the image
REQUIRED_COLUMNS = ("item_id", "product_name", "category", "discounted_price", "about_product")


@dataclass
class ImageGenerationConfig:
    backend: str = "placeholder"  # placeholder (offline PIL card) or diffusers (text-to-image model)
    model: str = DEFAULT_DIFFUSION_MODEL  # diffusers: hub id or local directory of a saved pipeline
    device: str = "auto"  # diffusers: auto picks CUDA when present (fp16 there, fp32 on CPU)
    image_size: int = 0  # square side in pixels; 0: 256 for placeholder, 512 for diffusers (SD v1.5's training size)
    steps: int = 25  # diffusers denoising steps
    guidance_scale: float = 7.5  # diffusers classifier-free guidance
    batch_size: int = 4  # diffusers prompts per forward pass
    seed: int = 0  # combined with each item id, so an item's image does not depend on its batch
    replace_placeholders: bool = False  # regenerate items whose existing image is a placeholder

    def __post_init__(self):
        if self.backend not in BACKENDS:
            raise ValueError(f"unknown image backend '{self.backend}': use one of {', '.join(BACKENDS)}")
        if not self.image_size:
            self.image_size = 512 if self.backend == "diffusers" else 256


@dataclass
class GenerationReport:
    backend: str
    generated: list[str] = field(default_factory=list)  # item ids drawn in this run
    existing: int = 0  # items whose image was already there
    seconds: float = 0.0  # time spent drawing and writing

    @property
    def images_per_s(self) -> float:
        return len(self.generated) / self.seconds if self.seconds > 0 else 0.0


class ImageGenerationError(RuntimeError):
    """The configured backend cannot run (for example, its weights are not available offline)."""


def build_prompt(product_name: str, description: str, max_words: int = 30) -> str:
    """A product-photo prompt from the name and the start of the description (CLIP reads 77 tokens)."""
    words = str(description or "").split()
    detail = " ".join(words[:max_words]).rstrip(". ")
    return f"Professional studio product photo of {product_name}. {detail}. White background, high detail."


def item_seed(seed: int, item_id: str) -> int:
    digest = hashlib.sha256(f"{seed}:{item_id}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & 0x7FFF_FFFF_FFFF_FFFF


class PlaceholderRenderer:
    """Draws a product card: a coloured band for the top category, the leaf, the name and the price."""

    name = "placeholder"

    def __init__(self, config: ImageGenerationConfig):
        self.size = config.image_size

    def render(self, items: pd.DataFrame) -> list[Image.Image]:
        return [self._card(row) for row in items.itertuples(index=False)]

    def _card(self, item) -> Image.Image:
        size = self.size
        path = [part for part in str(item.category).split("|") if part]
        band_color, _ = _category_colors(path[0] if path else "")
        image = _card_background(size, path[0] if path else "", (path[-1] if path else "")[:28]).copy()
        draw = ImageDraw.Draw(image)
        lines = textwrap.wrap(str(item.product_name), width=22)[:4]
        draw.multiline_text(
            (size // 16, size // 6 + size // 7),
            "\n".join(lines),
            font=_font(size // 14),
            fill=(30, 30, 30),
            spacing=size // 64,
        )
        draw.text(
            (size - size // 16, size - size // 16),
            f"{float(item.discounted_price):,.2f}",
            font=_font(size // 9),
            fill=(20, 20, 20),
            anchor="rs",
        )
        draw.rectangle((0, 0, size - 1, size - 1), outline=band_color, width=max(1, size // 64))
        return image


@functools.lru_cache(maxsize=128)
def _card_background(size: int, top_category: str, leaf: str) -> Image.Image:
    """What every card of one category shares (tint, band, PLACEHOLDER, leaf name), drawn once and copied:
    text rendering is most of a card's cost."""
    band_color, tint = _category_colors(top_category)
    image = Image.new("RGB", (size, size), tint)
    draw = ImageDraw.Draw(image)
    band = size // 6
    draw.rectangle((0, 0, size, band), fill=band_color)
    draw.text((size // 2, band // 2), "PLACEHOLDER", font=_font(max(8, band // 2)), fill="white", anchor="mm")
    draw.text((size // 16, band + size // 20), leaf, font=_font(size // 16), fill=band_color)
    return image


@functools.lru_cache(maxsize=16)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def _category_colors(top_category: str) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """A strong band colour and a pale background, both derived from the top-level category name."""
    hue = int(hashlib.sha256(top_category.encode()).hexdigest()[:4], 16) / 0xFFFF

    def rgb(lightness: float, saturation: float) -> tuple[int, int, int]:
        red, green, blue = colorsys.hls_to_rgb(hue, lightness, saturation)
        return int(255 * red), int(255 * green), int(255 * blue)

    return rgb(0.35, 0.6), rgb(0.94, 0.5)


class DiffusersRenderer:
    """A diffusers text-to-image pipeline: fp16 on CUDA, fp32 on CPU, one seeded generator per item."""

    name = "diffusers"

    def __init__(self, config: ImageGenerationConfig):
        import torch
        from diffusers import AutoPipelineForText2Image

        from rec_core.device import resolve_device

        if config.image_size % 8:
            raise ValueError(f"image_size must be a multiple of 8 for diffusers, got {config.image_size}")
        self.config = config
        self.device = resolve_device(config.device)
        dtype = torch.float16 if self.device.startswith("cuda") else torch.float32
        try:
            self.pipeline = AutoPipelineForText2Image.from_pretrained(config.model, dtype=dtype)
        except (OSError, ValueError) as exc:
            raise ImageGenerationError(
                f"diffusers model '{config.model}' cannot be loaded ({str(exc).splitlines()[0]}); download it where "
                "there is internet (`hf download MODEL`) or pass a local directory, or use --backend placeholder"
            ) from exc
        self.pipeline.to(self.device)
        self.pipeline.set_progress_bar_config(disable=True)

    def render(self, items: pd.DataFrame) -> list[Image.Image]:
        import torch

        prompts = [
            build_prompt(name, about) for name, about in zip(items["product_name"], items["about_product"], strict=True)
        ]
        generators = [torch.Generator("cpu").manual_seed(item_seed(self.config.seed, i)) for i in items["item_id"]]
        with torch.inference_mode():
            result = self.pipeline(
                prompt=prompts,
                negative_prompt=["text, watermark, blurry, low quality"] * len(prompts),
                num_inference_steps=self.config.steps,
                guidance_scale=self.config.guidance_scale,
                height=self.config.image_size,
                width=self.config.image_size,
                generator=generators,
                output_type="pil",
            )
        return [image.convert("RGB") for image in result.images]


def make_renderer(config: ImageGenerationConfig) -> PlaceholderRenderer | DiffusersRenderer:
    return DiffusersRenderer(config) if config.backend == "diffusers" else PlaceholderRenderer(config)


def image_backend(path) -> str | None:
    """The backend recorded inside an image written here; None for a missing or foreign file."""
    try:
        with storage.as_path(path).open("rb") as fh, Image.open(fh) as image:
            return image.info.get(BACKEND_TAG)
    except (OSError, ValueError):
        return None


def items_needing_images(items: pd.DataFrame, output_dir, replace_placeholders: bool = False) -> pd.DataFrame:
    """The items with no image file in `output_dir` (plus placeholder ones, when they are to be replaced)."""
    directory = storage.as_path(output_dir)
    present = {p.name for p in directory.iterdir()} if directory.exists() else set()
    names = items["item_id"].map(image_filename)
    missing = ~names.isin(present)
    if replace_placeholders:
        missing |= names.map(lambda n: n in present and image_backend(directory / n) == "placeholder")
    return items[missing]


def image_inventory(item_ids, output_dir, known_backends: dict[str, str] | None = None) -> pd.DataFrame:
    """The items whose image file exists: item_id, image_path (relative to the artifact root), backend, is_placeholder.

    The backend comes from `known_backends` (what this run drew) or from the tag inside the file;
    files drawn elsewhere have backend `external`.
    """
    directory = storage.as_path(output_dir)
    present = {p.name for p in directory.iterdir()} if directory.exists() else set()
    ids = pd.Series(list(map(str, item_ids)), dtype=object)
    names = ids.map(image_filename)
    ids, names = ids[names.isin(present)], names[names.isin(present)]
    known = known_backends or {}
    backends = pd.Series(
        [
            known.get(item_id) or image_backend(directory / name) or "external"  # opens unknown files
            for item_id, name in zip(ids, names, strict=True)
        ],
        dtype=object,
    )
    return pd.DataFrame(
        {
            "item_id": ids.to_numpy(dtype=str),
            "image_path": ids.map(image_link).to_numpy(dtype=str),
            "backend": backends.to_numpy(dtype=str),
            "is_placeholder": (backends == "placeholder").to_numpy(dtype=bool),
        }
    )


PLACEHOLDER_BATCH = 64
"""Placeholder cards drawn, encoded and published together: one durability barrier per batch."""


def generate_images(
    items: pd.DataFrame, output_dir, config: ImageGenerationConfig | None = None, *, progress: Progress | None = None
) -> GenerationReport:
    """Draws and writes an image for every item that lacks one; returns what was done.

    The main thread draws batch k+1 while a publisher thread encodes batch k to PNG (in parallel:
    zlib releases the GIL) and writes it with `storage.write_files`: each file complete under a
    temporary name, one durability barrier for the batch, then the renames. A killed run keeps
    every batch published before the kill; the next run draws the rest.
    """
    config = config or ImageGenerationConfig()
    progress = progress or Progress("product_images", unit="images")
    missing_columns = [c for c in REQUIRED_COLUMNS if c not in items.columns]
    if missing_columns:
        raise DataValidationError("items", ", ".join(missing_columns), len(items), "required for image generation")
    storage.remove_stale_temporaries(output_dir)
    todo = items_needing_images(items, output_dir, config.replace_placeholders)
    report = GenerationReport(backend=config.backend, existing=len(items) - len(todo))
    if todo.empty:
        return report
    renderer = make_renderer(config)
    directory = storage.as_path(output_dir)
    batch_size = config.batch_size if config.backend == "diffusers" else PLACEHOLDER_BATCH
    start = time.perf_counter()
    progress.start(len(todo))
    with ThreadPoolExecutor(max_workers=4) as encoders, ThreadPoolExecutor(max_workers=1) as publisher:
        pending: Future | None = None
        for begin in range(0, len(todo), batch_size):
            ids = [str(i) for i in todo["item_id"].iloc[begin : begin + batch_size]]
            images = renderer.render(todo.iloc[begin : begin + batch_size])
            _wait_published(pending, progress)  # at most two batches of decoded images in memory
            pending = publisher.submit(
                _publish, encoders, images, renderer.name, [directory / image_filename(i) for i in ids]
            )
            report.generated.extend(ids)
        _wait_published(pending, progress)
    progress.finish()
    report.seconds = time.perf_counter() - start
    return report


def _wait_published(batch: Future | None, progress: Progress) -> None:
    if batch is not None:
        progress.advance(batch.result())  # re-raises a failed write


def _publish(encoders: ThreadPoolExecutor, images: list[Image.Image], backend: str, paths: list) -> int:
    """Encodes a batch of images to PNG and writes them with one durability barrier; returns how many."""
    blobs = encoders.map(lambda image: _png_bytes(image, backend), images)
    storage.write_files(dict(zip(paths, blobs, strict=True)))
    return len(paths)


def _png_bytes(image: Image.Image, backend: str) -> bytes:
    info = PngImagePlugin.PngInfo()
    info.add_text(BACKEND_TAG, backend)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info, compress_level=1)
    return buffer.getvalue()


def main(argv: list[str] | None = None) -> int:
    defaults = ImageGenerationConfig()
    parser = argparse.ArgumentParser(
        prog="python -m rec_core.generation.generate_images",
        description="Generate product images for items that have none.",
    )
    parser.add_argument("--items", required=True, help="items table (.parquet or .csv) in the items schema")
    parser.add_argument("--output", required=True, help="image directory (the `product_images` artifact folder)")
    parser.add_argument("--backend", choices=BACKENDS, default=defaults.backend)
    parser.add_argument("--model", default=defaults.model, help="diffusers: hub id or local directory")
    parser.add_argument("--device", default=defaults.device)
    parser.add_argument("--image-size", type=int, default=0, help="0: 256 for placeholder, 512 for diffusers")
    parser.add_argument("--steps", type=int, default=defaults.steps)
    parser.add_argument("--guidance-scale", type=float, default=defaults.guidance_scale)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--replace-placeholders", action="store_true")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never download at run time; a cached or local model is used
    items = storage.read_input_table(args.items, "items").to_pandas()
    config = config_from(ImageGenerationConfig, vars(args))
    try:
        report = generate_images(items, args.output, config, progress=Progress(f"images ({config.backend})", bar=True))
    except (ImageGenerationError, DataValidationError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(
        f"{len(report.generated)} generated ({report.images_per_s:.1f} images/s), {report.existing} already present "
        f"in {args.output}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
