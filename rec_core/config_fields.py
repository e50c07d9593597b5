"""Builds a library config dataclass from the like-named values of a flatter source.

Dagster configs and command lines expose the library's dataclass fields under the same names;
copying them by name keeps one list of fields (the dataclass's) instead of one per caller.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, TypeVar

ConfigT = TypeVar("ConfigT")


def config_from(cls: type[ConfigT], values: Mapping[str, Any], **overrides: Any) -> ConfigT:
    """`cls(...)` with every field of `cls` found in `values`, then `overrides`; other fields keep their defaults."""
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{name: value for name, value in values.items() if name in names} | overrides)
