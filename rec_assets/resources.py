"""Dagster resources: where artifacts live, which device runs GPU work, and how tables are stored.

The storage profile is chosen by one environment variable, `REC_PROFILE` (`local`, the default,
or `production`); see `resources_for_profile`.
"""

from __future__ import annotations

import os

import dagster as dg
import pandas as pd

from rec_core import storage
from rec_core.data.frames import to_arrow, to_pandas
from rec_core.data.paths import ARTIFACT_ROOT_ENV, default_artifact_root, table_file
from rec_core.embeddings import checkpoint_directory, clear_checkpoint
from rec_core.encoders.text import TextEncoderConfig


class ArtifactStore(dg.ConfigurableResource):
    """The artifact root: a local directory by default, `s3://bucket/prefix` for object storage.

    Each asset keeps its artifacts under `<root>/<asset name>`.
    """

    root: str = ""  # empty: $REC_ARTIFACT_ROOT, else ./data/artifacts

    def resolved_root(self) -> str:
        return self.root or default_artifact_root()

    def path(self, *parts: str):
        """The path of an artifact under the root (a `Path` locally, a `UPath` remotely)."""
        base = storage.as_path(self.resolved_root())
        return base.joinpath(*parts)


class DeviceResource(dg.ConfigurableResource):
    """Which torch device GPU-capable assets use: `auto` (CUDA when present), `cpu`, `cuda`, `cuda:N`."""

    device: str = "auto"

    def torch_device(self) -> str:
        from rec_core.device import resolve_device

        return resolve_device(self.device)


class TextEncoderResource(dg.ConfigurableResource):
    """The sentence-transformers text encoder used for item and user text embeddings."""

    model: str = (
        TextEncoderConfig.model
    )  # name or local path; empty: $REC_TEXT_MODEL, else the packaged all-MiniLM-L6-v2
    batch_size: int = TextEncoderConfig.batch_size  # texts per forward pass
    max_seq_length: int = TextEncoderConfig.max_seq_length  # tokens kept per text

    def build(self, device: str):
        from rec_core.encoders import TextEncoder, TextEncoderConfig

        return TextEncoder(
            TextEncoderConfig(
                model=self.model, device=device, batch_size=self.batch_size, max_seq_length=self.max_seq_length
            )
        )


class ClipEncoderResource(dg.ConfigurableResource):
    """The CLIP model for image embeddings; without loadable weights the CLIP asset is disabled."""

    model: str = ""  # hub id (from the local cache) or local directory; empty: $REC_CLIP_MODEL, else openai/clip-vit-base-patch32
    batch_size: int = 32  # images per forward pass

    def model_name(self) -> str:
        from rec_core.encoders import DEFAULT_CLIP_MODEL

        return self.model or os.environ.get("REC_CLIP_MODEL") or DEFAULT_CLIP_MODEL

    def build(self, device: str):
        """A ClipEncoder, or ClipUnavailableError saying why and how to enable CLIP."""
        from rec_core.encoders import ClipEncoder

        return ClipEncoder(self.model_name(), device=device, batch_size=self.batch_size)


class FeastStoreResource(dg.ConfigurableResource):
    """The Feast feature store: embedded SQLite by default, PostgreSQL online store and registry on request."""

    profile: str = ""  # sqlite or postgres; empty: $REC_FEAST_PROFILE, else sqlite
    repo_path: str = ""  # the Feast repository; empty: $REC_FEATURE_REPO, else <project>/feature_repo
    data_dir: str = ""  # sqlite profile: where the online store and registry live; empty: <artifact root>/feature_store

    def store(self, artifacts: ArtifactStore):
        from rec_core import feature_store as feast_lib

        profile = self.profile or feast_lib.default_profile()
        data_dir = None
        if profile == "sqlite":
            data_dir = self.data_dir or feast_lib.default_data_dir(artifacts.resolved_root())
        return feast_lib.load_feature_store(self.repo_path or None, profile, data_dir)


class TableIOManager(dg.ConfigurableIOManager):
    """Stores DataFrame assets as parquet at `<root>/<asset key>.parquet`, written atomically."""

    root: str = ""

    def _path(self, key: dg.AssetKey):
        return storage.as_path(self.root or default_artifact_root()).joinpath(*key.path[:-1], table_file(key.path[-1]))

    def handle_output(self, context: dg.OutputContext, obj: pd.DataFrame) -> None:
        if obj is None:
            return
        path = self._path(context.asset_key)
        storage.write_parquet(to_arrow(obj), path)
        # Encoding checkpoints of this table are obsolete only now that the table is safely written.
        clear_checkpoint(checkpoint_directory(self.root or default_artifact_root(), context.asset_key.path[-1]))
        context.add_output_metadata({"path": dg.MetadataValue.path(str(path))})

    def load_input(self, context: dg.InputContext) -> pd.DataFrame:
        path = self._path(context.asset_key)
        return to_pandas(storage.read_parquet(path))


def resources_for_profile(profile: str | None = None) -> dict:
    """The resource set of a storage profile; `REC_PROFILE` picks it when not given.

    `local`: artifacts under a local directory. `production`: artifacts under
    `REC_ARTIFACT_ROOT` (for example `s3://bucket/prefix`), which must be set.
    """
    profile = profile or os.environ.get("REC_PROFILE", "local")
    if profile == "local":
        root = ""
    elif profile == "production":
        root = dg.EnvVar(ARTIFACT_ROOT_ENV)
    else:
        raise ValueError(f"unknown REC_PROFILE '{profile}': use local or production")
    return {
        "artifacts": ArtifactStore(root=root),
        "io_manager": TableIOManager(root=root),
        "device": DeviceResource(device=os.environ.get("REC_DEVICE", "auto")),
        "text_encoder": TextEncoderResource(),
        "clip_encoder": ClipEncoderResource(),
        "feast": FeastStoreResource(),
    }
