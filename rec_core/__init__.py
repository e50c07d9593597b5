"""rec_core: the recommender library a backend imports. It never imports Dagster.

The serving entry points are exported lazily (`from rec_core import Recommender`), so a plain
`import rec_core` stays cheap: FAISS, torch and pandas load only when one of them is used.
"""

from importlib import import_module

_LAZY_EXPORTS = {
    "Recommender": "rec_core.serving",
    "RecommenderConfig": "rec_core.serving",
    "Recommendations": "rec_core.serving",
    "RecommendedItem": "rec_core.serving",
    "FeatureSource": "rec_core.serving",
    "InMemoryFeatureSource": "rec_core.serving",
    "ServingError": "rec_core.serving",
    "ItemIndex": "rec_core.index",
    "apply_filters": "rec_core.filtering",
    "UserProfile": "rec_core.filtering",
}

__all__ = sorted(_LAZY_EXPORTS)


def __getattr__(name: str):
    if name in _LAZY_EXPORTS:
        value = getattr(import_module(_LAZY_EXPORTS[name]), name)
        globals()[name] = value  # later look-ups skip this function
        return value
    raise AttributeError(f"module 'rec_core' has no attribute '{name}'")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY_EXPORTS))
