"""Issue 8 (features part): hostile values reaching feature preprocessing and business filters.

Random, empty, huge, NaN, infinite and negative numbers, unknown categories, mixed types, very
long text, duplicate and dangling ids: each input is either handled (finite features of the
right shape, unknown values in the out-of-vocabulary bucket, filters that never let an excluded
item through) or refused with a ValueError naming the column or rule. Nothing else escapes.
"""

import json
import math
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rec_core.data.schema import INTERACTION_TYPES, POSITIVE_INTERACTION_TYPES
from rec_core.filtering import (
    Available,
    CategoryFilter,
    ExcludeInteracted,
    FilterError,
    MinRating,
    PriceRange,
    UserProfile,
    apply_filters,
    parse_filters,
)
from rec_core.preprocessing import (
    AGE_BUCKETS,
    ITEM_NUMERICAL_COLUMNS,
    USER_CATEGORICAL_COLUMNS,
    USER_NUMERICAL_COLUMNS,
    FittedPreprocessing,
    PreprocessingConfig,
    data_preprocess,
)

SETTINGS = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])

MISSING = st.sampled_from([None, float("nan"), pd.NA])
NUMBER = st.one_of(
    MISSING,
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-(2**70), 2**70),
    st.sampled_from(["", "abc", "1e400", "-5", "nan", "₹1,099", "64%"]),
)
TEXT = st.one_of(
    MISSING,
    st.text(max_size=20),
    st.integers(-3, 3),
    st.floats(allow_nan=False, allow_infinity=True),
    st.sampled_from(
        [
            "",
            "|",
            " || ",
            "Electronics|Audio|Headphones",
            "Electronics|Audio",
            "Home|Kitchen",
            "Unknown|Never|Seen",
            " Home | Kitchen ",
            "x" * 100_000,
            "nan",
            "é|ö|中文",
        ]
    ),
)
ID = st.one_of(
    st.sampled_from(["I0", "I1", "I2", "U0", "U1", "", "x" * 10_000]), st.integers(0, 3), st.text(max_size=8)
)
MOMENT = st.one_of(st.none(), st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(2100, 1, 1)))


def _column(draw, strategy, n):
    return pd.Series(draw(st.lists(strategy, min_size=n, max_size=n)), dtype=object)


def _timestamps(draw, n):
    return pd.Series(
        pd.to_datetime(draw(st.lists(MOMENT, min_size=n, max_size=n)), utc=True), dtype="datetime64[ns, UTC]"
    )


@st.composite
def hostile_tables(draw):
    """(users, items, train interactions) with hostile values in every column."""
    n_items, n_users, n_events = draw(st.integers(0, 6)), draw(st.integers(0, 6)), draw(st.integers(0, 10))
    items = pd.DataFrame(
        {
            "item_id": _column(draw, ID, n_items),
            "product_name": _column(draw, TEXT, n_items),
            "category": _column(draw, TEXT, n_items),
            "actual_price": _column(draw, NUMBER, n_items),
            "discounted_price": _column(draw, NUMBER, n_items),
            "discount_percentage": _column(draw, NUMBER, n_items),
            "rating": _column(draw, NUMBER, n_items),
            "rating_count": _column(draw, NUMBER, n_items),
            "about_product": _column(draw, TEXT, n_items),
            "arrival_date": _timestamps(draw, n_items),
            "img_link": _column(draw, TEXT, n_items),
        }
    )
    users = pd.DataFrame(
        {
            "user_id": _column(draw, ID, n_users),
            "signup_date": _timestamps(draw, n_users),
            "preferences": _column(draw, TEXT, n_users),
            "age": _column(draw, NUMBER, n_users),
            "gender": _column(draw, TEXT, n_users),
        }
    )
    # ids drawn from the tables above and from nowhere (dangling), repeated, of mixed types
    known = list(items["item_id"]) + list(users["user_id"])
    any_id = st.one_of(ID, st.sampled_from(known)) if known else ID
    interactions = pd.DataFrame(
        {
            "interaction_id": [f"e{i}" for i in range(n_events)],
            "user_id": _column(draw, any_id, n_events),
            "item_id": _column(draw, any_id, n_events),
            "timestamp": _timestamps(draw, n_events),
            "interaction_type": _column(draw, st.one_of(st.sampled_from(INTERACTION_TYPES), TEXT), n_events),
            "rating": _column(draw, NUMBER, n_events),
        }
    )
    return users, items, interactions


def _is_missing(value) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def _nodes(values) -> set[str]:
    return {part.strip() for v in values if not _is_missing(v) for part in str(v).split("|") if part.strip()}


def _check_item_features(features, fitted, n):
    assert features.numerical.shape == (n, len(ITEM_NUMERICAL_COLUMNS))
    assert bool(features.numerical.isfinite().all())
    assert features.categorical.shape == (n, fitted.config.category_levels)
    for level, size in enumerate(fitted.category_vocabulary_sizes):
        assert bool(((features.categorical[:, level] >= 0) & (features.categorical[:, level] < size)).all())
    assert features.category_tokens.shape[0] == n
    assert bool(((features.category_tokens >= 0) & (features.category_tokens <= fitted.n_category_nodes)).all())
    assert features.id_index.shape == (n,)
    assert bool(((features.id_index >= 0) & (features.id_index <= fitted.n_item_ids)).all())


def _check_user_features(features, fitted, n):
    assert features.numerical.shape == (n, len(USER_NUMERICAL_COLUMNS))
    assert bool(features.numerical.isfinite().all())
    assert features.categorical.shape == (n, len(USER_CATEGORICAL_COLUMNS))
    assert bool(
        ((features.categorical[:, 0] >= 0) & (features.categorical[:, 0] <= len(fitted.gender_vocabulary))).all()
    )
    assert bool(((features.categorical[:, 1] >= 0) & (features.categorical[:, 1] <= len(AGE_BUCKETS) + 1)).all())
    assert bool(((features.preference_tokens >= 0) & (features.preference_tokens <= fitted.n_category_nodes)).all())


@SETTINGS
@given(tables=hostile_tables())
def test_hostile_tables_give_finite_features_or_a_clear_refusal(tables):
    users, items, interactions = tables
    try:
        fitted, user_features, item_features = data_preprocess(
            users, items, interactions, config=PreprocessingConfig(max_history=4)
        )
    except ValueError as exc:  # DataValidationError is a ValueError
        assert any(column in str(exc) for column in [*users, *items, *interactions]), f"refusal names no column: {exc}"
        return
    _check_item_features(item_features, fitted, len(items))
    _check_user_features(user_features, fitted, len(users))

    # The fitted state is strict JSON with finite statistics: one bad value cannot poison every row.
    stats = [
        *fitted.item_numerical_mean,
        *fitted.item_numerical_std,
        *fitted.user_numerical_mean,
        *fitted.user_numerical_std,
        fitted.reference_time_s,
    ]
    assert all(math.isfinite(v) for v in stats)
    assert FittedPreprocessing.from_json(json.dumps(json.loads(fitted.to_json()), allow_nan=False)) == fitted

    # Vocabularies hold exactly what the data says: no 'nan'/'<NA>' for missing values, ids once each.
    assert fitted.category_nodes == sorted(_nodes(items["category"]) | _nodes(users["preferences"]))
    positives = interactions[interactions["interaction_type"].isin(POSITIVE_INTERACTION_TYPES)]
    assert fitted.item_ids == sorted(set(positives["item_id"].astype(str)))

    history = fitted.history_matrix(list(users["user_id"].astype(str)), interactions)
    assert history.shape == (len(users), 4)
    assert bool(((history >= 0) & (history <= fitted.n_item_ids)).all())


@pytest.fixture(scope="module")
def fitted_on_clean_data():
    users = pd.DataFrame(
        {"user_id": ["U0", "U1"], "preferences": ["Audio", "Kitchen|Audio"], "age": [30, None], "gender": ["f", "m"]}
    )
    items = pd.DataFrame(
        {
            "item_id": ["I0", "I1", "I2"],
            "category": ["Electronics|Audio|Headphones", "Home|Kitchen|Blenders", "Electronics|Audio|Speakers"],
            "actual_price": [100.0, 50.0, 80.0],
            "discounted_price": [90.0, 40.0, 80.0],
            "discount_percentage": [10.0, 20.0, 0.0],
            "rating": [4.5, None, 3.9],
            "rating_count": [10, 0, 3],
            "arrival_date": pd.to_datetime(["2024-01-01", "2024-06-01", "2025-01-01"], utc=True),
        }
    )
    interactions = pd.DataFrame(
        {
            "user_id": ["U0", "U1", "U0"],
            "item_id": ["I0", "I1", "I2"],
            "timestamp": pd.to_datetime(["2025-02-01", "2025-02-02", "2025-02-03"], utc=True),
            "interaction_type": ["purchase", "cart", "positive_view"],
        }
    )
    return data_preprocess(users, items, interactions)[0]


@SETTINGS
@given(tables=hostile_tables())
def test_serving_time_transform_maps_unknown_values_to_the_unknown_bucket(fitted_on_clean_data, tables):
    """A model fitted on clean data meets hostile new rows at serving time: nothing crashes or leaks."""
    fitted = fitted_on_clean_data
    users, items, _ = tables
    item_features = fitted.transform_items(items)
    user_features = fitted.transform_users(users)
    _check_item_features(item_features, fitted, len(items))
    _check_user_features(user_features, fitted, len(users))
    full_paths = [
        "|".join(p.strip() for p in str(c).split("|") if p.strip()) if not _is_missing(c) else ""
        for c in items["category"]
    ]
    known_path = np.array([path in fitted.category_vocabularies[-1] for path in full_paths], dtype=bool)
    np.testing.assert_array_equal(item_features.categorical[:, -1].numpy() > 0, known_path)
    known_id = np.array([str(i) in fitted.item_ids for i in items["item_id"]], dtype=bool)
    np.testing.assert_array_equal(item_features.id_index.numpy() > 0, known_id)
    known_gender = np.array(
        [not _is_missing(g) and str(g) in fitted.gender_vocabulary for g in users["gender"]], dtype=bool
    )
    np.testing.assert_array_equal(user_features.categorical[:, 0].numpy() > 0, known_gender)


@SETTINGS
@given(
    values=st.lists(st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.just(None)), min_size=4, max_size=4),
    ragged=st.booleans(),
)
def test_broken_embeddings_are_zeroed_or_refused(fitted_on_clean_data, values, ragged):
    """Text embeddings holding NaN/inf (a corrupt table) never reach the towers as NaN."""
    users = pd.DataFrame({"user_id": ["U0", "U1"], "preferences": ["Audio", ""], "age": [30, 40], "gender": ["f", "m"]})
    items = pd.DataFrame(
        {
            "item_id": ["I0", "I1"],
            "category": ["A|B", "A|C"],
            "actual_price": [1.0, 2.0],
            "discounted_price": [1.0, 2.0],
            "discount_percentage": [0.0, 0.0],
            "rating": [4.0, 4.0],
            "rating_count": [1, 1],
            "arrival_date": pd.to_datetime(["2024-01-01"] * 2, utc=True),
        }
    )
    interactions = pd.DataFrame(
        {
            "user_id": ["U0"],
            "item_id": ["I0"],
            "timestamp": pd.to_datetime(["2025-01-01"], utc=True),
            "interaction_type": ["purchase"],
        }
    )
    good = np.ones(4, np.float32)
    broken = np.asarray([np.nan if v is None else v for v in values], np.float32)
    if ragged:
        broken = broken[:3]
    embeddings = pd.DataFrame(
        {"item_id": ["I0", "I1"], "name_embedding": [good, broken], "description_embedding": [good, good]}
    )
    try:
        _, _, features = data_preprocess(users, items, interactions, item_text_embeddings=embeddings)
    except ValueError as exc:
        assert "name_embedding" in str(exc)
        return
    assert not ragged, "embeddings of different lengths were accepted"
    assert features.text.shape == (2, 8) and bool(features.text.isfinite().all())


# ---- business filters ---------------------------------------------------------------------------
@st.composite
def hostile_recommendations(draw):
    n = draw(st.integers(0, 8))
    return pd.DataFrame(
        {
            "item_id": _column(draw, ID, n),
            "category": _column(draw, TEXT, n),
            "discounted_price": _column(draw, NUMBER, n),
            "rating": _column(draw, NUMBER, n),
            "rating_count": _column(draw, NUMBER, n),
            "arrival_date": _timestamps(draw, n),
        }
    )


VALID_BOUND = st.one_of(st.floats(allow_nan=False, allow_infinity=True), st.integers(-10, 10**6))
HOSTILE_OPTION = st.one_of(st.none(), st.floats(allow_nan=True), st.sampled_from(["50", "cheap", True, [], {}]), TEXT)


def rule_specs(bound, count, node):
    """Filter specs as a request would send them (dicts), with options drawn from the given strategies."""
    return st.one_of(
        st.fixed_dictionaries(
            {
                "rule": st.just("price_range"),
                "min_price": st.one_of(st.none(), bound),
                "max_price": st.one_of(st.none(), bound),
            }
        ),
        st.fixed_dictionaries(
            {"rule": st.just("min_rating"), "min_rating": bound, "min_count": count, "keep_unrated": st.booleans()}
        ),
        st.fixed_dictionaries(
            {"rule": st.just("category"), "include": st.lists(node, max_size=2), "exclude": st.lists(node, max_size=2)}
        ),
        st.fixed_dictionaries(
            {"rule": st.just("exclude_interacted"), "interaction_types": st.one_of(st.none(), st.just(["purchase"]))}
        ),
        st.fixed_dictionaries(
            {"rule": st.just("available"), "as_of": MOMENT, "out_of_stock": st.lists(ID, max_size=3)}
        ),
    )


NODE = st.one_of(
    st.sampled_from(["audio", "Electronics", " Home ", "KITCHEN", "Unknown|Never", ""]), st.text(max_size=12)
)
VALID_SPECS = rule_specs(VALID_BOUND, st.integers(-1, 5), NODE)
HOSTILE_SPECS = rule_specs(st.one_of(VALID_BOUND, HOSTILE_OPTION), st.one_of(st.integers(-1, 5), HOSTILE_OPTION), TEXT)
RULE_NAMES = ("price_range", "min_rating", "category", "available", "exclude_interacted")


def _numbers(values) -> np.ndarray:
    return pd.to_numeric(pd.Series(values, dtype=object), errors="coerce").to_numpy(np.float64)


def _violations(rule, kept: pd.DataFrame, profile: UserProfile) -> list:
    """Rows of `kept` the rule should have excluded, judged from the raw values."""
    if isinstance(rule, PriceRange):
        price = _numbers(kept["discounted_price"])
        low = -np.inf if rule.min_price is None else rule.min_price
        high = np.inf if rule.max_price is None else rule.max_price
        return list(kept["item_id"][~(np.isfinite(price) & (price >= low) & (price <= high))])
    if isinstance(rule, MinRating):
        rating, count = _numbers(kept["rating"]), np.nan_to_num(_numbers(kept["rating_count"]), nan=0.0)
        ok = (rating >= rule.min_rating) & ((count >= rule.min_count) if rule.min_count else True)
        return list(kept["item_id"][~(ok | (rule.keep_unrated & np.isnan(rating)))])
    if isinstance(rule, CategoryFilter):
        paths = [[p.strip().lower() for p in str(c).split("|")] if not _is_missing(c) else [] for c in kept["category"]]
        return [
            item
            for item, path in zip(kept["item_id"], paths)
            if any(str(node).strip().lower() in path for node in rule.exclude if "|" not in str(node))
        ]
    if isinstance(rule, ExcludeInteracted):
        return [i for i in kept["item_id"] if str(i) in profile.items_with(rule.interaction_types)]
    if isinstance(rule, Available):
        as_of = pd.Timestamp(rule.as_of or datetime.now(UTC))
        as_of = as_of.tz_localize("UTC") if as_of.tzinfo is None else as_of
        late = kept["arrival_date"].isna() | (kept["arrival_date"] > as_of)
        return list(kept["item_id"][late]) + [i for i in kept["item_id"] if str(i) in rule.out_of_stock]
    raise AssertionError(rule)


@SETTINGS
@given(
    recommendations=hostile_recommendations(),
    specs=st.lists(VALID_SPECS, max_size=3),
    seen=st.lists(ID.map(str), max_size=4),
)
def test_filters_never_let_an_excluded_item_through(recommendations, specs, seen):
    profile = UserProfile("U0", interacted={"purchase": frozenset(seen[:2]), "negative_view": frozenset(seen[2:])})
    try:
        rules = parse_filters(specs)
    except FilterError as exc:  # only contradictory bounds may be refused here
        assert "price_range" in str(exc) and "above max_price" in str(exc), str(exc)
        return
    kept = apply_filters(recommendations, profile, rules)
    assert list(kept.index) == [i for i in recommendations.index if i in set(kept.index)]  # a subset, rank order kept
    for rule in rules:
        assert not _violations(rule, kept, profile), rule


@SETTINGS
@given(specs=st.lists(HOSTILE_SPECS, min_size=1, max_size=2))
def test_filter_options_of_the_wrong_type_are_refused_when_parsed(specs):
    """A request's filter options that are strings, NaN, lists or None where numbers belong are refused
    with a FilterError naming the rule when the rules are parsed, never a crash while filtering."""
    frame = pd.DataFrame(
        {
            "item_id": ["A", "B"],
            "category": ["Home|Kitchen", "Electronics|Audio"],
            "discounted_price": [10.0, 20.0],
            "rating": [4.0, None],
            "rating_count": [3, 0],
            "arrival_date": pd.to_datetime(["2024-01-01", "2024-02-01"], utc=True),
        }
    )
    try:
        rules = parse_filters(specs)
    except FilterError as exc:
        assert any(name in str(exc) for name in RULE_NAMES), str(exc)
        return
    kept = apply_filters(frame, None, rules)
    assert set(kept["item_id"]) <= {"A", "B"}


def test_unparseable_arrival_dates_are_refused_naming_the_column():
    frame = pd.DataFrame({"item_id": ["A", "B"], "arrival_date": ["2024-01-01", "the day after tomorrow"]})
    with pytest.raises(FilterError, match="arrival_date"):
        apply_filters(frame, None, [Available()])
