"""Atomic artifact writes and validated reads.

Writers never leave a half-written artifact where a reader could find it: files are written to
a temporary name in the same directory and renamed over the target (an atomic operation on
POSIX file systems); directories are built beside the target and swapped in. Object-storage
paths (`s3://...`) go through universal-pathlib, where a single PUT is already atomic.
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
from pathlib import Path
from typing import Iterator

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from rec_core.data.validation import DataValidationError, conform


def is_remote(path: str | os.PathLike) -> bool:
    return "://" in str(path) and not str(path).startswith("file://")


def as_path(path: str | os.PathLike):
    """A pathlib-like object: `Path` for local paths, `UPath` for object storage."""
    if is_remote(path):
        from upath import UPath

        return UPath(str(path))
    return Path(str(path).removeprefix("file://"))


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[Path]:
    """Yields a temporary local path; on success it replaces `path` in one step.

    On failure the temporary file is removed and `path` keeps its previous content.
    """
    target = as_path(path)
    if is_remote(path):
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
    if is_remote(path):
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


def write_parquet(table: pa.Table | pd.DataFrame, path: str | os.PathLike) -> None:
    """Writes a table atomically as parquet."""
    if isinstance(table, pd.DataFrame):
        table = pa.Table.from_pandas(table, preserve_index=False)
    with atomic_file(path) as tmp:
        pq.write_table(table, tmp)


def read_parquet(path: str | os.PathLike) -> pa.Table:
    p = as_path(path)
    with p.open("rb") as fh:
        return pq.read_table(io.BytesIO(fh.read()) if is_remote(path) else fh)


def read_asset_table(root: str | os.PathLike, name: str, required: bool = True) -> pd.DataFrame | None:
    """The table an asset stored as `<root>/<name>.parquet`; when absent, None if optional, else an
    error naming the file and the asset to materialize."""
    return read_table_file(as_path(root) / f"{name}.parquet", name, required)


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
            frame = pd.read_csv(io.BytesIO(raw), sep="\t" if suffix == ".tsv" else ",", dtype=str, keep_default_na=False,
                                na_values=[""])
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
