"""Dagster definitions for the recommender platform; the models and data logic live in `rec_core`."""

from rec_assets.definitions import defs

__all__ = ["defs"]
