"""Feast on the embedded store (SQLite online store, SQL registry on SQLite, parquet offline store).

The upstream tables are built here, small and in the data schemas, so these tests do not depend
on the data or model assets. `tests/test_feast_postgres.py` runs the same round trip on PostgreSQL.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rec_core import feature_store as fs
from rec_core.data.schema import INTERACTION_TYPES
from rec_core.data.validation import DataValidationError
from rec_core.storage import write_parquet

REPO = Path(__file__).resolve().parents[1]
N_USERS, N_ITEMS, TOWER_DIM, TEXT_DIM = 12, 30, 16, 384


def upstream_tables(seed: int = 0) -> dict[str, pd.DataFrame]:
    """Small upstream asset outputs in the shapes the data, embedding and serving assets write."""
    rng = np.random.default_rng(seed)
    user_ids = [f"U{i:06d}" for i in range(N_USERS)]
    item_ids = [f"I{i:06d}" for i in range(N_ITEMS)]

    def vectors(n: int, dim: int) -> list[np.ndarray]:
        return list(rng.standard_normal((n, dim)).astype(np.float32))

    users = pd.DataFrame(
        {
            "user_id": user_ids,
            "signup_date": pd.date_range("2024-01-01", periods=N_USERS, freq="D", tz="UTC"),
            "preferences": ["Audio|Kitchen" if i % 2 else "" for i in range(N_USERS)],
            "age": pd.array([20 + i if i % 3 else None for i in range(N_USERS)], dtype="Int32"),
            "gender": ["F" if i % 2 else None for i in range(N_USERS)],
        }
    )
    items = pd.DataFrame(
        {
            "item_id": item_ids,
            "product_name": [f"Sonaro Headphones {i}" for i in range(N_ITEMS)],
            "category": "Electronics|Audio|Headphones",
            "actual_price": rng.uniform(10, 100, N_ITEMS),
            "discounted_price": rng.uniform(5, 10, N_ITEMS),
            "discount_percentage": rng.uniform(0, 50, N_ITEMS),
            "rating": [None if i % 7 == 0 else 4.5 for i in range(N_ITEMS)],
            "rating_count": np.arange(N_ITEMS, dtype=np.int64),
            "about_product": "Over-ear wireless headphones",
            "arrival_date": pd.date_range("2023-06-01", periods=N_ITEMS, freq="D", tz="UTC"),
            "img_link": [f"product_images/{i:04d}.png" for i in range(N_ITEMS)],
        }
    )
    interactions = pd.DataFrame(
        {
            "interaction_id": [f"X{i}" for i in range(40)],
            "user_id": [user_ids[i % N_USERS] for i in range(40)],
            "item_id": [item_ids[(7 * i) % N_ITEMS] for i in range(40)],
            "timestamp": pd.Timestamp("2024-05-01", tz="UTC"),
            "interaction_type": [INTERACTION_TYPES[i % len(INTERACTION_TYPES)] for i in range(40)],
        }
    )
    top_k = [list(rng.choice(item_ids, 5, replace=False)) for _ in user_ids]
    return {
        "users": users,
        "items": items,
        "interactions": interactions,
        "item_text_embeddings": pd.DataFrame(
            {
                "item_id": item_ids,
                "name_embedding": vectors(N_ITEMS, TEXT_DIM),
                "description_embedding": vectors(N_ITEMS, TEXT_DIM),
                "model_id": "tiny",
                "input_hash": "h",
            }
        ),
        "user_text_embeddings": pd.DataFrame(
            {"user_id": user_ids, "preferences_embedding": vectors(N_USERS, TEXT_DIM)}
        ),
        "item_clip_embeddings": pd.DataFrame({"item_id": pd.Series([], dtype=str), "clip_embedding": []}),
        "item_embeddings": pd.DataFrame({"item_id": item_ids, "embedding": vectors(N_ITEMS, TOWER_DIM)}),
        "user_embeddings": pd.DataFrame({"user_id": user_ids, "embedding": vectors(N_USERS, TOWER_DIM)}),
        "user_recommendations": pd.DataFrame(
            {
                "user_id": user_ids,
                "top_k_item_ids": top_k,
                "top_k_scores": vectors(N_USERS, 5),
            }
        ),
    }


def write_upstream(root: Path, tables: dict[str, pd.DataFrame]) -> None:
    """Writes each table where the Dagster io_manager would: `<root>/<asset>.parquet`."""
    for name, frame in tables.items():
        vectors = name not in ("users", "items", "interactions")  # stored as list<float32>, as the assets do
        write_parquet(fs._arrow_table(frame) if vectors else frame, root / f"{name}.parquet")


def load_everything(store, root: Path, tables: dict[str, pd.DataFrame]) -> fs.OnlineLoad:
    """apply -> Feast-ready copies -> materialize + push, as the two assets do."""
    fs.apply_definitions(store, fs.load_definitions(artifact_root=str(root)))
    snapshot = datetime.now(UTC)
    frames = fs.write_feast_sources(str(root), tables, snapshot)
    return fs.load_online(store, frames, snapshot)


def check_round_trip(store, root: Path, tables: dict[str, pd.DataFrame]) -> None:
    """Every vector read back online is bit-for-bit the one written; profiles and histories match."""
    load = load_everything(store, root, tables)
    assert load.materialized == {"user_features": N_USERS, "item_features": N_ITEMS}
    assert load.pushed["user_tower_embeddings"] == N_USERS and load.pushed["item_clip_embeddings"] == 0

    source = fs.FeastFeatureSource(store)
    for user_id, produced in zip(tables["user_embeddings"].user_id, tables["user_embeddings"].embedding):
        read = source.user_embedding(user_id)
        assert read.dtype == np.float32 and np.array_equal(read, produced), user_id
    assert source.user_embedding("U999999") is None

    item_ids = list(tables["item_text_embeddings"].item_id)
    rows = fs.online_rows(
        store, ["item_text_embeddings:name_embedding", "item_tower_embeddings:item_embedding"], "item_id", item_ids
    )
    for row, name_vec, tower_vec in zip(
        rows, tables["item_text_embeddings"].name_embedding, tables["item_embeddings"].embedding
    ):
        assert np.array_equal(np.asarray(row["name_embedding"], np.float32), name_vec)
        assert np.array_equal(np.asarray(row["item_embedding"], np.float32), tower_vec)

    users = tables["users"].set_index("user_id")
    history = tables["interactions"]
    for user_id in ("U000001", "U000003"):
        profile = source.user_profile(user_id)
        assert profile.preferences == tuple(p for p in users.loc[user_id, "preferences"].split("|") if p)
        assert profile.age == (None if pd.isna(users.loc[user_id, "age"]) else int(users.loc[user_id, "age"]))
        assert profile.gender == (None if pd.isna(users.loc[user_id, "gender"]) else users.loc[user_id, "gender"])
        mine = history[history.user_id == user_id]
        expected = {k: frozenset(g.item_id) for k, g in mine.groupby("interaction_type")}
        assert dict(profile.interacted) == expected
    assert source.user_profile("U999999") is None

    ids, scores = source.user_recommendations("U000002")
    assert ids == list(tables["user_recommendations"].top_k_item_ids[2])
    assert np.array_equal(scores, tables["user_recommendations"].top_k_scores[2])

    display = source.item_display(["I000007", "I000008", "nope"])  # every 7th item is unrated
    assert display[0]["rating"] is None and display[1]["rating"] == 4.5
    assert display[1]["product_name"] == "Sonaro Headphones 8" and display[1]["img_link"] == "product_images/0008.png"
    assert display[1]["discounted_price"] == tables["items"].discounted_price[8]
    assert all(value is None for value in display[2].values())


def check_reapply_and_rename(store, root: Path) -> None:
    """Unchanged definitions change nothing (even after materialization); a renamed field is reported."""
    from feast import Field

    again = fs.apply_definitions(store, fs.load_definitions(artifact_root=str(root)))
    assert not again.changed_anything and again.unchanged > 20, again.to_markdown()

    renamed = fs.load_definitions(artifact_root=str(root))
    view = next(o for o in renamed if o.name == "user_features")
    view.features = [Field(name="age_years", dtype=f.dtype) if f.name == "age" else f for f in view.features]
    report = fs.apply_definitions(store, renamed)
    assert [(c.kind, c.name, c.change) for c in report.changes] == [("feature view", "user_features", "changed")]
    assert report.changes[0].details == ("fields renamed: age -> age_years",)
    assert "fields renamed: age -> age_years" in report.to_markdown()
    assert [f.name for f in store.get_feature_view("user_features").features] == [
        "preferences",
        "age_years",
        "gender",
        "signup_date",
    ]

    # An object dropped from the definitions is removed from the registry, as `feast apply` does.
    without = [o for o in renamed if o.name != "item_vectors"]
    removal = fs.apply_definitions(store, without)
    assert [(c.name, c.change) for c in removal.changes] == [("item_vectors", "removed")]
    assert "item_vectors" not in {s.name for s in store.list_feature_services()}


@pytest.fixture
def sqlite_store(tmp_path):
    root = tmp_path / "artifacts"
    tables = upstream_tables()
    write_upstream(root, tables)
    store = fs.load_feature_store(profile="sqlite", data_dir=root / "feature_store")
    return store, root, tables


def test_sqlite_round_trip_reapply_and_rename(sqlite_store):
    store, root, tables = sqlite_store
    check_round_trip(store, root, tables)
    check_reapply_and_rename(store, root)


def test_changed_features_reach_the_recommender_without_retraining(sqlite_store):
    """A backend on FeastFeatureSource sees a user's new history and profile after the next load."""
    from rec_core.index import ItemIndex
    from rec_core.serving import Recommender

    store, root, tables = sqlite_store
    load_everything(store, root, tables)
    items = tables["items"]
    vectors = np.stack(tables["item_embeddings"].embedding)  # [n_items, dim]
    recommender = Recommender(items, ItemIndex.build(list(items.item_id), vectors), fs.FeastFeatureSource(store))

    user_id = "U000004"
    first = recommender.recommend(user_id, k=5)
    query = np.stack(tables["user_embeddings"].embedding)[4]
    seen = set(tables["interactions"].query("user_id == @user_id").item_id)
    ranked = [items.item_id[i] for i in np.argsort(-(vectors @ query), kind="stable") if items.item_id[i] not in seen]
    assert first.item_ids == ranked[:5]

    # After training, the user buys the top item and changes their stated preferences.
    bought = first.item_ids[0]
    tables["interactions"] = pd.concat(
        [
            tables["interactions"],
            pd.DataFrame(
                {
                    "interaction_id": ["X_new"],
                    "user_id": [user_id],
                    "item_id": [bought],
                    "timestamp": [pd.Timestamp("2024-06-01", tz="UTC")],
                    "interaction_type": ["purchase"],
                }
            ),
        ],
        ignore_index=True,
    )
    tables["users"].loc[tables["users"].user_id == user_id, "preferences"] = "Gaming"
    write_parquet(tables["users"], root / "users.parquet")
    load_everything(store, root, tables)

    second = recommender.recommend(user_id, k=5)
    assert bought not in second.item_ids and second.item_ids == ranked[1:6]
    assert recommender.feature_source.user_profile(user_id).preferences == ("Gaming",)


def test_missing_upstream_column_or_table_is_named(tmp_path):
    write_upstream(tmp_path, {k: v for k, v in upstream_tables().items() if k != "user_recommendations"})
    with pytest.raises(FileNotFoundError, match="user_recommendations.parquet: missing; materialize the 'user_rec"):
        fs.read_upstream_tables(str(tmp_path))
    assert fs.user_history_frame(upstream_tables()["interactions"].iloc[:0], datetime.now(UTC)).empty

    tables = upstream_tables()
    tables["user_embeddings"] = tables["user_embeddings"].rename(columns={"embedding": "vector"})
    with pytest.raises(DataValidationError) as raised:
        fs.write_feast_sources(str(tmp_path), tables, datetime.now(UTC))
    assert raised.value.source == "user_embeddings" and raised.value.column == "embedding"
    assert raised.value.bad_rows == N_USERS


def test_profiles_and_definitions_agree_with_the_schema():
    history = next(o for o in fs.load_definitions(artifact_root="/x") if o.name == "user_history")
    assert [f.name for f in history.features] == [f"{kind}_item_ids" for kind in INTERACTION_TYPES]
    with pytest.raises(ValueError, match="unknown Feast profile 'redis'"):
        fs.feature_store_config(profile="redis")
    config = fs.feature_store_config(profile="postgres", postgres=fs.PostgresSettings(database="elsewhere", port=6543))
    assert config.online_store.type == "postgres" and config.online_store.database == "elsewhere"
    assert config.online_store.port == 6543 and config.online_store.sslmode == "disable"
    assert config.registry.path.startswith("postgresql+psycopg://postgres:@127.0.0.1:6543/elsewhere")
    objects = fs.load_definitions(artifact_root="/x")
    names = {o.name for o in objects}
    assert {
        "user",
        "item",
        "user_features",
        "item_features",
        "item_text_embeddings",
        "item_clip_embeddings",
        "item_tower_embeddings",
        "user_tower_embeddings",
        "user_recommendations",
        "user_serving",
        "item_display",
    } <= names
    push_sources = {o.stream_source.name for o in objects if getattr(o, "stream_source", None) is not None}
    assert push_sources == {f"{view}_push" for view in (*fs.PUSHED_VIEWS, "user_history")}


def test_assets_register_and_load_the_online_store(tmp_path):
    """The two Dagster assets against upstream parquet files written where the io_manager keeps them."""
    import dagster as dg

    from rec_assets.assets.feature_store import feast_online_features, feast_registry
    from rec_assets.resources import ArtifactStore, FeastStoreResource, TableIOManager

    root = tmp_path / "artifacts"
    tables = upstream_tables(seed=3)
    write_upstream(root, tables)
    upstream = [dg.AssetSpec(name) for name in tables]
    resources = {
        "artifacts": ArtifactStore(root=str(root)),
        "io_manager": TableIOManager(root=str(root)),
        "feast": FeastStoreResource(),
    }

    first = dg.materialize(
        [*upstream, feast_registry, feast_online_features],
        resources=resources,
        selection=[feast_registry, feast_online_features],
    )
    assert first.success
    registry_meta = first.asset_materializations_for_node("feast_registry")[0].metadata
    assert registry_meta["added"].value > 20 and registry_meta["changed"].value == 0
    load_meta = first.asset_materializations_for_node("feast_online_features")[0].metadata
    assert load_meta["materialized_rows"].value == N_USERS + N_ITEMS

    again = dg.materialize([*upstream, feast_registry], resources=resources, selection=[feast_registry])
    meta = again.asset_materializations_for_node("feast_registry")[0].metadata
    assert (meta["added"].value, meta["changed"].value, meta["removed"].value) == (0, 0, 0)
    assert "No changes" in meta["changes"].value

    source = fs.FeastFeatureSource(fs.load_feature_store(profile="sqlite", data_dir=root / "feature_store"))
    assert np.array_equal(source.user_embedding("U000005"), tables["user_embeddings"].embedding[5])

    # Someone renames a field in a copy of the repository; the asset's metadata says so.
    edited = tmp_path / "edited_repo"
    shutil.copytree(REPO / "feature_repo", edited, ignore=shutil.ignore_patterns("__pycache__"))
    features = edited / "features.py"
    features.write_text(
        features.read_text().replace('Field(name="age", dtype=Int32', 'Field(name="age_years", dtype=Int32')
    )
    assert fs.definitions_version(edited) != fs.definitions_version()  # the asset's code_version moves with it
    renamed = dg.materialize(
        [*upstream, feast_registry],
        selection=[feast_registry],
        resources={**resources, "feast": FeastStoreResource(repo_path=str(edited))},
    )
    meta = renamed.asset_materializations_for_node("feast_registry")[0].metadata
    # The view and the service that serves all of its fields.
    assert (meta["added"].value, meta["changed"].value, meta["removed"].value) == (0, 2, 0), meta["changes"].value
    assert "`user_features` | changed | fields renamed: age -> age_years" in meta["changes"].value
    assert "`user_serving` | changed | features changed" in meta["changes"].value


@pytest.mark.slow
def test_feast_apply_from_the_command_line(tmp_path):
    """`cd feature_repo && feast apply` on a copy of the repository: registers, then reports nothing to change."""
    repo = tmp_path / "feature_repo"
    shutil.copytree(REPO / "feature_repo", repo, ignore=shutil.ignore_patterns("__pycache__", "data"))
    env = {**os.environ, "REC_ARTIFACT_ROOT": str(tmp_path / "data" / "artifacts")}
    feast = str(Path(sys.executable).parent / "feast")
    first = subprocess.run([feast, "apply"], cwd=repo, env=env, capture_output=True, text=True, timeout=180)
    assert first.returncode == 0, first.stderr
    assert "Created feature view user_tower_embeddings" in first.stdout
    assert (tmp_path / "data" / "artifacts" / "feature_store" / "registry.db").exists()
    second = subprocess.run([feast, "apply"], cwd=repo, env=env, capture_output=True, text=True, timeout=180)
    assert second.returncode == 0 and "No changes to registry" in second.stdout, second.stdout + second.stderr
