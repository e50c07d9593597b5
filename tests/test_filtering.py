"""Declarative filters: one test per rule, dict specs, and `apply_filters` on a recommendations frame."""

from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest

from rec_core.filtering import (
    BULK_LOOKUP_MIN,
    Available,
    CategoryFilter,
    ExcludeInteracted,
    FilterError,
    ItemAttributes,
    MinRating,
    PriceRange,
    UserProfile,
    apply_filters,
    keep_mask,
    parse_filters,
)


@pytest.fixture
def recommendations() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "item_id": ["A", "B", "C", "D", "E"],
            "score": [0.9, 0.8, 0.7, 0.6, 0.5],
            "category": [
                "Electronics|Audio|Headphones",
                "Electronics|Audio|Speakers",
                "Home|Kitchen|Blenders",
                "Electronics|Computers|Laptops",
                "Clothing|Women|Dresses",
            ],
            "discounted_price": [49.0, 120.0, 30.0, 900.0, 25.0],
            "rating": [4.5, 3.2, None, 4.8, 4.0],
            "rating_count": [120, 40, 0, 3, 60],
            "arrival_date": pd.to_datetime(
                ["2025-01-01", "2025-06-01", "2025-03-01", "2026-03-01", "2024-12-01"], utc=True
            ),
        }
    )


def kept(frame, profile=None, filters=()):
    return apply_filters(frame, profile, list(filters))["item_id"].tolist()


def test_availability_arrived_and_in_stock(recommendations):
    as_of = datetime(2025, 7, 1, tzinfo=UTC)
    assert kept(recommendations, filters=[Available(as_of=as_of)]) == ["A", "B", "C", "E"]  # D arrives 2026-03
    assert kept(recommendations, filters=[Available(as_of=as_of, out_of_stock=frozenset({"B"}))]) == ["A", "C", "E"]
    assert kept(recommendations, filters=[Available(as_of=datetime(2025, 2, 1))]) == ["A", "E"]  # naive = UTC


def test_exclude_interacted_any_or_only_purchases(recommendations):
    profile = UserProfile("U1", interacted={"purchase": frozenset({"A"}), "positive_view": frozenset({"C"})})
    assert kept(recommendations, profile, [ExcludeInteracted()]) == ["B", "D", "E"]
    assert kept(recommendations, profile, [ExcludeInteracted(("purchase",))]) == ["B", "C", "D", "E"]
    assert kept(recommendations, None, [ExcludeInteracted()]) == ["A", "B", "C", "D", "E"]  # anonymous request


def test_exclude_interacted_lists_the_pairs_it_drops(recommendations):
    items = ItemAttributes(recommendations)
    profiles = [
        UserProfile("U1", interacted={"purchase": frozenset({"A"}), "positive_view": frozenset({"C", "Z"})}),
        None,
        UserProfile("U3", interacted={"purchase": frozenset({"E"})}),
    ]
    owners, rows = ExcludeInteracted().excluded_rows(items, profiles)
    assert sorted(zip(owners.tolist(), rows.tolist())) == [(0, 0), (0, 2), (2, 4)]  # Z is not in the catalog
    owners, rows = ExcludeInteracted(("positive_view",)).excluded_rows(items, profiles)
    assert list(zip(owners.tolist(), rows.tolist())) == [(0, 2)]


def test_bulk_id_lookup_matches_one_by_one():
    catalog = pd.DataFrame({"item_id": [f"I{i}" for i in range(6000)]})
    items = ItemAttributes(catalog)
    wanted = [f"I{i}" for i in range(0, 12000, 2)]  # half of them unknown
    bulk = items.rows_of(iter(wanted), len(wanted))
    assert len(wanted) >= BULK_LOOKUP_MIN
    assert bulk.tolist() == [int(w[1:]) if int(w[1:]) < 6000 else -1 for w in wanted]
    assert items.rows_of(iter(wanted[:10]), 10).tolist() == bulk[:10].tolist()


def test_category_include_exclude_by_node_or_path(recommendations):
    assert kept(recommendations, filters=[CategoryFilter(include=("audio",))]) == ["A", "B"]
    assert kept(recommendations, filters=[CategoryFilter(include=("Electronics",), exclude=("Speakers",))]) == [
        "A",
        "D",
    ]
    assert kept(recommendations, filters=[CategoryFilter(include=("Electronics|Computers",))]) == ["D"]
    assert kept(recommendations, filters=[CategoryFilter(exclude=("Home", "Clothing"))]) == ["A", "B", "D"]
    # a path prefix matches whole nodes only: 'Electronics|Aud' is not 'Electronics|Audio'
    assert kept(recommendations, filters=[CategoryFilter(include=("Electronics|Aud",))]) == []


def test_price_range(recommendations):
    assert kept(recommendations, filters=[PriceRange(min_price=30, max_price=120)]) == ["A", "B", "C"]
    assert kept(recommendations, filters=[PriceRange(max_price=29.99)]) == ["E"]
    with pytest.raises(FilterError, match="above max_price"):
        PriceRange(min_price=10, max_price=5)


def test_min_rating_with_count_and_unrated(recommendations):
    assert kept(recommendations, filters=[MinRating(4.0)]) == ["A", "D", "E"]
    assert kept(recommendations, filters=[MinRating(4.0, min_count=10)]) == ["A", "E"]
    assert kept(recommendations, filters=[MinRating(4.0, keep_unrated=True)]) == ["A", "C", "D", "E"]


def test_rules_combine_and_preserve_rank_order(recommendations):
    profile = {"user_id": "U1", "interacted": {"cart": ["A"]}}
    out = apply_filters(
        recommendations, profile, [{"rule": "exclude_interacted"}, {"rule": "price_range", "max_price": 200}]
    )
    assert out["item_id"].tolist() == ["B", "C", "E"]
    assert out["score"].is_monotonic_decreasing


def test_dict_specs_parse_to_rules():
    rules = parse_filters(
        [
            {"rule": "available", "out_of_stock": ["X"]},
            {"rule": "category", "include": "Audio"},
            {"rule": "exclude_interacted", "interaction_types": ["purchase"]},
            {"rule": "min_rating", "min_rating": 4},
        ]
    )
    assert rules == [
        Available(out_of_stock=frozenset({"X"})),
        CategoryFilter(include=("Audio",)),
        ExcludeInteracted(("purchase",)),
        MinRating(4),
    ]
    with pytest.raises(FilterError, match="unknown filter rule 'age_gate'"):
        parse_filters([{"rule": "age_gate"}])
    with pytest.raises(FilterError, match="price_range"):
        parse_filters([{"rule": "price_range", "cheapest": 3}])


def test_missing_column_names_the_rule(recommendations):
    with pytest.raises(FilterError, match="'min_rating'"):
        apply_filters(recommendations.drop(columns=["rating"]), None, [MinRating(3)])
    with pytest.raises(FilterError, match="item_id"):
        apply_filters(recommendations.drop(columns=["item_id"]), None, [])


def test_masks_on_candidate_rows_match_whole_catalog(recommendations):
    items = ItemAttributes(recommendations)
    rules = [CategoryFilter(include=("Electronics",)), PriceRange(max_price=500)]
    everything = keep_mask(items, np.arange(5), None, rules)
    candidates = np.array([3, 0, 1])
    np.testing.assert_array_equal(keep_mask(items, candidates, None, rules), everything[candidates])
