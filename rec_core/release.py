"""Releases: immutable serving versions, and the one pointer that says which consistent set is served.

Why: the assets write their artifacts where the next run writes them again (`two_tower_model/`,
`item_index/`, `<asset>.parquet`). Served from there, a model rejected by the release gate, or a
reader arriving between the writes of two artifacts, would pair vectors of two different models.
So serving never reads those working copies. Publishing a release copies the set into an
immutable store (a version is never modified once written, only deleted when no kept release
names it), checks that it is one consistent set by loading it as serving will, and only then
replaces one small manifest in one atomic write. A rejected or failed run never publishes, so the
previous release keeps serving byte for byte; rolling back rewrites the pointer to an older manifest.

Layout under the artifact root:
    releases/current.json               the manifest being served (replaced atomically, one file)
    releases/history/<release_id>.json  the manifest of every kept release, never modified
    releases/store/<artifact>/<version> immutable copies: tables named by a digest of their bytes,
                                        the model by the digest of its weights, the index by its build id

Publishing and pruning take a lock file on local roots; on object storage the Dagster run queue
(one run writing these at a time, see dagster.yaml) is what keeps two publishers apart.

Command line: `python -m rec_core.release list|rollback [RELEASE_ID] [--root ROOT]`.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import os
import sys
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime

import numpy as np

from rec_core.data.paths import ITEM_INDEX_DIR, MODEL_DIR, MODEL_WEIGHTS, RELEASES_DIR, TABLE_SUFFIX, table_file
from rec_core.storage import as_path, exclusive_lock, publish_files, remove, write_bytes

log = logging.getLogger(__name__)

CURRENT = "current.json"
HISTORY = "history"
STORE = "store"
DEFAULT_KEEP = 3
FORMAT = 1

SERVED_TABLES = {  # table -> required: what `Recommender.load` reads besides the model and the index
    "items": True,
    "user_embeddings": True,
    "users": False,
    "interactions": False,
    "item_embeddings": False,
    "item_text_embeddings": False,
    "item_clip_embeddings": False,
}
VERSIONED_VECTORS = ("user_embeddings", "item_embeddings")  # tables whose `model_version` column names their model


class ReleaseError(ValueError):
    """A set of artifacts that cannot be released or a release that cannot be served; the message says why."""


def model_version(model_dir: str | os.PathLike) -> str:
    """A short digest of the model weights: which model produced a set of vectors or recommendations."""
    digest = hashlib.sha256()
    with as_path(model_dir).joinpath(MODEL_WEIGHTS).open("rb") as weights:
        for chunk in iter(lambda: weights.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:16]


# ---- reading ---------------------------------------------------------------------------------
def current_release(root: str | os.PathLike) -> dict | None:
    """The manifest being served, or None when nothing was ever released under `root`."""
    pointer = as_path(root) / RELEASES_DIR / CURRENT
    try:
        return json.loads(pointer.read_text())
    except FileNotFoundError:
        return None


def list_releases(root: str | os.PathLike) -> list[dict]:
    """Every kept release, oldest first, each with `current` (True for the one being served)."""
    current = current_release(root)
    history = as_path(root) / RELEASES_DIR / HISTORY
    manifests = [json.loads(p.read_text()) for p in history.glob("*.json")] if history.exists() else []
    manifests.sort(key=lambda m: (m["created_at"], m["release_id"]))
    current_id = current["release_id"] if current else None
    return [{**m, "current": m["release_id"] == current_id} for m in manifests]


def artifact_paths(root: str | os.PathLike, manifest: Mapping | None) -> dict:
    """Where each served artifact is read from: the release's immutable copies, or for a root that
    has no release (written by hand or before releases existed) the working copies under `root`."""
    base = as_path(root)
    if manifest is None:
        return {
            **{name: base / table_file(name) for name in SERVED_TABLES},
            MODEL_DIR: base / MODEL_DIR,
            ITEM_INDEX_DIR: base / ITEM_INDEX_DIR,
        }
    return {name: base / relative for name, relative in manifest["artifacts"].items()}


def published_marker(root: str | os.PathLike) -> str | None:
    """What says a new version was published: the current release id, or for a root without
    releases the build id of its item index (None at the instant an index swap is in progress)."""
    current = current_release(root)
    if current is not None:
        return current["release_id"]
    from rec_core.index import REPORT_FILE

    try:
        return json.loads((as_path(root) / ITEM_INDEX_DIR / REPORT_FILE).read_text()).get("build_id")
    except FileNotFoundError:
        return None


def published_build_id(root: str | os.PathLike) -> str | None:
    """The build id of the item index now published under `root` (that of its current release)."""
    current = current_release(root)
    return current["index_build_id"] if current else published_marker(root)


# ---- publishing ------------------------------------------------------------------------------
def publish_release(
    root: str | os.PathLike,
    code_versions: Mapping[str, str] | None = None,
    details: Mapping | None = None,
    keep: int = DEFAULT_KEEP,
) -> dict:
    """Releases the artifacts now under `root` and makes them the served set; returns the manifest.

    Copies each served artifact into the immutable store (skipped when that version is already
    there), refuses a set whose vectors do not all come from the model being released, loads the
    set exactly as `Recommender.load` will (so a release that cannot be served never becomes
    current), then writes the manifest and moves the pointer. Afterwards only the last `keep`
    releases (and the current one) are kept; store versions no kept release names are deleted.
    `code_versions` and `details` (gate metrics, the run that published) are recorded as given.
    """
    base = as_path(root)
    with _lock(base):
        artifacts: dict[str, str] = {}
        for name, required in SERVED_TABLES.items():
            source = base / table_file(name)
            if not source.exists():
                if required:
                    raise ReleaseError(f"{source}: missing; materialize the '{name}' asset first")
                continue
            data = source.read_bytes()
            artifacts[name] = _store_file(base, name, table_file(_digest(data)), data)
        version = None
        if (base / MODEL_DIR / MODEL_WEIGHTS).exists():
            version, files = _read_model(base / MODEL_DIR)
            artifacts[MODEL_DIR] = _store_directory(base, MODEL_DIR, version, files)
        build_id, files = _read_index(base / ITEM_INDEX_DIR)
        artifacts[ITEM_INDEX_DIR] = _store_directory(base, ITEM_INDEX_DIR, build_id, files)
        version = _vectors_model_version(base, artifacts, version)
        now = datetime.now(UTC)
        manifest = {
            "format": FORMAT,
            "release_id": f"{now:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}",
            "created_at": now.isoformat(timespec="microseconds"),
            "model_version": version,
            "index_build_id": build_id,
            "artifacts": artifacts,
            "code_versions": dict(code_versions or {}),
            "details": dict(details or {}),
        }
        _check_servable(base, manifest)
        write_bytes(json.dumps(manifest, indent=2).encode(), _history_file(base, manifest["release_id"]))
        _activate(base, manifest, "publish", current_release(base))
        prune(base, keep, _locked=True)
    log.info("release %s published: model %s, index %s", manifest["release_id"], version, build_id)
    return manifest


def rollback(root: str | os.PathLike, release_id: str | None = None) -> dict:
    """Serves an earlier release again; returns its manifest.

    Without `release_id`, the release created just before the one being served. The target is
    loaded as serving will before the pointer moves, so a rollback to a damaged release fails here.
    """
    base = as_path(root)
    with _lock(base):
        current = current_release(base)
        releases = list_releases(base)
        if release_id is None:
            if current is None:
                raise ReleaseError(f"{base}: nothing was released yet, so there is nothing to roll back")
            earlier = [m for m in releases if m["created_at"] < current["created_at"]]
            if not earlier:
                raise ReleaseError(
                    f"release {current['release_id']} is the oldest kept release; "
                    "there is none before it to roll back to"
                )
            target = earlier[-1]
        else:
            matches = [m for m in releases if m["release_id"] == release_id]
            if not matches:
                known = ", ".join(m["release_id"] for m in releases) or "none"
                raise ReleaseError(f"no kept release '{release_id}' (kept: {known})")
            target = matches[0]
        target = {key: value for key, value in target.items() if key != "current"}
        _check_servable(base, target)
        _activate(base, target, "rollback", current)
    log.info("rolled back to release %s (was %s)", target["release_id"], current and current["release_id"])
    return target


def prune(root: str | os.PathLike, keep: int = DEFAULT_KEEP, _locked: bool = False) -> list[str]:
    """Deletes releases older than the last `keep` (never the current one) and the store versions no
    kept release names; returns the release ids deleted."""
    if keep < 1:
        raise ValueError(f"keep must be at least 1, got {keep}")
    base = as_path(root)
    with contextlib.nullcontext() if _locked else _lock(base):
        releases = list_releases(base)
        kept = releases[-keep:] + [m for m in releases[:-keep] if m["current"]]
        dropped = [m["release_id"] for m in releases if m not in kept]
        for release_id in dropped:
            _history_file(base, release_id).unlink()
        named = {path for m in kept for path in m["artifacts"].values()}
        current = current_release(base)
        named |= set(current["artifacts"].values()) if current else set()
        store = base / RELEASES_DIR / STORE
        for artifact in store.iterdir() if store.exists() else ():
            for entry in list(artifact.iterdir()):
                if entry.name.startswith("."):
                    continue  # a copy in progress (local staging)
                if f"{RELEASES_DIR}/{STORE}/{artifact.name}/{entry.name}" not in named:
                    remove(entry)
    return dropped


def _activate(base, manifest: Mapping, how: str, previous: Mapping | None) -> None:
    """Moves the pointer: one atomic write of the whole manifest, so a reader sees one release or the other."""
    pointer = {
        **manifest,
        "activated_at": datetime.now(UTC).isoformat(timespec="microseconds"),
        "activation": how,
        "previous_release_id": previous["release_id"] if previous else None,
    }
    write_bytes(json.dumps(pointer, indent=2).encode(), base / RELEASES_DIR / CURRENT)


def _check_servable(base, manifest: Mapping) -> None:
    """Loads the release as `Recommender.load` will; also checks the index holds the released item vectors."""
    from rec_core.serving import Recommender

    missing = [path for path in manifest["artifacts"].values() if not (base / path).exists()]
    if missing:
        raise ReleaseError(f"release {manifest['release_id']}: missing {', '.join(missing)} under {base}")
    try:
        trial = Recommender.load(base, release=manifest)
    except (ValueError, FileNotFoundError) as exc:
        raise ReleaseError(f"release {manifest['release_id']} cannot be served: {exc}") from exc
    if "item_embeddings" in manifest["artifacts"]:
        from rec_core.embeddings import embedding_matrix
        from rec_core.storage import read_parquet

        table = read_parquet(base / manifest["artifacts"]["item_embeddings"]).to_pandas()
        row = trial.index.position_of
        rows = table["item_id"].astype(str).map(row)
        if (
            rows.isna().any()
            or len(table) != len(trial.index)
            or not np.allclose(
                trial.index.vectors[rows.to_numpy(np.int64)], embedding_matrix(table, "embedding"), atol=1e-6
            )
        ):
            raise ReleaseError(
                f"release {manifest['release_id']}: item_index does not hold the item_embeddings "
                "being released; rematerialize item_index"
            )


def _vectors_model_version(base, artifacts: Mapping[str, str], version: str | None) -> str:
    """The model every released vector comes from, checked through the tables' `model_version` column.

    With a model in the release its digest is the version and every vector table must name it (a
    table without the column cannot prove where it came from). Without a model, the tables'
    common version, else a digest of the user vectors (they are then the model).
    """
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    found: dict[str, set] = {}
    for name in VERSIONED_VECTORS:
        if name not in artifacts:
            continue
        path = base / artifacts[name]
        with path.open("rb") as fh:
            columns = pq.read_schema(fh).names
        if "model_version" not in columns:
            if version is not None:
                raise ReleaseError(
                    f"{base / table_file(name)}: column model_version missing, so its vectors "
                    f"cannot be tied to model {version}; rematerialize {name}"
                )
            continue
        with path.open("rb") as fh:
            values = pq.read_table(fh, columns=["model_version"]).column(0)
        if version is not None:
            bad = len(values) - int(pc.sum(pc.equal(values, version)).as_py() or 0)
            if bad:
                raise ReleaseError(
                    f"{base / table_file(name)}: column model_version: {bad} of {len(values)} rows "
                    f"come from another model than two_tower_model ({version}); rematerialize {name}"
                )
        found[name] = set(values.to_pylist())
    if version is not None:
        return version
    named = set().union(*found.values()) if found else set()
    if len(named) == 1:
        return str(named.pop())
    if len(named) > 1:
        raise ReleaseError(
            f"{base}: the vector tables name {len(named)} different models ({', '.join(sorted(map(str, named)))})"
        )
    return "vectors-" + artifacts["user_embeddings"].rsplit("/", 1)[-1].removesuffix(TABLE_SUFFIX)


def _read_model(directory) -> tuple[str, dict[str, bytes]]:
    """(weights digest, file name -> bytes) of a model directory, read as one version."""
    for _ in range(3):
        version = model_version(directory)
        files = {p.name: p.read_bytes() for p in directory.iterdir() if p.is_file()}
        if MODEL_WEIGHTS in files and _digest(files[MODEL_WEIGHTS]) == version:
            return version, files
    raise ReleaseError(f"{directory}: the model kept changing while being read")


def _read_index(directory) -> tuple[str, dict[str, bytes]]:
    """(build id, file name -> bytes) of an item index directory, read as one version (its report before and after)."""
    from rec_core.index import REPORT_FILE

    if not (directory / REPORT_FILE).exists():
        raise ReleaseError(f"{directory}: missing; materialize the 'item_index' asset first")
    for _ in range(3):
        before = json.loads((directory / REPORT_FILE).read_text())["build_id"]
        files = {p.name: p.read_bytes() for p in directory.iterdir() if p.is_file()}
        if json.loads(files.get(REPORT_FILE, b"{}")).get("build_id") == before:
            return before, files
    raise ReleaseError(f"{directory}: the index kept changing while being read")


def _store_file(base, artifact: str, name: str, data: bytes) -> str:
    relative = f"{RELEASES_DIR}/{STORE}/{artifact}/{name}"
    if not (base / relative).exists():  # content-named: an existing copy already holds these bytes
        write_bytes(data, base / relative)
    return relative


def _store_directory(base, artifact: str, version: str, files: Mapping[str, bytes]) -> str:
    relative = f"{RELEASES_DIR}/{STORE}/{artifact}/{version}"
    target = base / relative
    if target.exists() and all((target / name).exists() for name in files):
        return relative
    publish_files(target, files)
    return relative


def _history_file(base, release_id: str):
    return base / RELEASES_DIR / HISTORY / f"{release_id}.json"


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def _lock(base):
    """One publisher, rollback or prune at a time on a local root (object storage has no locks)."""
    return exclusive_lock(base / RELEASES_DIR)


# ---- command line ----------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    from rec_core.data.paths import default_artifact_root

    parser = argparse.ArgumentParser(
        prog="python -m rec_core.release", description="List or roll back serving releases."
    )
    parser.add_argument(
        "--root", default=None, help="artifact root (default: $REC_ARTIFACT_ROOT, else ./data/artifacts)"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="every kept release, oldest first; * marks the one being served")
    back = commands.add_parser("rollback", help="serve an earlier release (default: the one before the current)")
    back.add_argument("release_id", nargs="?", default=None)
    args = parser.parse_args(argv)
    root = args.root or default_artifact_root()
    try:
        if args.command == "list":
            releases = list_releases(root)
            if not releases:
                print(f"no releases under {root}")
            for m in releases:
                print(
                    f"{'*' if m['current'] else ' '} {m['release_id']}  created {m['created_at']}  "
                    f"model {m['model_version']}  index {m['index_build_id'][:12]}"
                )
        else:
            manifest = rollback(root, args.release_id)
            print(f"serving release {manifest['release_id']} (model {manifest['model_version']})")
    except ReleaseError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
