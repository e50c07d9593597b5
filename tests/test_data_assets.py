"""Issue 2: the code location loads, and the data assets materialize with their checks."""

import dagster as dg
import pytest

from rec_assets.assets.data import interaction_splits, interactions, source_tables
from rec_core.storage import read_parquet
from tests.conftest import MOVIELENS_SMALL, cpu_resources

SMALL = {"source": "synthetic", "n_users": 120, "n_items": 300, "n_interactions": 4_000, "seed": 2}


def _data_checks():
    from rec_assets.assets import data

    return [c for c in dg.load_asset_checks_from_modules([data])]


def test_definitions_load():
    from rec_assets import defs

    repo = defs.get_repository_def()
    keys = {k.to_user_string() for k in repo.asset_graph.get_all_asset_keys()}
    assert {"users", "items", "interactions", "interaction_splits"} <= keys


def test_dagster_postgres_is_a_current_release():
    import dagster_postgres

    assert dagster_postgres.__version__ == "0.29.27"


def test_data_assets_materialize_with_checks(tmp_path):
    result = dg.materialize(
        [source_tables, interactions, interaction_splits, *_data_checks()],
        resources=cpu_resources(tmp_path),
        run_config={"ops": {"source_tables": {"config": SMALL}}},
    )
    assert result.success
    checks = result.get_asset_check_evaluations()
    assert len(checks) == 5 and all(c.passed for c in checks)
    assert read_parquet(tmp_path / "users.parquet").num_rows == 120
    splits = read_parquet(tmp_path / "interaction_splits.parquet").to_pandas()
    assert set(splits["split"]) == {"train", "validation", "test"} and len(splits) == 4_000
    assert (tmp_path / "synthetic_truth" / "oracle.safetensors").exists()
    meta = result.asset_materializations_for_node("source_tables")
    interactions_meta = next(m for m in meta if m.asset_key.path == ["source_interactions"]).metadata
    assert (
        interactions_meta["preference_match_share"].value > 2 * interactions_meta["preference_match_random_share"].value
    )


def test_bad_source_fails_and_keeps_previous_tables(tmp_path):
    ok = dg.materialize(
        [source_tables], resources=cpu_resources(tmp_path), run_config={"ops": {"source_tables": {"config": SMALL}}}
    )
    assert ok.success
    before = (tmp_path / "users.parquet").read_bytes()
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "ratings.csv").write_text("userId,movieId,rating,timestamp\n1,1,4,5\n2,7,3,6\n")
    (bad / "movies.csv").write_text("movieId,title,genres\n1,A (1999),Drama\n")
    result = dg.materialize(
        [source_tables],
        resources=cpu_resources(tmp_path),
        raise_on_error=False,
        run_config={"ops": {"source_tables": {"config": {"source": "path", "path": str(bad)}}}},
    )
    assert not result.success
    error = result.get_step_failure_events()[0].event_specific_data.error
    message = error.cause.message if error.cause else error.message
    assert "ratings.csv" in message and "'item_id'" in message and "1 bad row(s)" in message
    assert (tmp_path / "users.parquet").read_bytes() == before


@pytest.mark.skipif(not MOVIELENS_SMALL.exists(), reason="shared MovieLens copy not present")
def test_movielens_source(tmp_path):
    result = dg.materialize(
        [source_tables],
        resources=cpu_resources(tmp_path),
        run_config={"ops": {"source_tables": {"config": {"source": "path", "path": str(MOVIELENS_SMALL)}}}},
    )
    assert result.success
    assert read_parquet(tmp_path / "source_interactions.parquet").num_rows == 100836


def test_splits_check_fails_when_an_interaction_is_lost(small_dataset):
    from rec_assets.assets.data import splits_complete
    from rec_core.data.splits import split_interactions

    splits = split_interactions(small_dataset.interactions)
    ok = splits_complete(interaction_splits=splits, interactions=small_dataset.interactions)
    assert ok.passed
    lost = splits_complete(interaction_splits=splits.iloc[1:], interactions=small_dataset.interactions)
    assert not lost.passed and lost.metadata["same_interactions"].value is False


def test_amazon_reviews_source(tmp_path):
    from tests.test_amazon_reviews import META_2018, REVIEWS_2018, write_lines

    source = tmp_path / "amazon"
    source.mkdir()
    write_lines(source / "reviews_Electronics_5.json.gz", REVIEWS_2018, gzipped=True)
    write_lines(source / "meta_Electronics.json", META_2018)
    result = dg.materialize(
        [source_tables],
        resources=cpu_resources(tmp_path / "store"),
        run_config={
            "ops": {"source_tables": {"config": {"source": "path", "path": str(source), "format": "amazon-reviews"}}}
        },
    )
    assert result.success
    items = read_parquet(tmp_path / "store" / "items.parquet").to_pandas().set_index("item_id")
    assert items.at["B001", "product_name"] == "Sony MDR Headphones" and items.at["B001", "actual_price"] == 12.99
    assert read_parquet(tmp_path / "store" / "source_interactions.parquet").num_rows == len(REVIEWS_2018)
    assert read_parquet(tmp_path / "store" / "users.parquet").num_rows == 3
