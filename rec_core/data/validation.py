"""Validation of tables against the schemas in `rec_core.data.schema`.

Errors always name the source (file), the column and the number of bad rows, so a person
can find the problem without reading code. Validation happens before anything is written.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

from rec_core.data.schema import INTERACTION_TYPES, PRIMARY_KEYS, SCHEMAS, SPLIT_VALUES


class DataValidationError(ValueError):
    """Input data that does not fit a schema; carries the source, column and bad-row count."""

    def __init__(self, source: str, column: str | None, bad_rows: int, problem: str):
        self.source, self.column, self.bad_rows, self.problem = str(source), column, bad_rows, problem
        where = f"column '{column}'" if column else "table"
        super().__init__(f"{source}: {where}: {bad_rows} bad row(s): {problem}")


# Range rules per table: column -> (predicate on a non-null numpy array, description).
_RANGE_RULES = {
    "items": {
        "actual_price": (lambda v: np.isfinite(v) & (v >= 0), "must be a finite number >= 0"),
        "discounted_price": (lambda v: np.isfinite(v) & (v >= 0), "must be a finite number >= 0"),
        "discount_percentage": (lambda v: (v >= 0) & (v <= 100), "must be within 0..100"),
        "rating": (lambda v: (v >= 0) & (v <= 5), "must be within 0..5"),
        "rating_count": (lambda v: v >= 0, "must be >= 0"),
    },
    "users": {"age": (lambda v: (v >= 0) & (v <= 130), "must be within 0..130")},
    "interactions": {
        "rating": (lambda v: (v >= 0) & (v <= 5), "must be within 0..5"),
        "quantity": (lambda v: v >= 0, "must be >= 0"),
    },
}
_ALLOWED_VALUES = {
    "interactions": {"interaction_type": INTERACTION_TYPES},
    "interaction_splits": {"interaction_type": INTERACTION_TYPES, "split": SPLIT_VALUES},
}


def _cast_column(column: pa.ChunkedArray | pa.Array, target: pa.DataType, source: str, name: str) -> pa.Array:
    """Casts one column, counting the rows that cannot be converted when the cast fails."""
    if column.type == target:
        return column
    try:
        if pa.types.is_timestamp(target) and (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
            values = pd.to_datetime(pd.Series(column.to_pandas()), utc=True, errors="coerce", format="mixed")
            bad = int((values.isna() & pd.Series(column.is_null().to_pandas()).eq(False)).sum())
            if bad:
                raise DataValidationError(source, name, bad, f"cannot be read as {target}")
            return pa.array(values, type=target)
        if pa.types.is_timestamp(target) and pa.types.is_timestamp(column.type):
            if column.type.tz is None:
                column = column.cast(pa.timestamp(column.type.unit, tz="UTC"))
            return pa.compute.cast(column, target, safe=False)  # sub-microsecond digits are dropped
        return column.cast(target)
    except DataValidationError:
        raise
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        values = pd.Series(column.to_pandas(), dtype=object)
        if pa.types.is_integer(target) or pa.types.is_floating(target):
            converted = pd.to_numeric(values, errors="coerce")
            bad = int((converted.isna() & values.notna()).sum())
            if pa.types.is_integer(target):
                bad += int((converted.notna() & (converted.round() != converted)).sum())
        else:
            bad = int(values.notna().sum())
        raise DataValidationError(source, name, max(bad, 1), f"has type {column.type}, expected {target}") from None


def conform(data: pd.DataFrame | pa.Table, kind: str, source: str) -> pa.Table:
    """Returns `data` as a table in the schema of `kind`, or raises DataValidationError.

    Checks: every column present, values castable to the column type, no nulls in
    non-nullable columns, no non-finite numbers, values in range and in the allowed set,
    unique primary keys, and at least one row.
    """
    schema = SCHEMAS[kind]
    table = data if isinstance(data, pa.Table) else _frame_to_table(data, source)
    if table.num_rows == 0:
        raise DataValidationError(source, None, 0, f"the {kind} table is empty")
    missing = [f.name for f in schema if f.name not in table.column_names]
    if missing:
        raise DataValidationError(source, missing[0], table.num_rows, f"missing column(s) {missing} for {kind}")
    columns = []
    for f in schema:
        col = _cast_column(table.column(f.name), f.type, source, f.name)
        nulls = col.null_count
        if not f.nullable and nulls:
            raise DataValidationError(source, f.name, nulls, "null values in a required column")
        if pa.types.is_floating(f.type):
            values = col.to_numpy(zero_copy_only=False)
            bad = int(np.isinf(values).sum())
            if bad:
                raise DataValidationError(source, f.name, bad, "infinite values")
        if pa.types.is_string(f.type) and not f.nullable and f.name.endswith("_id"):
            empty = int(pa.compute.sum(pa.compute.equal(pa.compute.utf8_length(col), 0)).as_py() or 0)
            if empty:
                raise DataValidationError(source, f.name, empty, "empty identifiers")
        columns.append(col)
    out = pa.Table.from_arrays(columns, schema=schema)
    _check_values(out, kind, source)
    key = PRIMARY_KEYS[kind]
    dupes = out.num_rows - len(pa.compute.unique(out.column(key)))
    if dupes:
        raise DataValidationError(source, key, dupes, "duplicate ids")
    return out


def _frame_to_table(frame: pd.DataFrame, source: str) -> pa.Table:
    """Converts a DataFrame; a column of mixed Python types is reported with its odd values counted."""
    try:
        return pa.Table.from_pandas(frame, preserve_index=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, OverflowError):
        pass
    for name in frame.columns:
        try:
            pa.array(frame[name], from_pandas=True)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, OverflowError) as exc:
            kinds = frame[name].dropna().map(lambda v: type(v).__name__)
            odd = int(len(kinds) - kinds.value_counts().iloc[0]) if len(kinds) else 0
            raise DataValidationError(
                source, str(name), max(odd, 1), f"mixed or unsupported value types ({exc})"
            ) from None
    raise DataValidationError(source, None, len(frame), "the table cannot be converted")


def _check_values(table: pa.Table, kind: str, source: str) -> None:
    rule_kind = "interactions" if kind == "interaction_splits" else kind
    for name, (predicate, description) in _RANGE_RULES.get(rule_kind, {}).items():
        col = table.column(name).drop_null().to_numpy(zero_copy_only=False).astype(float)
        bad = int((~predicate(col)).sum())
        if bad:
            raise DataValidationError(source, name, bad, description)
    for name, allowed in _ALLOWED_VALUES.get(kind, {}).items():
        col = table.column(name)
        bad = _count_false(pa.compute.is_in(col, value_set=pa.array(allowed)))
        if bad:
            raise DataValidationError(source, name, bad, f"values outside {list(allowed)}")


def check_references(
    interactions: pa.Table | pd.DataFrame, users: pa.Table | pd.DataFrame, items: pa.Table | pd.DataFrame, source: str
) -> None:
    """Raises when interactions name users or items that do not exist."""
    for column, other in (("user_id", users), ("item_id", items)):
        ids = _column(interactions, column)
        known = _column(other, column)
        bad = _count_false(pa.compute.is_in(ids, value_set=pa.compute.unique(known)))
        if bad:
            raise DataValidationError(
                source, column, bad, f"{column} values that do not exist in the {column[:-3]}s table"
            )


def _count_false(mask) -> int:
    return int(pa.compute.sum(pa.compute.invert(mask)).as_py() or 0)


def _column(data: pa.Table | pd.DataFrame, name: str) -> pa.Array:
    if isinstance(data, pa.Table):
        return data.column(name).combine_chunks()
    return pa.array(data[name].astype(str).to_numpy())


# ---- what the asset checks compute -------------------------------------------------------------
def split_coverage(splits: pd.DataFrame, interactions: pd.DataFrame) -> dict:
    """Whether `splits` holds exactly the rows of `interactions`, each once, with train and test present.

    `complete` is the verdict; the other keys say what was found (the splits present, row counts,
    `same_interactions`).
    """
    present = sorted(set(splits["split"].unique()))
    same = bool(
        len(splits) == len(interactions)
        and splits["interaction_id"].is_unique
        and set(splits["interaction_id"]) == set(interactions["interaction_id"])
    )
    return {
        "complete": {"train", "test"} <= set(present) and same,
        "splits": present,
        "rows": len(splits),
        "interactions": len(interactions),
        "same_interactions": same,
    }


def embedding_coverage(
    ids: pd.Series, table: pd.DataFrame, id_column: str, vector_columns: tuple[str, ...], tolerance: float = 1e-3
) -> dict[str, int]:
    """Counts what an embedding table gets wrong: `missing` ids without a row, and per vector column the rows
    whose vector is not finite or neither unit length nor zero (the vector of an empty text)."""
    from rec_core.embeddings import embedding_matrix  # it imports rec_core.storage, which imports this module

    counts = {"missing": int((~ids.isin(table[id_column])).sum())}
    for column in vector_columns:
        norms = np.linalg.norm(embedding_matrix(table, column), axis=1)
        counts[column] = int((~np.isfinite(norms) | ((np.abs(norms - 1) > tolerance) & (norms > 0))).sum())
    return counts
