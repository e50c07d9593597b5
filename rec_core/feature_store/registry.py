"""The Feast definitions: loaded from the repository, applied to the registry with a report of what changed.

`apply_definitions` does what `feast apply` does (objects missing from the definitions are
removed) but plans first, writes nothing when nothing differs, and says per object what changed,
down to renamed fields, for the `feast_registry` asset's metadata.
"""

from __future__ import annotations

import hashlib
import importlib.util
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

from rec_core.feature_store import views
from rec_core.feature_store.outages import database_errors
from rec_core.feature_store.settings import PROFILE_FILES, default_artifact_root, default_repo_path

if TYPE_CHECKING:  # pragma: no cover
    from feast import FeatureStore

_definition_modules: dict[Path, ModuleType] = {}


def _features_module(repo_path: str | Path | None) -> ModuleType:
    """The repository's `features.py`, loaded once per path (it has no import-time side effects)."""
    path = (Path(repo_path or default_repo_path()) / "features.py").resolve()
    if path not in _definition_modules:
        spec = importlib.util.spec_from_file_location(f"rec_feature_repo_{abs(hash(path))}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        _definition_modules[path] = module
    return _definition_modules[path]


def load_definitions(repo_path: str | Path | None = None, artifact_root: str | None = None) -> list:
    """Every Feast object of the repository, with offline sources under `artifact_root`.

    Its feature views must be the registry's (`rec_core.feature_store.views`): a view declared
    only in `features.py` would never be loaded, and one missing there could not be loaded into.
    """
    from feast import FeatureView

    objects = _features_module(repo_path).build_definitions(artifact_root or default_artifact_root())
    declared = {obj.name for obj in objects if isinstance(obj, FeatureView)}
    listed = {view.name for view in views.ALL_VIEWS}
    if declared != listed:
        differences = (
            ("declared but not in the registry", declared - listed),
            ("in the registry but not declared", listed - declared),
        )
        problems = [f"{label}: {', '.join(sorted(names))}" for label, names in differences if names]
        raise ValueError(
            f"{Path(repo_path or default_repo_path()) / 'features.py'}: its feature views differ from "
            f"rec_core.feature_store.views ({'; '.join(problems)})"
        )
    return objects


def definitions_version(repo_path: str | Path | None = None) -> str:
    """A digest of the definitions, the view registry and the store configurations: changes when `feast apply` could."""
    repo = Path(repo_path or default_repo_path())
    files = {name: repo / name for name in ("features.py", *PROFILE_FILES.values())}
    files["views.py"] = Path(views.__file__)
    digest = hashlib.sha256()
    for name, path in files.items():
        digest.update(name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def _repo_contents(objects: Iterable):
    """Feast's `RepoContents` for a list of objects, collected as `feast apply` collects a repository."""
    from feast import Entity, FeatureService, FeatureView, Project
    from feast.data_source import DataSource
    from feast.feature_view import DUMMY_ENTITY
    from feast.repo_contents import RepoContents

    contents = RepoContents(
        projects=[],
        data_sources=[],
        entities=[],
        feature_views=[],
        feature_services=[],
        on_demand_feature_views=[],
        stream_feature_views=[],
        label_views=[],
        permissions=[],
    )

    def add_source(source) -> None:
        if source is not None and not any(source is known for known in contents.data_sources):
            contents.data_sources.append(source)

    for obj in objects:
        if isinstance(obj, Project):
            contents.projects.append(obj)
        elif isinstance(obj, Entity):
            contents.entities.append(obj)
        elif isinstance(obj, FeatureView):
            contents.feature_views.append(obj)
            add_source(obj.batch_source)
            add_source(obj.stream_source)
        elif isinstance(obj, FeatureService):
            contents.feature_services.append(obj)
        elif isinstance(obj, DataSource):
            add_source(obj)
            add_source(getattr(obj, "batch_source", None))
        else:
            raise TypeError(f"unsupported Feast object {obj!r}")
    contents.entities.append(DUMMY_ENTITY)  # as `feast apply` does, so both paths see the same registry
    return contents


@dataclass(frozen=True)
class ObjectChange:
    """One registry object that `apply_definitions` added, changed or removed."""

    kind: str  # Feast object type, e.g. "feature view"
    name: str
    change: str  # "added", "changed" or "removed"
    details: tuple[str, ...] = ()  # for "changed": what differs, e.g. "fields renamed: age -> age_years"


@dataclass
class ApplyReport:
    """What applying the definitions changed in the registry."""

    changes: list[ObjectChange] = field(default_factory=list)
    unchanged: int = 0

    def count(self, change: str) -> int:
        return sum(1 for c in self.changes if c.change == change)

    @property
    def changed_anything(self) -> bool:
        return bool(self.changes)

    def to_markdown(self) -> str:
        if not self.changes:
            return f"No changes ({self.unchanged} objects unchanged)."
        rows = ["| object | name | change | details |", "|---|---|---|---|"]
        for c in self.changes:
            rows.append(f"| {c.kind} | `{c.name}` | {c.change} | {'<br>'.join(c.details)} |")
        return "\n".join(rows)


def _fields(obj) -> list | None:
    """The feature fields of a feature view (None for objects without fields)."""
    features = getattr(obj, "features", None)
    if features is None or not all(hasattr(f, "name") and hasattr(f, "dtype") for f in features):
        return None
    return list(features)


def _field_changes(old: list, new: list) -> list[str]:
    """Renamed, removed and added fields; a field replaced in place by one of the same type is a rename."""
    old_names, new_names = [f.name for f in old], [f.name for f in new]
    removed = [f for f in old if f.name not in new_names]
    added = [f for f in new if f.name not in old_names]
    renamed = []
    for gone in list(removed):
        position = old_names.index(gone.name)
        twin = new[position] if position < len(new) else None
        if twin is not None and twin in added and twin.dtype == gone.dtype:
            renamed.append(f"{gone.name} -> {twin.name}")
            removed.remove(gone)
            added.remove(twin)
    details = []
    changes = (("renamed", renamed), ("removed", [f.name for f in removed]), ("added", [f.name for f in added]))
    for label, names in changes:
        if names:
            details.append(f"fields {label}: {', '.join(names)}")
    return details


def _describe_update(diff) -> tuple[str, ...]:
    """Readable details of an updated object: renamed/removed/added fields, then other changed properties."""
    details = []
    old_fields, new_fields = _fields(diff.current_feast_object), _fields(diff.new_feast_object)
    if old_fields is not None and new_fields is not None:
        details = _field_changes(old_fields, new_fields)
    for prop in diff.feast_object_property_diffs:
        if _is_real_change(prop) and (prop.property_name != "features" or not details):
            details.append(f"{prop.property_name} changed")
    return tuple(details)


def _is_real_change(prop) -> bool:
    """False for a property that differs only in an embedded data source's bookkeeping timestamps.

    Feast marks a materialized feature view as updated (its materialization intervals differ
    from the declared view's) and then reports its batch source, whose `meta` timestamps are
    re-stamped at every definition load; such a view's definition did not change.
    """
    from feast.protos.feast.core.DataSource_pb2 import DataSource as DataSourceProto

    old, new = prop.val_existing, prop.val_declared
    if isinstance(old, DataSourceProto) and isinstance(new, DataSourceProto):
        old = DataSourceProto.FromString(old.SerializeToString())
        new = DataSourceProto.FromString(new.SerializeToString())
        old.ClearField("meta")
        new.ClearField("meta")
        return old != new
    return True


def apply_definitions(store: FeatureStore, objects: list) -> ApplyReport:
    """Registers `objects` and creates their online tables, reporting what changed.

    Computes Feast's plan first; when nothing differs from the registry, nothing is written.
    Objects in the registry but not in `objects` are removed, as `feast apply` does.
    """
    from feast.diff.property_diff import TransitionType
    from feast.feature_view import DUMMY_ENTITY_NAME
    from feast.infra.registry.registry import FeastObjectType

    contents = _repo_contents(objects)
    with database_errors(store, "comparing the definitions with the registry"):
        registry_diff, _, _ = store.plan(contents)
    report = ApplyReport()
    to_apply, to_delete = [], []
    labels = {TransitionType.CREATE: "added", TransitionType.UPDATE: "changed", TransitionType.DELETE: "removed"}
    for diff in registry_diff.feast_object_diffs:
        if diff.name == DUMMY_ENTITY_NAME:
            continue
        if diff.transition_type == TransitionType.UNCHANGED or (
            diff.transition_type == TransitionType.UPDATE
            and not any(_is_real_change(p) for p in diff.feast_object_property_diffs)
        ):
            report.unchanged += 1
            continue
        kind = (
            diff.feast_object_type.value
            if isinstance(diff.feast_object_type, FeastObjectType)
            else str(diff.feast_object_type)
        )
        details = _describe_update(diff) if diff.transition_type == TransitionType.UPDATE else ()
        report.changes.append(ObjectChange(kind, diff.name, labels[diff.transition_type], details))
        if diff.transition_type == TransitionType.DELETE:
            to_delete.append(diff.current_feast_object)
        else:
            to_apply.append(diff.new_feast_object)
    if to_apply or to_delete:
        with database_errors(store, "applying the feature definitions"):
            store.apply(to_apply, objects_to_delete=to_delete, partial=False)
    return report


# --- Loading: Feast-ready copies, materialization and pushes -------------------------------------------
