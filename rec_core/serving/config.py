"""`RecommenderConfig`: the limits and defaults every request is checked against, and those checks.

Kept apart from the code that answers requests so that each part (recommendations, search,
the batched top-k) reads the same limits and turns bad arguments into the same errors.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from rec_core.filtering import Available, ExcludeInteracted, FilterRule, parse_filters
from rec_core.serving.results import InvalidRequestError


def _default_recommend_filters() -> list[FilterRule]:
    return [Available(), ExcludeInteracted()]


def _default_search_filters() -> list[FilterRule]:
    return [Available()]


@dataclass
class RecommenderConfig:
    max_k: int = 1000  # larger k is refused: a response that long is a bug or an abuse, not a request
    overfetch_factor: int = 4  # first search asks for k * factor (+ items the user already saw)
    search_rounds: int = 3  # over-fetch rounds, sized by the survival rate so far, before a restricted search
    max_fetch: int = 256  # a round needing more candidates than this searches only the allowed rows instead
    faiss_threads: int = 1  # one request per core: intra-query threads only add latency at this size
    name_weight: float = 0.5  # semantic text search: weight of name vs description similarity
    max_query_chars: int = 500  # longer text queries are refused
    recommend_filters: list = field(default_factory=_default_recommend_filters)  # when filters=None
    search_filters: list = field(default_factory=_default_search_filters)  # similar/search when filters=None
    device: str = "cpu"  # torch device of the user tower (cold start) and query encoders
    text_model: str = ""  # sentence-transformers model for queries; empty: the one that built item_text_embeddings
    clip_model: str = ""  # empty: the model named in item_clip_embeddings


def checked_k(config: RecommenderConfig, k) -> int:
    """`k` as an int within 1..max_k, else an `InvalidRequestError` saying which bound it broke."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise InvalidRequestError(f"k must be an integer, got {k!r}")
    if k <= 0:
        raise InvalidRequestError(f"k must be at least 1, got {k}")
    if k > config.max_k:
        raise InvalidRequestError(f"k={k} is above the limit of {config.max_k} (RecommenderConfig.max_k)")
    return int(k)


def request_rules(filters, default: list) -> list[FilterRule]:
    """The rules of a request's `filters` (rule objects or dict specs), `default` when None."""
    try:
        return parse_filters(default if filters is None else filters)
    except ValueError as exc:
        raise InvalidRequestError(str(exc)) from None
