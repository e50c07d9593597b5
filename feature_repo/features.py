"""The recommender's Feast definitions, built for one artifact root.

`build_definitions(artifact_root)` returns every Feast object; `repo.py` exposes them at module
level for `feast apply`, and `rec_core.feature_store` calls it directly so tests and Dagster
assets can point the offline sources at their own artifact root.

Which views exist is listed once, in `rec_core.feature_store.views`, which also loads them; this
file declares each one as a Feast object. The batch views (user and item features) read the
parquet files the data assets wrote, and their fields are declared here. The embedding,
recommendation and history views are pushed: `rec_core` builds their rows, so their fields come
from the registry; they read Feast-ready copies (the same rows plus an `event_timestamp`) that the
`feast_online_features` asset writes under `<artifact root>/feature_store/sources/`, and take
fresh values through push sources.

Vector search stays in FAISS: no field sets `vector_index`. Feast's SQLite vector search needs
sqlite extension loading, which this Python 3.11 build lacks (`sqlite3.Connection` has no
`enable_load_extension`), and when patched to run it returned results out of order. Feast stores
the vectors for lookup by id.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from feast import Entity, FeatureService, FeatureView, Field, FileSource, Project, PushSource, ValueType
from feast.types import Array, Float32, Float64, Int32, Int64, String, UnixTimestamp

from rec_core.data.paths import table_file
from rec_core.feature_store import views
from rec_core.feature_store.views import PUSHED_VIEW_FILES, source_dir

PROJECT_NAME = "recommender"
# A TTL of zero keeps features forever: values are replaced by newer snapshots, never expired.
NO_EXPIRY = timedelta(0)
# The Feast type of each kind of pushed feature in the registry.
FEAST_TYPES = {"float_vector": Array(Float32), "string": String, "string_list": Array(String)}


def build_definitions(artifact_root: str | Path) -> list:
    """Every Feast object of the project, with offline sources under `artifact_root`."""
    root = Path(artifact_root)
    copies = source_dir(root)

    # The project groups every object below in the registry.
    project = Project(name=PROJECT_NAME, description="Two-tower recommender: user and item features for serving")

    # Users are the query side of the recommender: requests name a user_id.
    user = Entity(name="user", join_keys=[views.USER_KEY], value_type=ValueType.STRING, description="A shopper")
    # Items are the candidate side: retrieval returns item_ids whose display fields are looked up.
    item = Entity(name="item", join_keys=[views.ITEM_KEY], value_type=ValueType.STRING, description="A product")
    entities = {views.USER_KEY: user, views.ITEM_KEY: item}

    # The users table written by the `users` asset; signup_date orders its snapshots.
    users_source = FileSource(
        name="users_source",
        path=str(root / table_file(views.USER_FEATURES.upstream)),
        timestamp_field="signup_date",
        description="users asset parquet",
    )
    # The items table written by the `items` asset; arrival_date orders its snapshots.
    items_source = FileSource(
        name="items_source",
        path=str(root / table_file(views.ITEM_FEATURES.upstream)),
        timestamp_field="arrival_date",
        description="items asset parquet",
    )

    def pushed_view(view: views.View) -> FeatureView:
        # One push source per pushed view: fresh values go online without a batch job, while the
        # Feast-ready parquet copy backs materialization and historical retrieval. Pushed views never
        # expire: the latest push is the current value.
        batch = FileSource(
            name=f"{view.name}_batch",
            path=str(copies / PUSHED_VIEW_FILES[view.name]),
            timestamp_field=views.EVENT_TIMESTAMP,
        )
        return FeatureView(
            name=view.name,
            entities=[entities[view.key]],
            ttl=NO_EXPIRY,
            online=True,
            source=PushSource(name=view.push_source, batch_source=batch),
            schema=[Field(name=f.name, dtype=FEAST_TYPES[f.kind], description=f.description) for f in view.features],
        )

    # The profile fields the user tower and the backend read at request time.
    user_features = FeatureView(
        name=views.USER_FEATURES.name,
        entities=[user],
        ttl=NO_EXPIRY,
        source=users_source,
        online=True,
        schema=[
            Field(name="preferences", dtype=String, description="Pipe-separated stated interests"),
            Field(name="age", dtype=Int32, description="Age in years; null when unknown"),
            Field(name="gender", dtype=String, description="F, M, X; null when unknown"),
            Field(name="signup_date", dtype=UnixTimestamp, description="When the user registered"),
        ],
    )
    # The display and ranking fields of an item, read for every recommended item.
    item_features = FeatureView(
        name=views.ITEM_FEATURES.name,
        entities=[item],
        ttl=NO_EXPIRY,
        source=items_source,
        online=True,
        schema=[
            Field(name="product_name", dtype=String),
            Field(name="category", dtype=String, description="Pipe-separated taxonomy path"),
            Field(name="actual_price", dtype=Float64),
            Field(name="discounted_price", dtype=Float64),
            Field(name="discount_percentage", dtype=Float64),
            Field(name="rating", dtype=Float64, description="Average rating; null when unrated"),
            Field(name="rating_count", dtype=Int64),
            Field(name="img_link", dtype=String, description="Artifact-relative image path"),
        ],
    )
    # Sentence-transformer vectors of an item's name and description, inputs to the item tower.
    item_text_embeddings = pushed_view(views.ITEM_TEXT_EMBEDDINGS)
    # CLIP vectors of the product images, for image-aware ranking and similar-looking items.
    item_clip_embeddings = pushed_view(views.ITEM_CLIP_EMBEDDINGS)
    # The trained item tower's output: the vectors the FAISS index holds, kept here for lookup.
    item_tower_embeddings = pushed_view(views.ITEM_TOWER_EMBEDDINGS)
    # A sentence-transformer vector of the user's stated preferences, an input to the user tower.
    user_text_embeddings = pushed_view(views.USER_TEXT_EMBEDDINGS)
    # The trained user tower's output: the query vector for FAISS retrieval, and the model it came from
    # (a Recommender serving a release scores only vectors of the release's model against its index).
    user_tower_embeddings = pushed_view(views.USER_TOWER_EMBEDDINGS)
    # Each user's precomputed top-k, served when a request must not wait for retrieval.
    user_recommendations = pushed_view(views.USER_RECOMMENDATIONS)
    # The items each user already interacted with, per type, so serving can exclude what was seen or bought.
    user_history = pushed_view(views.USER_HISTORY)

    # What the backend reads for one user per request: profile, history, query vector and precomputed top-k.
    user_serving = FeatureService(
        name=views.USER_SERVING_SERVICE,
        features=[user_features, user_history, user_tower_embeddings, user_recommendations],
        description="One user's serving features",
    )
    # What the backend reads for each recommended item to display it.
    item_display = FeatureService(
        name=views.ITEM_DISPLAY_SERVICE,
        features=[item_features],
        description="Display fields of recommended items",
    )
    # The item-side inputs a re-ranker or the item tower reads online.
    item_vectors = FeatureService(
        name="item_vectors",
        features=[item_text_embeddings, item_clip_embeddings, item_tower_embeddings],
        description="Every stored vector of an item",
    )

    return [
        project,
        user,
        item,
        users_source,
        items_source,
        user_features,
        item_features,
        item_text_embeddings,
        item_clip_embeddings,
        item_tower_embeddings,
        user_text_embeddings,
        user_tower_embeddings,
        user_recommendations,
        user_history,
        user_serving,
        item_display,
        item_vectors,
    ]
