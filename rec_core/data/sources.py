"""Where users, items and interactions come from: the synthetic generator or a dataset path.

Either way the three tables are conformed to their schemas and cross-checked before anything is
written, errors naming the source. For synthetic data the generator's oracle (the true affinity
model) is saved too, so evaluation can compare models with the best achievable ranking. The
`source_tables` asset is this one call plus its metadata.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from rec_core.data.loaders import load_dataset
from rec_core.data.validation import DataValidationError, check_references, conform
from rec_core.generation.synthetic import GeneratorConfig, generate_dataset

log = logging.getLogger(__name__)

SOURCES = ("synthetic", "path")


@dataclass(frozen=True)
class SourceTables:
    users: pd.DataFrame
    items: pd.DataFrame
    interactions: pd.DataFrame
    label: str  # what the tables came from: `synthetic(seed=N)` or the dataset path


def load_source(
    source: str = "synthetic",
    path: str | None = None,
    fmt: str = "auto",
    generator: GeneratorConfig | None = None,
    truth_dir: str | Path | None = None,
) -> SourceTables:
    """The three tables of `source`: `synthetic` (drawn with `generator`; its oracle saved to `truth_dir` when
    given) or `path` (`path` read in format `fmt`, see `rec_core.data.loaders.load_dataset`)."""
    if source == "synthetic":
        generator = generator or GeneratorConfig()
        dataset = generate_dataset(generator)
        if truth_dir is not None:
            dataset.oracle.save(truth_dir)
        users, items, interactions = dataset.users, dataset.items, dataset.interactions
        label = f"synthetic(seed={generator.seed})"
    elif source == "path":
        if not path:
            raise DataValidationError("run config", "path", 0, "source 'path' needs a dataset path")
        users, items, interactions = load_dataset(path, fmt)
        label = str(path)
    else:
        raise ValueError(f"unknown source '{source}': use one of {SOURCES}")
    tables = SourceTables(
        conform(users, "users", f"{label} users").to_pandas(),
        conform(items, "items", f"{label} items").to_pandas(),
        conform(interactions, "interactions", f"{label} interactions").to_pandas(),
        label,
    )
    check_references(tables.interactions, tables.users, tables.items, label)
    log.info(
        "%d users, %d items, %d interactions from %s",
        len(tables.users),
        len(tables.items),
        len(tables.interactions),
        label,
    )
    return tables
