"""The artifact layout: every directory and file name under the artifact root, named once.

Every asset keeps its artifacts under `<root>/<asset name>` (a table asset as
`<root>/<asset name>.parquet`); readers and writers in `rec_core` and `rec_assets` take the
names from here, so a renamed file is renamed everywhere. File names derived from ids are
hashed, so no id or product name ever becomes a path.

    <root>/
      <table>.parquet              users, items, interactions, embeddings, recommendations, ...
      two_tower_model/             model.safetensors, model_config.json, preprocessing.json, metrics.json,
                                   training.json
      item_index/                  index.faiss, item_ids.json, item_vectors.safetensors, build_report.json
      model_evaluation/            metrics.json (every baseline)
      two_tower_beats_popularity/  test_scores.json (the release gate's scoring pass, by model version)
      synthetic_truth/             oracle.json + oracle.safetensors (synthetic data only)
      product_images/              <hash of item id>.png
      landed_interactions/         <content hash>.parquet
      checkpoints/<table>/         encoding progress of an embedding table
      two_tower_checkpoints/       training progress (local disk; see `storage.local_work_dir`)
      feature_store/               embedded Feast online store and registry (sqlite profile)
      releases/                    the served release pointer, its history and immutable copies
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

ARTIFACT_ROOT_ENV = "REC_ARTIFACT_ROOT"

# ---- directories under the root ----------------------------------------------------------------
MODEL_DIR = "two_tower_model"
ITEM_INDEX_DIR = "item_index"
MODEL_EVALUATION_DIR = "model_evaluation"
RELEASE_GATE_DIR = "two_tower_beats_popularity"
SYNTHETIC_TRUTH_DIR = "synthetic_truth"
PRODUCT_IMAGES_DIR = "product_images"
LANDED_INTERACTIONS_DIR = "landed_interactions"
ENCODING_CHECKPOINTS_DIR = "checkpoints"
TRAINING_CHECKPOINTS_DIR = "two_tower_checkpoints"
FEATURE_STORE_DIR = "feature_store"
RELEASES_DIR = "releases"

# ---- files ---------------------------------------------------------------------------------------
TABLE_SUFFIX = ".parquet"
MODEL_WEIGHTS = "model.safetensors"  # also the latest weights of a training checkpoint
MODEL_CONFIG = "model_config.json"
PREPROCESSING = "preprocessing.json"
METRICS = "metrics.json"  # in two_tower_model/ (validation) and model_evaluation/ (test, every baseline)
GATE_SCORES = "test_scores.json"
TRAINING_RECORD = "training.json"  # the run's training config, per-epoch history and timings
ORACLE_IDS = "oracle.json"
ORACLE_ARRAYS = "oracle.safetensors"
INDEX_FILE = "index.faiss"
IDS_FILE = "item_ids.json"
VECTORS_FILE = "item_vectors.safetensors"
REPORT_FILE = "build_report.json"  # written last: its presence marks a complete index on object storage
EXPORT_PREFIX = "recommendation_"  # tables a dataset folder holds as `recommendation_<kind>.parquet`


def default_artifact_root() -> str:
    """`$REC_ARTIFACT_ROOT`, else `data/artifacts` under the working directory (made absolute, so it
    names the same folder if the process later changes directory)."""
    return os.environ.get(ARTIFACT_ROOT_ENV) or str(Path.cwd() / "data" / "artifacts")


def table_file(name: str) -> str:
    """The file name of the table asset (or stored table) `name`."""
    return f"{name}{TABLE_SUFFIX}"


def exported_table_file(kind: str) -> str:
    """The file name of the `users`, `items` or `interactions` table in an exported dataset folder."""
    return table_file(f"{EXPORT_PREFIX}{kind}")


def id_hash(value: str, length: int = 16) -> str:
    """A stable hex digest of an id, safe as a file name."""
    return hashlib.sha256(str(value).encode("utf-8")).hexdigest()[:length]


def image_filename(item_id: str) -> str:
    """The file name of an item's product image, relative to the `product_images` artifact folder."""
    return f"{id_hash(item_id)}.png"


def image_link(item_id: str) -> str:
    """The `img_link` value of an item: its image path relative to the artifact root."""
    return f"{PRODUCT_IMAGES_DIR}/{image_filename(item_id)}"
