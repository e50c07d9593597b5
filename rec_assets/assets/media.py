"""Media group: product images for every item, drawn by a placeholder renderer or a diffusion model."""

import dagster as dg
import pandas as pd
from PIL import Image

from rec_assets.gpu import GPU_ASSET_KWARGS
from rec_assets.resources import ArtifactStore, DeviceResource
from rec_core.config_fields import config_from
from rec_core.data.paths import PRODUCT_IMAGES_DIR
from rec_core.generation.generate_images import ImageGenerationConfig, generate_images, image_inventory
from rec_core.images import gallery_markdown
from rec_core.progress import Progress


class ProductImagesConfig(dg.Config):
    """`ImageGenerationConfig`'s fields and defaults (the device comes from the `device` resource), plus the gallery."""

    backend: str = ImageGenerationConfig.backend  # placeholder (offline card) or diffusers (text-to-image model)
    model: str = ImageGenerationConfig.model  # diffusers: hub id (from the local cache) or a local directory
    image_size: int = (
        ImageGenerationConfig.image_size
    )  # square side in pixels; 0: 256 for placeholder, 512 for diffusers
    steps: int = ImageGenerationConfig.steps  # diffusers denoising steps
    guidance_scale: float = ImageGenerationConfig.guidance_scale  # diffusers classifier-free guidance
    batch_size: int = ImageGenerationConfig.batch_size  # diffusers prompts per forward pass
    seed: int = ImageGenerationConfig.seed  # combined with each item id
    replace_placeholders: bool = ImageGenerationConfig.replace_placeholders  # redraw placeholders with this backend
    gallery_size: int = 8  # sample thumbnails shown in the UI

    def generation_config(self, device: str) -> ImageGenerationConfig:
        return config_from(ImageGenerationConfig, dict(self), device=device)


@dg.asset(
    group_name="media",
    code_version="1",
    description="A PNG per item under <artifact root>/product_images, named by a hash of the item id; "
    "only items without an image are drawn.",
    **GPU_ASSET_KWARGS,
)
def product_images(
    context: dg.AssetExecutionContext,
    config: ProductImagesConfig,
    items: pd.DataFrame,
    artifacts: ArtifactStore,
    device: DeviceResource,
) -> dg.Output[pd.DataFrame]:
    output_dir = artifacts.path(PRODUCT_IMAGES_DIR)
    generation = config.generation_config(device.torch_device() if config.backend == "diffusers" else "cpu")
    report = generate_images(
        items, output_dir, generation, progress=Progress("product_images", context.log.info, unit="images")
    )
    context.log.info(f"{len(report.generated)} images drawn with {config.backend}, {report.existing} already present")
    inventory = image_inventory(items["item_id"], output_dir, {i: report.backend for i in report.generated})
    return dg.Output(
        inventory,
        metadata={
            "generated": float(len(report.generated)),
            "reused": float(report.existing),
            "images_per_s": float(report.images_per_s),
            "placeholders": float(inventory["is_placeholder"].sum()),
            "backend": config.backend,
            "gallery": dg.MetadataValue.md(_gallery(inventory, items, artifacts, config.gallery_size)),
        },
    )


def _gallery(inventory: pd.DataFrame, items: pd.DataFrame, artifacts: ArtifactStore, size: int) -> str:
    """Thumbnails of one image per top-level category (then further items) so the sample shows variety."""
    if inventory.empty or size <= 0:
        return "_no images_"
    named = inventory.merge(items[["item_id", "product_name", "category"]], on="item_id")
    named["top"] = named["category"].str.split("|").str[0]
    sample = pd.concat([named.drop_duplicates("top"), named]).drop_duplicates("item_id").head(size)
    images = []
    for row in sample.itertuples(index=False):
        with artifacts.path(row.image_path).open("rb") as fh:
            images.append((f"{row.item_id}: {row.product_name[:40]}", Image.open(fh).convert("RGB")))
    return gallery_markdown(images)
