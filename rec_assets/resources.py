"""Dagster resources: where artifacts live, which device runs GPU work, and how tables are stored.

The storage profile is chosen by one environment variable, `REC_PROFILE` (`local`, the default,
or `production`); see `resources_for_profile`.
"""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg
import pandas as pd

from rec_core import storage


def _default_root() -> str:
    return os.environ.get("REC_ARTIFACT_ROOT", str(Path.cwd() / "data" / "artifacts"))


class ArtifactStore(dg.ConfigurableResource):
    """The artifact root: a local directory by default, `s3://bucket/prefix` for object storage.

    Each asset keeps its artifacts under `<root>/<asset name>`.
    """

    root: str = ""  # empty: $REC_ARTIFACT_ROOT, else ./data/artifacts

    def resolved_root(self) -> str:
        return self.root or _default_root()

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


class TableIOManager(dg.ConfigurableIOManager):
    """Stores DataFrame assets as parquet at `<root>/<asset key>.parquet`, written atomically."""

    root: str = ""

    def _path(self, key: dg.AssetKey):
        return storage.as_path(self.root or _default_root()).joinpath(*key.path[:-1], f"{key.path[-1]}.parquet")

    def handle_output(self, context: dg.OutputContext, obj: pd.DataFrame) -> None:
        if obj is None:
            return
        path = self._path(context.asset_key)
        storage.write_parquet(obj, path)
        context.add_output_metadata({"path": dg.MetadataValue.path(str(path))})

    def load_input(self, context: dg.InputContext) -> pd.DataFrame:
        path = self._path(context.asset_key)
        return storage.read_parquet(path).to_pandas()


def resources_for_profile(profile: str | None = None) -> dict:
    """The resource set of a storage profile; `REC_PROFILE` picks it when not given.

    `local`: artifacts under a local directory. `production`: artifacts under
    `REC_ARTIFACT_ROOT` (for example `s3://bucket/prefix`), which must be set.
    """
    profile = profile or os.environ.get("REC_PROFILE", "local")
    if profile == "local":
        root = ""
    elif profile == "production":
        root = dg.EnvVar("REC_ARTIFACT_ROOT")
    else:
        raise ValueError(f"unknown REC_PROFILE '{profile}': use local or production")
    return {
        "artifacts": ArtifactStore(root=root),
        "io_manager": TableIOManager(root=root),
        "device": DeviceResource(device=os.environ.get("REC_DEVICE", "auto")),
    }
