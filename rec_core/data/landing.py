"""New interaction files dropped into a landing directory: discovery, validation, ingestion.

A landing file (parquet or CSV in the interactions schema) is accepted once: its content hash
names the copy kept under the landed folder, so the same bytes dropped again add nothing, and
interaction ids already present are never added twice. A file is picked up only after its size
and modification time have been stable for `min_age_s`, so a file still being written is left
for the next scan.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from rec_core.data.paths import TABLE_SUFFIX, table_file
from rec_core.data.validation import check_references
from rec_core.storage import as_path, read_input_table, read_parquet, write_parquet

log = logging.getLogger(__name__)

LANDING_SUFFIXES = (".parquet", ".csv")


@dataclass(frozen=True)
class LandingFile:
    path: str
    digest: str  # sha256 of the content: the file's identity


def file_digest(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def scan_landing(directory: str | Path, min_age_s: float = 2.0, now: float | None = None) -> list[LandingFile]:
    """Landing files old enough to be complete, in name order."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    now = time.time() if now is None else now
    found = []
    for path in sorted(directory.iterdir()):
        if path.name.startswith(".") or path.suffix.lower() not in LANDING_SUFFIXES or not path.is_file():
            continue
        if now - path.stat().st_mtime < min_age_s:
            continue
        found.append(LandingFile(str(path), file_digest(path)))
    return found


def validate_landing_file(path: str | Path) -> pd.DataFrame:
    """The file's interactions, or DataValidationError naming the file, column and bad rows."""
    return read_input_table(path, "interactions").to_pandas()


def ingest(files: list[str], landed_dir: str | Path) -> list[Path]:
    """Validates each file and keeps a copy named by its content hash; returns the kept paths.

    Any invalid file raises before anything is kept.
    """
    frames = [(validate_landing_file(f), file_digest(f)) for f in files]
    kept = []
    for frame, digest in frames:
        target = as_path(landed_dir) / table_file(digest[:32])
        if not target.exists():
            write_parquet(frame, target)
            log.info("landed %d interactions as %s", len(frame), target)
        kept.append(target)
    return kept


def merge_landed(
    base: pd.DataFrame, landed_dir: str | Path, users: pd.DataFrame, items: pd.DataFrame
) -> tuple[pd.DataFrame, int]:
    """`base` plus every landed file's interactions not already present (by interaction_id).

    Returns the merged table and the number of rows added.
    """
    landed_dir = as_path(landed_dir)
    paths = sorted(landed_dir.glob(f"*{TABLE_SUFFIX}"), key=str) if landed_dir.exists() else []
    if not paths:
        return base, 0
    landed = pd.concat([read_parquet(p).to_pandas() for p in paths], ignore_index=True)
    landed = landed.drop_duplicates("interaction_id")
    landed = landed[~landed["interaction_id"].isin(base["interaction_id"])]
    check_references(landed, users, items, f"landed interactions in {landed_dir}")
    merged = pd.concat([base, landed.astype(base.dtypes.to_dict(), errors="ignore")], ignore_index=True)
    return merged, len(landed)
