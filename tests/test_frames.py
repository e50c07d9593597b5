"""Asset tables between parquet and pandas: Arrow-backed ids and list columns in memory, the same files on disk."""

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from rec_core.data.frames import ID_DTYPE, to_arrow, to_pandas
from rec_core.serving.topk import ranked_lists


def _table() -> pa.Table:
    frame = pd.DataFrame(
        {
            "interaction_id": ["x1", "x2", "x3"],
            "user_id": ["u1", "u2", "u1"],
            "review_title": ["good", None, "bad"],
            "rating": [1.0, np.nan, 3.0],
        }
    )
    return pa.Table.from_pandas(frame, preserve_index=False)


def test_ids_load_as_arrow_strings_and_are_written_back_unchanged(tmp_path):
    table = _table()
    frame = to_pandas(table)
    assert frame["interaction_id"].dtype == ID_DTYPE and frame["user_id"].dtype == ID_DTYPE
    assert frame["review_title"].dtype == object and list(frame.columns) == table.column_names
    assert (frame["user_id"] == "u1").to_numpy().tolist() == [True, False, True]  # numpy booleans for masks
    assert frame["user_id"].astype(str).tolist() == ["u1", "u2", "u1"]
    written = to_arrow(frame)
    assert written.equals(table) and written.schema.metadata == table.schema.metadata  # string, not large_string
    pq.write_table(written, tmp_path / "t.parquet")
    assert pd.read_parquet(tmp_path / "t.parquet")["user_id"].dtype == object  # as plain pandas always read it


def test_bulk_built_list_columns_read_back_like_python_lists(tmp_path):
    catalog = pa.array(["i0", "i1", "i2", "i3"])
    rows = np.array([[2, 0, 3], [1, -1, -1], [-1, -1, -1]])
    scores = np.array([[0.5, 0.25, 0.125], [1.5, 0, 0], [0, 0, 0]], np.float32)
    ids, values = ranked_lists(catalog, rows, scores)
    assert ids.to_pylist() == [["i2", "i0", "i3"], ["i1"], []] and values.to_pylist() == [[0.5, 0.25, 0.125], [1.5], []]
    bulk = pd.DataFrame(
        {
            "user_id": ["a", "b", "c"],
            "top_k_item_ids": pd.arrays.ArrowExtensionArray(ids),
            "top_k_scores": pd.arrays.ArrowExtensionArray(values),
        }
    )
    python = pd.DataFrame(
        {"user_id": ["a", "b", "c"], "top_k_item_ids": ids.to_pylist(), "top_k_scores": values.to_pylist()}
    )
    assert bulk["top_k_item_ids"].tolist() == python["top_k_item_ids"].tolist()
    pq.write_table(to_arrow(bulk), tmp_path / "bulk.parquet")
    pq.write_table(to_arrow(python), tmp_path / "python.parquet")
    assert pq.read_table(tmp_path / "bulk.parquet").equals(pq.read_table(tmp_path / "python.parquet"))
    assert pq.read_schema(tmp_path / "bulk.parquet").metadata == pq.read_schema(tmp_path / "python.parquet").metadata
    read = pd.read_parquet(tmp_path / "bulk.parquet")  # pandas cannot parse 'list<item: string>[pyarrow]' back
    assert [list(v) for v in read["top_k_item_ids"]] == [["i2", "i0", "i3"], ["i1"], []]
