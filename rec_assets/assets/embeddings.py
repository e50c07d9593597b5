"""Embeddings group: text vectors of items and users, CLIP vectors of product images.

Each asset reads its own previous table from the artifact root and re-encodes only rows whose
input or model changed (`rec_core.embeddings`); vectors are stored as fixed-size float32 lists.
While encoding, each saves its progress under `<root>/checkpoints/<asset>`, so a killed run's
work is reused by the next one, and logs the rows done, their rate and an ETA to the run log.
"""

import dagster as dg
import pandas as pd
import pyarrow as pa

from rec_assets.gpu import GPU_ASSET_KWARGS
from rec_assets.resources import ArtifactStore, ClipEncoderResource, DeviceResource, TextEncoderResource
from rec_core.data.paths import table_file
from rec_core.data.validation import embedding_coverage
from rec_core.embeddings import (
    INPUT_HASH,
    MODEL_ID,
    Checkpoint,
    EmbeddingUpdate,
    checkpoint_directory,
    embedding_table,
    image_embeddings,
    preference_sentence,
    read_previous,
    text_embeddings,
)
from rec_core.encoders import ClipUnavailableError
from rec_core.progress import Progress

DISABLED_CLIP_TABLE = pa.table(
    {
        name: pa.array([], type)
        for name, type in [
            ("item_id", pa.string()),
            ("clip_embedding", pa.list_(pa.float32())),
            (MODEL_ID, pa.string()),
            (INPUT_HASH, pa.string()),
        ]
    }
)
"""What `item_clip_embeddings` stores when CLIP is disabled: no rows, the usual columns."""


def _metadata(update: EmbeddingUpdate, model_id: str) -> dict:
    return {
        "rows": float(len(update.table)),
        "encoded": float(update.encoded),
        "reused": float(update.reused),
        "encoded_vectors": float(update.encoded_vectors),
        "rows_per_s": float(update.rows_per_s),
        "encode_seconds": float(update.encode_seconds),
        "model_id": model_id,
        "dimension": float(update.dimension),
    }


def _checkpoint(artifacts: ArtifactStore, table_name: str, chunk_rows: int = Checkpoint.chunk_rows) -> Checkpoint:
    """Encoding progress is saved while running; TableIOManager clears it once the table is written,
    so a kill between encoding and writing still keeps the work."""
    return Checkpoint(
        checkpoint_directory(artifacts.resolved_root(), table_name), chunk_rows=chunk_rows, clear_when_done=False
    )


CLIP_CHUNK_ROWS = 256
"""Images per encoder call (and progress line): CLIP ViT-B/32 encodes tens of images a second on a CPU, so a
chunk takes about 10-30 s there; the text tables keep `Checkpoint.chunk_rows`."""


@dg.asset(
    group_name="embeddings",
    code_version="1",
    kinds={"pytorch"},
    description="Per item, L2-normalized text vectors of the product name and of the description (384-d by default).",
)
def item_text_embeddings(
    context: dg.AssetExecutionContext,
    items: pd.DataFrame,
    artifacts: ArtifactStore,
    device: DeviceResource,
    text_encoder: TextEncoderResource,
) -> dg.Output:
    encoder = text_encoder.build(device.torch_device())
    update = text_embeddings(
        "item_id",
        items["item_id"],
        {"name_embedding": items["product_name"], "description_embedding": items["about_product"]},
        encoder,
        previous=read_previous(artifacts.path(table_file("item_text_embeddings"))),
        checkpoint=_checkpoint(artifacts, "item_text_embeddings"),
        progress=Progress("item_text_embeddings", context.log.info, unit="items"),
    )
    table = embedding_table(update.table, ["name_embedding", "description_embedding"], update.dimension)
    return dg.Output(table, metadata=_metadata(update, encoder.model_id))


@dg.asset(
    group_name="embeddings",
    code_version="1",
    kinds={"pytorch"},
    description="Per user, a text vector of the stated preferences ('Interested in Audio, Kitchen'); "
    "users with none get the zero vector.",
)
def user_text_embeddings(
    context: dg.AssetExecutionContext,
    users: pd.DataFrame,
    artifacts: ArtifactStore,
    device: DeviceResource,
    text_encoder: TextEncoderResource,
) -> dg.Output:
    encoder = text_encoder.build(device.torch_device())
    sentences = users["preferences"].map(preference_sentence)
    update = text_embeddings(
        "user_id",
        users["user_id"],
        {"preferences_embedding": sentences},
        encoder,
        previous=read_previous(artifacts.path(table_file("user_text_embeddings"))),
        checkpoint=_checkpoint(artifacts, "user_text_embeddings"),
        progress=Progress("user_text_embeddings", context.log.info, unit="users"),
    )
    table = embedding_table(update.table, ["preferences_embedding"], update.dimension)
    return dg.Output(
        table,
        metadata={**_metadata(update, encoder.model_id), "users_without_preferences": float((sentences == "").sum())},
    )


@dg.asset(
    group_name="embeddings",
    code_version="1",
    description="Per item with an image, the L2-normalized CLIP image vector. Empty, with status 'disabled' "
    "and the reason in its metadata, when no CLIP weights are available.",
    **GPU_ASSET_KWARGS,
)
def item_clip_embeddings(
    context: dg.AssetExecutionContext,
    product_images: pd.DataFrame,
    artifacts: ArtifactStore,
    device: DeviceResource,
    clip_encoder: ClipEncoderResource,
) -> dg.Output:
    model = clip_encoder.model_name()
    try:
        encoder = clip_encoder.build(device.torch_device())
    except ClipUnavailableError as exc:
        context.log.warning(f"{exc}. {exc.how_to_enable}")
        return dg.Output(
            DISABLED_CLIP_TABLE,
            metadata={
                "status": "disabled",
                "reason": str(exc),
                "how_to_enable": exc.how_to_enable,
                "model_id": model,
                "rows": 0.0,
            },
        )
    update = image_embeddings(
        "item_id",
        product_images["item_id"],
        [artifacts.path(p) for p in product_images["image_path"]],
        encoder,
        "clip_embedding",
        previous=read_previous(artifacts.path(table_file("item_clip_embeddings"))),
        checkpoint=_checkpoint(artifacts, "item_clip_embeddings", CLIP_CHUNK_ROWS),
        progress=Progress("item_clip_embeddings", context.log.info, unit="images"),
    )
    table = embedding_table(update.table, ["clip_embedding"], update.dimension)
    return dg.Output(table, metadata={**_metadata(update, encoder.model_id), "status": "enabled"})


@dg.asset_check(
    asset=item_text_embeddings,
    additional_ins={"items": dg.AssetIn("items")},
    description="One row per item; every vector finite and of unit length (or zero for an empty text).",
)
def item_text_embeddings_cover_items(items: pd.DataFrame, item_text_embeddings: pd.DataFrame) -> dg.AssetCheckResult:
    counts = embedding_coverage(
        items["item_id"], item_text_embeddings, "item_id", ("name_embedding", "description_embedding")
    )
    missing = counts.pop("missing")
    return dg.AssetCheckResult(
        passed=missing == 0 and not any(counts.values()),
        metadata={"items_without_vectors": float(missing), **{f"bad_{c}": float(n) for c, n in counts.items()}},
    )
