"""Recommendations for one user: a known user's precomputed vector, or a cold start from features.

A user the feature source has a profile for but no embedding (signed up after the last
materialization), and a request that only describes a user (`recommend_for_features`), are
encoded on the fly by the two-tower model's user tower from demographics and stated
preferences alone. A user the source does not know at all is an `UnknownUserError`: silently
answering with cold-start results would hide a wrong id.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from rec_core.embeddings import preference_sentence
from rec_core.filtering import UserProfile, as_profile
from rec_core.serving.config import RecommenderConfig, request_rules
from rec_core.serving.query_encoders import QueryEncoders
from rec_core.serving.results import (
    FeatureUnavailableError,
    InvalidRequestError,
    Recommendations,
    UnknownUserError,
)
from rec_core.serving.topk import ranked

if TYPE_CHECKING:
    from rec_core.serving.state import ServingState


def recommend_user(
    state: ServingState,
    config: RecommenderConfig,
    encoders: QueryEncoders,
    user_id: str,
    k: int,
    filters: Sequence | None,
) -> Recommendations:
    """Top-k for a user id of the feature source, cold-started when it has a profile but no embedding."""
    user_id = str(user_id)
    embedding = state.feature_source.user_embedding(user_id)
    profile = state.feature_source.user_profile(user_id)
    if embedding is None:
        if profile is None:
            raise UnknownUserError(f"unknown user '{user_id}'; use recommend_for_features for a new user")
        embedding = encode_cold_user(state, encoders, profile)
    return ranked(state, config, embedding, k, profile, request_rules(filters, config.recommend_filters), "model")


def recommend_features(
    state: ServingState,
    config: RecommenderConfig,
    encoders: QueryEncoders,
    features: Mapping | UserProfile,
    k: int,
    filters: Sequence | None,
) -> Recommendations:
    """Top-k for a user described only by `age`, `gender` and `preferences` (any may be missing)."""
    try:
        profile = as_profile(features)
    except ValueError as exc:
        raise InvalidRequestError(str(exc)) from None
    if profile is None:
        raise InvalidRequestError("features are required (age, gender, preferences; each may be empty)")
    embedding = encode_cold_user(state, encoders, profile)
    return ranked(state, config, embedding, k, profile, request_rules(filters, config.recommend_filters), "model")


def encode_cold_user(state: ServingState, encoders: QueryEncoders, profile: UserProfile) -> np.ndarray:
    """The user tower on demographics and stated preferences only (no history)."""
    encoder = state.encoder
    if encoder is None:
        raise FeatureUnavailableError(
            f"cold-start recommendations need the two-tower model, which is not in {state.model_dir}; "
            "materialize two_tower_model"
        )
    age = profile.age
    if age is not None and (
        not isinstance(age, (int, float, np.integer))
        or not 0 <= age <= 130
        or (isinstance(age, float) and math.isnan(age))
    ):
        raise InvalidRequestError(f"age must be a number within 0..130, got {age!r}")
    preferences = "|".join(profile.preferences)
    users = pd.DataFrame(
        {
            "user_id": ["__request__"],
            "signup_date": [pd.Timestamp.now(tz="UTC")],
            "preferences": [preferences],
            "age": pd.array([age], dtype="Int32"),
            "gender": [profile.gender],
        }
    )
    user_text = None
    text_dim = encoder.preprocessing.user_text_dim  # 0: the model was trained without preference text
    if text_dim:
        vector = np.zeros((1, text_dim), np.float32)
        if preferences:
            vector = encoders.text(state.text.model_name).encode([preference_sentence(preferences)])
        user_text = pd.DataFrame({"user_id": ["__request__"], "preferences_embedding": list(vector)})
    _, vectors = encoder.encode_users(users, None, user_text)
    return vectors[0]
