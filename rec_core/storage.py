"""Artifact storage, local or object storage behind one interface: atomic writes and validated reads.

Every other module names a location as a string or path and calls one of the operations here;
only this module tells a local path from an object-storage one (`s3://...`, through
universal-pathlib and fsspec), so the difference is decided in one place.

Writers never leave a half-written artifact where a reader could find it: files are written to
a temporary name in the same directory and renamed over the target (an atomic operation on
POSIX file systems); directories are built beside the target and swapped in. Object storage has
no rename, but a single PUT is already atomic: files are uploaded one by one, the one that marks
a complete version last.
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from rec_core.data.paths import id_hash, table_file
from rec_core.data.validation import DataValidationError, conform


def _on_object_storage(path: str | os.PathLike) -> bool:
    """True for an object-storage URL (`s3://...`); a plain path or a `file://` URL is local."""
    return "://" in str(path) and not str(path).startswith("file://")


def as_path(path: str | os.PathLike):
    """A pathlib-like object: `Path` for local paths, `UPath` for object storage."""
    if _on_object_storage(path):
        from upath import UPath

        return UPath(str(path))
    return Path(str(path).removeprefix("file://"))


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[Path]:
    """Yields a temporary local path; on success it replaces `path` in one step.

    On failure the temporary file is removed and `path` keeps its previous content.
    """
    target = as_path(path)
    if _on_object_storage(path):
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(tmp) / target.name
            yield local
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(local, "rb") as src, target.open("wb") as dst:
                shutil.copyfileobj(src, dst)
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale(target.parent, f".{target.name}.tmp-*")
    tmp = target.with_name(f".{target.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        apply_umask(tmp)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike) -> Iterator[Path]:
    """Yields an empty staging directory; on success it takes the place of `path`.

    On Linux the two directories are exchanged in one `renameat2(RENAME_EXCHANGE)` call, so the
    path always names a complete version, even if the process is killed at that moment. Elsewhere
    the old directory is moved aside just before the new one is renamed in.
    """
    if _on_object_storage(path):
        # Object storage has no rename: each file is uploaded with one PUT (atomic per file).
        with tempfile.TemporaryDirectory() as tmp:
            yield Path(tmp)
            target = as_path(path)
            for local in sorted(Path(tmp).rglob("*")):
                if local.is_file():
                    remote = target.joinpath(*local.relative_to(tmp).parts)
                    remote.parent.mkdir(parents=True, exist_ok=True)
                    with open(local, "rb") as src, remote.open("wb") as dst:
                        shutil.copyfileobj(src, dst)
        return
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale(target.parent, f".{target.name}.staging-*")
    _remove_stale(target.parent, f".{target.name}.old-*")
    staging = target.with_name(f".{target.name}.staging-{uuid.uuid4().hex[:8]}")
    staging.mkdir()
    try:
        yield staging
        apply_umask(staging)
        if target.exists() and _exchange(staging, target):
            return  # `staging` now holds the old version; the finally clause removes it
        old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
        if target.exists():
            os.replace(target, old)
        os.replace(staging, target)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def publish_files(directory: str | os.PathLike, files: Mapping[str, bytes]) -> None:
    """Writes `files` (name -> bytes) as the directory `directory`; no reader takes a partial version for a whole one.

    Locally the directory is built beside the target and swapped in whole (`atomic_directory`).
    Object storage has no rename: each file is one PUT (atomic on its own), in the order given, so
    a caller lists last the file whose presence marks the version complete.
    """
    if _on_object_storage(directory):
        for name, data in files.items():
            write_bytes(data, as_path(directory) / name)
        return
    with atomic_directory(directory) as staging:
        for name, data in files.items():
            (staging / name).write_bytes(data)


def remove(path: str | os.PathLike) -> None:
    """Deletes a file, or a directory with everything under it."""
    target = as_path(path)
    if _on_object_storage(path):
        target.fs.rm(target.path, recursive=True)
    elif target.is_dir():
        shutil.rmtree(target)
    else:
        target.unlink()


@contextlib.contextmanager
def exclusive_lock(directory: str | os.PathLike) -> Iterator[None]:
    """Holds an exclusive lock on `<directory>/.lock` for a block: one writer at a time changes what it guards.

    Object storage has no locks: there the block runs unguarded, and running one writer at a
    time is the deployment's job.
    """
    if _on_object_storage(directory):
        yield
        return
    import fcntl

    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def local_copy(directory: str | os.PathLike, names: Iterable[str]) -> Iterator[Path]:
    """A local folder holding the files `names` of `directory`, for readers that need local files (safetensors).

    A local directory is yielded as it is; from object storage the files are downloaded to a
    temporary folder, removed when the block ends.
    """
    if not _on_object_storage(directory):
        yield as_path(directory)
        return
    source = as_path(directory)
    with tempfile.TemporaryDirectory() as local:
        for name in names:
            (Path(local) / name).write_bytes((source / name).read_bytes())
        yield Path(local)


def require_local(path: str | os.PathLike, why: str) -> Path:
    """The local `Path` of `path`; a ValueError saying `why` a local path is needed when it is on object storage."""
    if _on_object_storage(path):
        raise ValueError(f"{path} is object storage: {why}")
    return as_path(path)


def local_work_dir(root: str | os.PathLike, name: str) -> Path:
    """A local folder for work files that belong to the artifacts under `root` (training checkpoints, say).

    `<root>/<name>` for a local root. For a root on object storage, whose objects cannot be
    appended to or renamed cheaply, a folder in the system's temporary directory named after the
    root, so a later run on the same root finds it again.
    """
    if _on_object_storage(root):
        return Path(tempfile.gettempdir()) / f"rec_{name}-{id_hash(str(root))}"
    return as_path(root) / name


def apply_umask(path: Path) -> None:
    """Gives `path` (and, for a directory, everything under it) the mode the process umask grants.

    Writers that go through a temporary file (safetensors, `tempfile`) create it 0600, and a rename
    keeps that mode: without this, one artifact of a published version would be unreadable to the
    serving user while every other one is readable.
    """
    umask = _process_umask()
    for entry in [path, *(path.rglob("*") if path.is_dir() else ())]:
        if not entry.is_symlink():
            entry.chmod((0o777 if entry.is_dir() else 0o666) & ~umask)


def _process_umask() -> int:
    """The umask, read without changing it where Linux shows it (setting it, even briefly, races other threads)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


_RENAME_EXCHANGE = 2


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swaps two paths with Linux's renameat2; False where that is unavailable."""
    if sys.platform != "linux":
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd = -100
    result = renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE)
    if result != 0:
        errno = ctypes.get_errno()
        if errno in (38, 22, 95):  # ENOSYS, EINVAL, EOPNOTSUPP: the kernel or file system cannot exchange
            return False
        raise OSError(errno, os.strerror(errno), str(b))
    return True


STALE_AFTER_S = 3600.0
"""Temporary files older than this were left by a killed writer and are removed by the next write."""


def _remove_stale(directory: Path, pattern: str) -> None:
    cutoff = time.time() - STALE_AFTER_S
    for leftover in directory.glob(pattern):
        try:
            if leftover.stat().st_mtime < cutoff:
                shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink()
        except FileNotFoundError:
            pass  # another writer cleaned it up first


def write_bytes(data: bytes, path: str | os.PathLike) -> None:
    with atomic_file(path) as tmp:
        tmp.write_bytes(data)


def write_files(files: Mapping[str | os.PathLike, bytes]) -> None:
    """Writes many files, each atomically, with one durability barrier for the lot (not one fsync per file).

    Every file is written under a temporary name beside its target; one barrier then makes all
    their data durable (Linux `syncfs`, once per file system; elsewhere a fsync per file); only then
    is each renamed over its target, and each directory is fsynced once so the new names are durable
    too. A reader never finds a partial file under a final name, and a crash loses at most this
    batch. Leftover temporaries of a killed batch are removed by `remove_stale_temporaries`.
    On object storage each file is one PUT, atomic on its own.
    """
    local: dict[Path, bytes] = {}
    for path, data in files.items():
        if _on_object_storage(path):
            write_bytes(data, path)
        else:
            local[Path(path)] = data
    token = uuid.uuid4().hex[:8]
    temporaries: dict[Path, Path] = {}
    try:
        for directory in {target.parent for target in local}:
            directory.mkdir(parents=True, exist_ok=True)
        for target, data in local.items():
            temporaries[target] = target.with_name(f".{target.name}.tmp-{token}")
            temporaries[target].write_bytes(data)
        _flush_file_data(list(temporaries.values()))
        while temporaries:
            target, temporary = temporaries.popitem()
            os.replace(temporary, target)
        for directory in {target.parent for target in local}:
            _fsync(directory)
    finally:
        for temporary in temporaries.values():  # only after a failure: published ones were popped
            temporary.unlink(missing_ok=True)


def remove_stale_temporaries(directory: str | os.PathLike) -> None:
    """Removes the temporary files killed writers left in a local `directory` (once per run, not per write)."""
    if not _on_object_storage(directory) and Path(directory).is_dir():
        _remove_stale(Path(directory), ".*.tmp-*")


def _fsync(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _flush_file_data(paths: list[Path]) -> None:
    """Makes the data of `paths` durable: one `syncfs` per file system on Linux, else a fsync per file."""
    syncfs = getattr(ctypes.CDLL(None, use_errno=True), "syncfs", None) if sys.platform == "linux" else None
    if syncfs is None:
        for path in paths:
            _fsync(path)
        return
    for directory in {os.stat(path.parent).st_dev: path.parent for path in paths}.values():
        descriptor = os.open(directory, os.O_RDONLY)
        try:
            if syncfs(descriptor) != 0:
                error = ctypes.get_errno()
                raise OSError(error, f"syncfs failed: {os.strerror(error)}", str(directory))
        finally:
            os.close(descriptor)


def write_parquet(table: pa.Table | pd.DataFrame, path: str | os.PathLike) -> None:
    """Writes a table atomically as parquet."""
    if isinstance(table, pd.DataFrame):
        table = pa.Table.from_pandas(table, preserve_index=False)
    with atomic_file(path) as tmp:
        pq.write_table(table, tmp)


def read_parquet(path: str | os.PathLike) -> pa.Table:
    p = as_path(path)
    with p.open("rb") as fh:
        return pq.read_table(io.BytesIO(fh.read()) if _on_object_storage(path) else fh)


def read_asset_table(root: str | os.PathLike, name: str, required: bool = True) -> pd.DataFrame | None:
    """The table an asset stored as `<root>/<name>.parquet`; when absent, None if optional, else an
    error naming the file and the asset to materialize."""
    return read_table_file(as_path(root) / table_file(name), name, required)


def read_table_file(path, name: str, required: bool = True) -> pd.DataFrame | None:
    """The table of asset `name` stored at `path` (a `Path` or `UPath`); when absent, None if
    optional, else an error naming the file and the asset to materialize."""
    if not path.exists():
        if required:
            raise FileNotFoundError(f"{path}: missing; materialize the '{name}' asset first")
        return None
    return read_parquet(path).to_pandas()


def read_input_table(path: str | os.PathLike, kind: str) -> pa.Table:
    """Reads a user-supplied parquet or CSV file and validates it as `kind`.

    Raises DataValidationError for an empty file, bytes that are not UTF-8, an unreadable
    file, or content that does not fit the schema.
    """
    p = as_path(path)
    raw = p.read_bytes()
    if not raw.strip():
        raise DataValidationError(str(path), None, 0, "the file is empty")
    suffix = p.suffix.lower()
    try:
        if suffix == ".parquet":
            table = pq.read_table(io.BytesIO(raw))
        elif suffix in (".csv", ".tsv"):
            _require_utf8(raw, str(path))
            frame = pd.read_csv(
                io.BytesIO(raw), sep="\t" if suffix == ".tsv" else ",", dtype=str, keep_default_na=False, na_values=[""]
            )
            table = pa.Table.from_pandas(frame, preserve_index=False)
        else:
            raise DataValidationError(str(path), None, 0, f"unsupported file type '{suffix}' (use .parquet or .csv)")
    except DataValidationError:
        raise
    except (pa.ArrowInvalid, pd.errors.ParserError, OSError) as exc:
        raise DataValidationError(str(path), None, 0, f"cannot be parsed: {exc}") from exc
    return conform(table, kind, str(path))


def _require_utf8(raw: bytes, source: str) -> None:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        lines = raw.split(b"\n")
        bad = 0
        for line in lines:
            try:
                line.decode("utf-8")
            except UnicodeDecodeError:
                bad += 1
        raise DataValidationError(source, None, bad, "bytes that are not valid UTF-8") from None
