"""Business filters on recommendations: declarative rules evaluated as numpy masks.

Why rules are data: which items a shop may show (arrived and in stock, not already bought, a
category or price band, a minimum rating) is policy that changes without code changes, so each
rule is a small frozen dataclass that can also be written as a dict (`parse_filters`), e.g.
`{"rule": "price_range", "max_price": 50}`. No rule looks at age or gender: filters act on what
the user did and what the request asks for, never on demographic stereotypes.

Why masks: a serving request evaluates the rules on a few hundred candidate rows of
`ItemAttributes` (columns turned into arrays once, at load), so filtering costs microseconds and
never touches pandas. `apply_filters` runs the same rules on a recommendations DataFrame.
For the offline top-k of every user, a per-user rule that only drops a few items per user
(`ExcludeInteracted`) also lists them as (user, row) pairs (`ListsExcludedRows`), which the
batched index search skips directly.

A new rule needs no change here: a class with `name`, `per_user` and `keep` (the `FilterRule`
protocol) can be passed in `filters=` as an object, and `register_filter_rule(name, factory)`
makes `{"rule": name, ...}` build it in dict specs, the HTTP service's included.
"""

from __future__ import annotations

import functools
import itertools
import math
import numbers
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import ClassVar, Protocol, runtime_checkable

import numpy as np
import pandas as pd

from rec_core.data.schema import split_pipe

BULK_LOOKUP_MIN = 4096
"""From this many ids on, `ItemAttributes.rows_of` looks them up in one pandas hash-table call, not id by id."""


class FilterError(ValueError):
    """A filter that cannot be built or applied (unknown rule, bad option, missing column)."""


@dataclass(frozen=True)
class UserProfile:
    """What filters may know about a user: identity, stated preferences and past interactions."""

    user_id: str | None = None
    age: int | None = None
    gender: str | None = None
    preferences: tuple[str, ...] = ()  # stated category node names
    interacted: Mapping[str, frozenset[str]] = field(default_factory=dict)  # interaction type -> item ids

    def items_with(self, interaction_types: Iterable[str] | None) -> set[str]:
        """Item ids the user interacted with through any of `interaction_types` (all types when None)."""
        groups = self.item_groups(interaction_types)
        return set(groups[0]) if len(groups) == 1 else set().union(*groups)

    def item_groups(self, interaction_types: Iterable[str] | None) -> list[frozenset[str]]:
        """The item-id sets of `interaction_types` (all when None): an id can be in several."""
        if interaction_types is None:
            return list(self.interacted.values())
        return [self.interacted[kind] for kind in interaction_types if kind in self.interacted]


def as_profile(user_profile: UserProfile | Mapping | None) -> UserProfile | None:
    """Accepts a `UserProfile`, a plain dict with the same keys, or None (an anonymous request)."""
    if user_profile is None or isinstance(user_profile, UserProfile):
        return user_profile
    if not isinstance(user_profile, Mapping):
        raise FilterError(f"user_profile must be a UserProfile or a dict, got {type(user_profile).__name__}")
    preferences = user_profile.get("preferences") or ()
    if isinstance(preferences, str):
        preferences = split_pipe(preferences)
    interacted = {str(kind): frozenset(map(str, ids)) for kind, ids in (user_profile.get("interacted") or {}).items()}
    return UserProfile(
        user_profile.get("user_id"),
        user_profile.get("age"),
        user_profile.get("gender"),
        tuple(str(p) for p in preferences),
        interacted,
    )


class ItemAttributes:
    """The item columns filters read, as arrays in a fixed row order (the index's), built once.

    Columns absent from the source frame are simply unavailable; a rule that needs one fails with
    a `FilterError` naming it.
    """

    def __init__(self, items: pd.DataFrame):
        self.item_ids = items["item_id"].astype(str).to_numpy(dtype=object)
        position_of = {item_id: row for row, item_id in enumerate(self.item_ids)}
        self._position_of = position_of if len(position_of) == len(self.item_ids) else None  # None: ids repeat
        self._columns: dict[str, np.ndarray] = {}
        if "discounted_price" in items:
            self._columns["price"] = pd.to_numeric(items["discounted_price"], errors="coerce").to_numpy(np.float64)
        if "rating" in items:
            self._columns["rating"] = pd.to_numeric(items["rating"], errors="coerce").to_numpy(np.float64)
        if "rating_count" in items:
            self._columns["rating_count"] = (
                pd.to_numeric(items["rating_count"], errors="coerce").fillna(0).to_numpy(np.int64)
            )
        if "arrival_date" in items:
            arrival = pd.to_datetime(items["arrival_date"], utc=True, errors="coerce")
            unparsed = int((arrival.isna() & items["arrival_date"].notna()).sum())
            if unparsed:
                raise FilterError(f"items: column 'arrival_date' has {unparsed} value(s) that are not dates")
            # a missing date is NaT, the smallest int64: marked so that 'available' never passes it
            self._columns["arrival_ns"] = arrival.to_numpy("datetime64[ns]").astype(np.int64)
        if "category" in items:
            # lower case, no spaces around '|': the node names preprocessing and the request use
            category = (
                items["category"].astype("string").fillna("").str.lower().str.replace(r"\s*\|\s*", "|", regex=True)
            )
            self._columns["category"] = category.str.strip().to_numpy(dtype=object)
        self._category_masks: dict[str, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.item_ids)

    def column(self, name: str, rule: str) -> np.ndarray:
        if name not in self._columns:
            raise FilterError(f"filter '{rule}' needs the item column behind '{name}', which these items lack")
        return self._columns[name]

    def rows_of(self, item_ids: Iterable[str], count: int) -> np.ndarray:
        """[count] int64 catalog rows of the `count` ids in `item_ids`, -1 for ids not in the catalog."""
        if self._position_of is None:
            raise FilterError("item ids repeat, so an id does not name one row")
        if count < BULK_LOOKUP_MIN:
            return np.fromiter(map(self._position_of.get, item_ids, itertools.repeat(-1)), dtype=np.int64, count=count)
        return self._id_index.get_indexer(np.fromiter(item_ids, dtype=object, count=count)).astype(np.int64)

    @functools.cached_property
    def _id_index(self) -> pd.Index:
        """The ids as a pandas Index, whose hash table is built on first use and kept."""
        return pd.Index(self.item_ids)

    def has_id(self, rows: np.ndarray, item_ids: set[str] | frozenset[str]) -> np.ndarray:
        """[len(rows)] bool: the row's item id is in `item_ids` (rows may repeat an id, e.g. one per user)."""
        if self._position_of is not None and len(rows) > 4096 and len(item_ids) < len(rows):  # a catalog scan
            positions = self.rows_of(item_ids, len(item_ids))
            return np.isin(rows, positions[positions >= 0])
        return np.fromiter((i in item_ids for i in self.item_ids[rows]), dtype=bool, count=len(rows))

    def category_mask(self, node: str, rule: str) -> np.ndarray:
        """[n_items] bool: the item's taxonomy path contains `node` (a node name, or a path prefix with '|')."""
        key = node.strip().lower()
        if key not in self._category_masks:
            paths = self.column("category", rule)
            if "|" in key:
                matches = [p == key or p.startswith(key + "|") for p in paths]
            else:
                matches = [key in p.split("|") for p in paths]
            self._category_masks[key] = np.fromiter(matches, dtype=bool, count=len(paths))
        return self._category_masks[key]


def _utc_ns(moment: datetime | None) -> int:
    """Nanoseconds since the epoch of `moment` (naive means UTC), or of now when None."""
    if moment is None:
        return time.time_ns()
    stamp = pd.Timestamp(moment)
    return (stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp).value


def _require_number(rule: str, option: str, value, optional: bool = False) -> None:
    """Options arrive from requests as JSON: a string, bool, NaN or list where a number belongs is refused here,
    not met as a TypeError (or a silently empty result) while filtering."""
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or math.isnan(value):
        raise FilterError(f"{rule}: {option} must be a number, got {value!r}")


@runtime_checkable
class FilterRule(Protocol):
    """What every rule is, built in or written by a user: any class with these three members.

    `keep` sees candidate rows, not whole tables, so it must answer from `items` (columns as
    arrays, `ItemAttributes`) and the optional profile with array operations. A rule whose
    answer depends on the user sets `per_user`, so the batched top-k evaluates it per user
    rather than once for the catalog. Subclassing `FilterRule` is optional.
    """

    name: ClassVar[str]  # the rule's name in dict specs and messages
    per_user: ClassVar[bool]  # True when the result depends on the user profile, not only on the item

    def keep(self, items: ItemAttributes, rows: np.ndarray, profile: UserProfile | None) -> np.ndarray:
        """[len(rows)] bool: which of the candidate rows this rule lets through."""


@runtime_checkable
class ListsExcludedRows(Protocol):
    """A per-user rule that can list what it drops for a block of users, so the batched top-k skips
    those (user, row) pairs inside one index search instead of serving each user alone."""

    def excluded_rows(
        self, items: ItemAttributes, profiles: Sequence[UserProfile | None]
    ) -> tuple[np.ndarray, np.ndarray]:
        """(user positions in `profiles`, catalog rows): two int64 arrays of equal length."""


@dataclass(frozen=True)
class Available:
    """Only items that have arrived (arrival_date <= as_of, default now) and are not out of stock.

    The catalog has no stock column, so stock comes from the caller (an inventory service) as a
    set of out-of-stock item ids.
    """

    as_of: datetime | None = None  # None: the time of the request
    out_of_stock: frozenset[str] = frozenset()
    name: ClassVar[str] = "available"
    per_user: ClassVar[bool] = False

    def keep(self, items, rows, profile):
        arrival = items.column("arrival_ns", self.name)[rows]
        keep = (arrival != np.iinfo(np.int64).min) & (arrival <= _utc_ns(self.as_of))  # unknown arrival: not available
        if self.out_of_stock:
            keep &= ~items.has_id(rows, self.out_of_stock)
        return keep


@dataclass(frozen=True)
class ExcludeInteracted:
    """Drops items the user already interacted with; `interaction_types=("purchase",)` drops only purchases."""

    interaction_types: tuple[str, ...] | None = None  # None: any interaction, negative views included
    name: ClassVar[str] = "exclude_interacted"
    per_user: ClassVar[bool] = True  # depends on the user, not only the item

    def keep(self, items, rows, profile):
        if profile is None:
            return np.ones(len(rows), dtype=bool)
        seen = profile.items_with(self.interaction_types)
        if not seen:
            return np.ones(len(rows), dtype=bool)
        return ~items.has_id(rows, seen)

    def excluded_rows(self, items, profiles):
        """The (user position, catalog row) pairs this rule drops for `profiles`, as two int64 arrays:
        what a batch of users' top-k searches skip, instead of testing every candidate."""
        groups = [[] if p is None else p.item_groups(self.interaction_types) for p in profiles]
        counts = [sum(map(len, user_groups)) for user_groups in groups]  # an id in two groups is listed twice: harmless
        owners = np.repeat(np.arange(len(groups), dtype=np.int64), counts)
        rows = items.rows_of(itertools.chain.from_iterable(itertools.chain.from_iterable(groups)), sum(counts))
        return owners[rows >= 0], rows[rows >= 0]


@dataclass(frozen=True)
class CategoryFilter:
    """Keeps items under any `include` node (when given) and under no `exclude` node.

    A value is a taxonomy node name ('Audio') or a path prefix ('Electronics|Audio'), case-insensitive.
    """

    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    name: ClassVar[str] = "category"
    per_user: ClassVar[bool] = False

    def __post_init__(self):
        for option in ("include", "exclude"):
            odd = [v for v in getattr(self, option) if not isinstance(v, str)]
            if odd:
                raise FilterError(f"category: {option} holds {odd!r}, which are not category names (strings)")

    def keep(self, items, rows, profile):
        keep = np.ones(len(rows), dtype=bool)
        if self.include:
            keep &= np.logical_or.reduce([items.category_mask(n, self.name)[rows] for n in self.include])
        for node in self.exclude:
            keep &= ~items.category_mask(node, self.name)[rows]
        return keep


@dataclass(frozen=True)
class PriceRange:
    """Selling price (discounted_price) within [min_price, max_price]; either bound may be open."""

    min_price: float | None = None
    max_price: float | None = None
    name: ClassVar[str] = "price_range"
    per_user: ClassVar[bool] = False

    def __post_init__(self):
        _require_number(self.name, "min_price", self.min_price, optional=True)
        _require_number(self.name, "max_price", self.max_price, optional=True)
        if self.min_price is not None and self.max_price is not None and self.min_price > self.max_price:
            raise FilterError(f"price_range: min_price {self.min_price} is above max_price {self.max_price}")

    def keep(self, items, rows, profile):
        price = items.column("price", self.name)[rows]
        keep = np.isfinite(price)
        if self.min_price is not None:
            keep &= price >= self.min_price
        if self.max_price is not None:
            keep &= price <= self.max_price
        return keep


@dataclass(frozen=True)
class MinRating:
    """Average rating at least `min_rating` from at least `min_count` ratings; unrated items fail unless `keep_unrated`."""

    min_rating: float = 0.0
    min_count: int = 0
    keep_unrated: bool = False
    name: ClassVar[str] = "min_rating"
    per_user: ClassVar[bool] = False

    def __post_init__(self):
        _require_number(self.name, "min_rating", self.min_rating)
        _require_number(self.name, "min_count", self.min_count)

    def keep(self, items, rows, profile):
        rating = items.column("rating", self.name)[rows]
        rated = ~np.isnan(rating)
        keep = rated & (np.nan_to_num(rating, nan=-np.inf) >= self.min_rating)
        if self.min_count:
            keep &= items.column("rating_count", self.name)[rows] >= self.min_count
        if self.keep_unrated:
            keep |= ~rated
        return keep


RULES: dict[str, Callable[..., FilterRule]] = {}
"""Rule names usable in dict specs, `{"rule": NAME, **options}`, and the factory each calls with the options;
filled by `register_filter_rule`."""


def register_filter_rule(name: str, factory: Callable[..., FilterRule]) -> None:
    """Makes `{"rule": name, **options}` build `factory(**options)` wherever filters are given as dicts:
    `Recommender` methods, `apply_filters` and the HTTP service's `filters` parameter.

    Registering a name again with another factory is refused, so two packages cannot silently
    replace each other's rule (or a built-in one).
    """
    if not isinstance(name, str) or not name:
        raise FilterError(f"a filter rule name must be a non-empty string, got {name!r}")
    if not callable(factory):
        raise FilterError(f"filter rule '{name}': the factory must be callable, got {type(factory).__name__}")
    if RULES.get(name, factory) is not factory:
        raise FilterError(f"filter rule '{name}' is already registered to {RULES[name]!r}")
    RULES[name] = factory


for _rule in (Available, ExcludeInteracted, CategoryFilter, PriceRange, MinRating):
    register_filter_rule(_rule.name, _rule)


def parse_filters(specs: Sequence[FilterRule | Mapping] | None) -> list[FilterRule]:
    """Rules from rule objects or dicts like `{"rule": "category", "include": ["Audio"]}`."""
    rules: list[FilterRule] = []
    for spec in specs or ():
        if not isinstance(spec, Mapping):
            if not isinstance(spec, FilterRule):
                raise FilterError(f"not a filter rule (a FilterRule has name, per_user and keep): {spec!r}")
            rules.append(spec)
            continue
        options = dict(spec)
        name = options.pop("rule", None)
        if name not in RULES:
            raise FilterError(
                f"unknown filter rule {name!r}; known rules: {', '.join(RULES)} "
                "(others are added with rec_core.filtering.register_filter_rule)"
            )
        for key in ("include", "exclude", "interaction_types"):  # built-in options that JSON writes as lists
            if isinstance(options.get(key), (list, str)):
                value = options[key]
                options[key] = (value,) if isinstance(value, str) else tuple(value)
        if "out_of_stock" in options:
            options["out_of_stock"] = frozenset(map(str, options["out_of_stock"]))
        try:
            rule = RULES[name](**options)
        except TypeError as exc:
            raise FilterError(f"filter rule '{name}': {exc}") from None
        if not isinstance(rule, FilterRule):
            raise FilterError(
                f"filter rule '{name}': its factory returned {type(rule).__name__}, not a FilterRule "
                "(name, per_user and keep)"
            )
        rules.append(rule)
    return rules


def keep_mask(
    items: ItemAttributes, rows: np.ndarray, profile: UserProfile | None, rules: Sequence[FilterRule]
) -> np.ndarray:
    """[len(rows)] bool: candidates that pass every rule."""
    rows = np.asarray(rows, dtype=np.int64)
    keep = np.ones(len(rows), dtype=bool)
    for rule in rules:
        if not keep.any():
            break
        keep &= rule.keep(items, rows, profile)
    return keep


def apply_filters(
    recommendations: pd.DataFrame,
    user_profile: UserProfile | Mapping | None = None,
    filters: Sequence[FilterRule | Mapping] | None = None,
) -> pd.DataFrame:
    """The rows of `recommendations` (item_id plus the item columns the rules read) that pass every filter.

    Order is preserved, so a ranked list stays ranked.
    """
    if "item_id" not in recommendations:
        raise FilterError("recommendations: column 'item_id' is missing")
    items = ItemAttributes(recommendations)
    keep = keep_mask(items, np.arange(len(recommendations)), as_profile(user_profile), parse_filters(filters))
    return recommendations.loc[keep]
