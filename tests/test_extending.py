"""Extension points work without editing library files.

Each test adds a piece the library has never seen, defined here, outside `rec_core`, and uses
it only through the public API, the way a user's own package would.
"""

import json
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pytest

from rec_core.filtering import RULES, FilterError, register_filter_rule
from rec_core.index import ItemIndex
from rec_core.serving import InvalidRequestError, Recommender, vector_table
from rec_core.storage import write_parquet


# ---- a filter rule ---------------------------------------------------------------------------
@dataclass(frozen=True)
class MaxPricePerStar:
    """Value for money: keeps items whose selling price per rating star is at most `max_price_per_star`."""

    max_price_per_star: float
    name: ClassVar[str] = "max_price_per_star"
    per_user: ClassVar[bool] = False

    def keep(self, items, rows, profile):
        price = items.column("price", self.name)[rows]
        rating = items.column("rating", self.name)[rows]
        with np.errstate(divide="ignore", invalid="ignore"):
            return (rating > 0) & (price / rating <= self.max_price_per_star)


def _unit_rows(rng, n: int) -> np.ndarray:
    vectors = rng.normal(size=(n, 16)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def served(tmp_path_factory, small_dataset):
    """A Recommender over an artifact root holding the small catalog and random unit vectors (no model)."""
    root = tmp_path_factory.mktemp("extending")
    for name in ("users", "items", "interactions"):
        write_parquet(getattr(small_dataset, name), root / f"{name}.parquet")
    rng = np.random.default_rng(0)
    user_ids, item_ids = small_dataset.users["user_id"].tolist(), small_dataset.items["item_id"].tolist()
    user_vectors, item_vectors = (_unit_rows(rng, len(ids)) for ids in (user_ids, item_ids))
    write_parquet(vector_table("user_id", user_ids, user_vectors), root / "user_embeddings.parquet")
    ItemIndex.build(item_ids, item_vectors).save(root / "item_index")
    return Recommender.load(root), small_dataset, user_ids, user_vectors


def test_custom_filter_rule_registers_through_public_api(served):
    from fastapi.testclient import TestClient

    from rec_core.service import LiveRecommender, ServiceSettings, create_app

    recommender, dataset, user_ids, user_vectors = served
    items = dataset.items.set_index("item_id")
    per_star = (items["discounted_price"] / items["rating"]).where(items["rating"] > 0)
    limit = float(per_star.median())  # about half the catalog passes
    spec = [{"rule": MaxPricePerStar.name, "max_price_per_star": limit}]
    user = user_ids[0]

    with pytest.raises(InvalidRequestError, match="unknown filter rule 'max_price_per_star'.*register_filter_rule"):
        recommender.recommend(user, k=10, filters=spec)

    register_filter_rule(MaxPricePerStar.name, MaxPricePerStar)
    try:
        by_name = recommender.recommend(user, k=10, filters=spec)
        assert len(by_name) == 10 and by_name.reason is None
        assert (per_star[by_name.item_ids] <= limit).all()
        unfiltered = recommender.recommend(user, k=10, filters=[])
        assert (per_star[unfiltered.item_ids].fillna(np.inf) > limit).any()  # the rule changed the answer
        assert recommender.recommend(user, k=10, filters=[MaxPricePerStar(limit)]).item_ids == by_name.item_ids

        batch = recommender.recommend_batch(user_ids[:20], user_vectors[:20], k=10, filters=spec)
        assert batch["top_k_item_ids"].tolist() == [
            recommender.recommend(u, k=10, filters=spec).item_ids for u in user_ids[:20]
        ]

        app = create_app(LiveRecommender(recommender, 0), ServiceSettings(token="extending"))
        with TestClient(app, headers={"Authorization": "Bearer extending"}) as client:
            response = client.get(f"/recommendations/{user}", params={"k": 10, "filters": json.dumps(spec)})
        assert response.status_code == 200, response.text
        assert [item["item_id"] for item in response.json()["items"]] == by_name.item_ids

        with pytest.raises(FilterError, match="'max_price_per_star' is already registered"):
            register_filter_rule(MaxPricePerStar.name, lambda **options: MaxPricePerStar(**options))
    finally:
        RULES.pop(MaxPricePerStar.name)


# ---- a data source format --------------------------------------------------------------------
CATALOG_SUFFIX = ".catalog.json"


def read_catalog_json(path):
    """A format of our own: one JSON file holding the three tables as lists of records."""
    import pandas as pd

    data = json.loads(path.read_text())
    return tuple(pd.DataFrame.from_records(data[name]) for name in ("users", "items", "interactions"))


def _write_catalog_json(dataset, path):
    path.write_text(
        json.dumps(
            {
                name: json.loads(getattr(dataset, name).to_json(orient="records", date_format="iso"))
                for name in ("users", "items", "interactions")
            }
        )
    )


def test_custom_data_source_format_registers_through_public_api(tmp_path, small_dataset):
    import dagster as dg

    from rec_assets.assets.data import source_tables
    from rec_assets.resources import ArtifactStore, TableIOManager
    from rec_core.bench.quality import load_named_dataset
    from rec_core.data.loaders import SOURCE_FORMATS, load_dataset, register_source_format, source_formats
    from rec_core.data.validation import DataValidationError

    path = tmp_path / f"shop{CATALOG_SUFFIX}"
    _write_catalog_json(small_dataset, path)
    with pytest.raises(ValueError, match="unknown dataset format 'catalog-json'"):
        load_dataset(path, "catalog-json")
    with pytest.raises(DataValidationError, match="not an Amazon reviews file"):
        load_dataset(path)  # auto: any JSON lines file could be Amazon reviews, until a format claims it

    register_source_format("catalog-json", read_catalog_json, detect=lambda p: p.name.endswith(CATALOG_SUFFIX))
    try:
        assert "catalog-json" in source_formats()
        users, items, interactions = load_dataset(path, "catalog-json")
        assert (len(users), len(items), len(interactions)) == tuple(
            len(getattr(small_dataset, name)) for name in ("users", "items", "interactions")
        )
        assert str(interactions["timestamp"].dtype) == "datetime64[us, UTC]"  # conformed to the schema
        assert load_dataset(path)[2]["interaction_id"].tolist() == interactions["interaction_id"].tolist()  # auto

        bench_users, _, bench_interactions, oracle = load_named_dataset(f"catalog-json:{path}", seed=0)
        assert (
            oracle is None and bench_interactions["interaction_id"].tolist() == interactions["interaction_id"].tolist()
        )

        root = tmp_path / "artifacts"
        result = dg.materialize(
            [source_tables],
            resources={"artifacts": ArtifactStore(root=str(root)), "io_manager": TableIOManager(root=str(root))},
            run_config={
                "ops": {"source_tables": {"config": {"source": "path", "path": str(path), "format": "catalog-json"}}}
            },
        )
        assert result.success
        stored = {
            m.asset_key.to_user_string(): m.metadata["rows"].value
            for m in result.get_asset_materialization_events()
            for m in [m.materialization]
        }
        assert stored == {"users": len(users), "items": len(items), "source_interactions": len(interactions)}

        # a registered loader's tables are validated like the built-in ones', errors naming the file
        register_source_format("catalog-json", lambda p: (users.iloc[1:], items, interactions))
        with pytest.raises(DataValidationError, match=rf"{path.name}.*'user_id'.*do not exist in the users table"):
            load_dataset(path, "catalog-json")
    finally:
        SOURCE_FORMATS.pop("catalog-json")


def test_installed_data_source_format_is_found_by_its_entry_point(tmp_path, small_dataset, monkeypatch):
    """A package declaring `[project.entry-points."rec_core.source_formats"] NAME = "module:loader"` needs no code
    run first: the command line (`bench quality --dataset NAME:PATH`) finds it."""
    import importlib.metadata

    from rec_core.bench.quality import load_named_dataset
    from rec_core.data.loaders import ENTRY_POINT_GROUP, SOURCE_FORMATS, source_formats

    plugin = importlib.metadata.EntryPoint("catalog-plugin", f"{__name__}:read_catalog_json", ENTRY_POINT_GROUP)
    installed = lambda group: [plugin] if group == ENTRY_POINT_GROUP else []  # noqa: E731
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda group: installed(group))
    path = tmp_path / f"plugin{CATALOG_SUFFIX}"
    _write_catalog_json(small_dataset, path)
    try:
        users, items, interactions, _ = load_named_dataset(f"catalog-plugin:{path}", seed=0)
        assert len(interactions) == len(small_dataset.interactions)
        assert "catalog-plugin" in source_formats()
    finally:
        SOURCE_FORMATS.pop("catalog-plugin", None)
