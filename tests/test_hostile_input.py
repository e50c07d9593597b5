"""Issue 8 (data part): random, empty, huge, NaN, infinite, negative, mixed-type and non-UTF-8
input to the readers is either accepted as valid or refused with a DataValidationError naming
the source; nothing else escapes."""

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rec_core.data.validation import DataValidationError, conform
from rec_core.storage import read_input_table

ANY_VALUE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.sampled_from(["", "nan", "inf", "-1", "2024-01-01", "₹1,099", "64%", "x" * 5000]),
)
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _valid_items(n):
    return pd.DataFrame(
        {
            "item_id": [f"I{i}" for i in range(n)],
            "product_name": "thing",
            "category": "A|B|C",
            "actual_price": 10.0,
            "discounted_price": 9.0,
            "discount_percentage": 10.0,
            "rating": 4.0,
            "rating_count": 3,
            "about_product": "text",
            "arrival_date": pd.Timestamp("2024-01-01", tz="UTC"),
            "img_link": None,
        }
    )


@SETTINGS
@given(column=st.sampled_from(list(_valid_items(1).columns)), values=st.lists(ANY_VALUE, min_size=1, max_size=8))
def test_items_with_hostile_column_are_accepted_or_refused_clearly(column, values):
    frame = _valid_items(len(values))
    frame[column] = pd.Series(values, dtype=object)
    try:
        table = conform(frame, "items", "hostile.parquet")
    except DataValidationError as exc:
        assert "hostile.parquet" in str(exc)
        return
    # Accepted: then every value is within its rules.
    out = table.to_pandas()
    assert out["item_id"].is_unique
    prices = out["actual_price"].to_numpy(dtype=float)
    assert np.all(np.isfinite(prices)) and np.all(prices >= 0)
    assert np.all((out["discount_percentage"] >= 0) & (out["discount_percentage"] <= 100))


@SETTINGS
@given(raw=st.binary(max_size=400))
def test_random_bytes_as_csv_are_refused_clearly(tmp_path_factory, raw):
    path = tmp_path_factory.mktemp("fuzz") / "interactions.csv"
    path.write_bytes(raw)
    with pytest.raises(DataValidationError) as err:
        read_input_table(path, "interactions")
    assert "interactions.csv" in str(err.value)


@SETTINGS
@given(ratings=st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=1, max_size=10))
def test_interaction_ratings(ratings):
    frame = pd.DataFrame(
        {
            "interaction_id": [f"x{i}" for i in range(len(ratings))],
            "user_id": "u",
            "item_id": "i",
            "timestamp": pd.Timestamp("2024-01-01", tz="UTC"),
            "interaction_type": "rate",
            "rating": ratings,
            "quantity": None,
            "review_title": None,
            "review_content": None,
        }
    )
    infinite = sum(math.isinf(r) for r in ratings)
    out_of_range = sum(1 for r in ratings if math.isfinite(r) and not (0 <= r <= 5))
    if infinite or out_of_range:
        with pytest.raises(DataValidationError) as err:
            conform(frame, "interactions", "events.csv")
        # Infinite values are reported first, then finite values out of range.
        assert err.value.column == "rating"
        assert err.value.bad_rows == (infinite if infinite else out_of_range)
    else:
        assert conform(frame, "interactions", "events.csv").num_rows == len(ratings)


def test_very_long_text_is_kept_intact():
    frame = _valid_items(2)
    frame.loc[0, "about_product"] = "é" * 200_000
    table = conform(frame, "items", "long.parquet")
    assert len(table.column("about_product")[0].as_py()) == 200_000
