"""Issue 2: schemas, validation, the synthetic generator's signal, real-data loaders and splits."""

import subprocess
import sys

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rec_core.data.amazon_sales import load_amazon
from rec_core.data.loaders import load_dataset, load_movielens
from rec_core.data.schema import INTERACTIONS_SCHEMA, ITEMS_SCHEMA, USERS_SCHEMA, describe
from rec_core.data.splits import split_interactions
from rec_core.data.validation import DataValidationError, check_references, conform
from rec_core.generation.synthetic import GeneratorConfig, OracleScorer, generate_dataset, preference_match
from rec_core.storage import read_input_table, write_parquet
from tests.conftest import FIXTURES, MOVIELENS_SMALL

# --- schemas and validation -------------------------------------------------------------


def test_schemas_document_every_column():
    for schema in (USERS_SCHEMA, ITEMS_SCHEMA, INTERACTIONS_SCHEMA):
        for field in schema:
            assert field.metadata and field.metadata[b"doc"], field.name
    assert "| `category` | string | no |" in describe(ITEMS_SCHEMA)


def test_generated_tables_conform(small_dataset):
    for frame, kind in (
        (small_dataset.users, "users"),
        (small_dataset.items, "items"),
        (small_dataset.interactions, "interactions"),
    ):
        table = conform(frame, kind, kind)
        assert table.num_rows == len(frame)
    check_references(small_dataset.interactions, small_dataset.users, small_dataset.items, "generated")


def _write_csv(path, frame):
    frame.to_csv(path, index=False)
    return path


@pytest.fixture()
def items_frame(small_dataset):
    return small_dataset.items.head(20).copy()


def test_missing_column_is_named(tmp_path, items_frame):
    path = _write_csv(tmp_path / "items.csv", items_frame.drop(columns=["category"]))
    with pytest.raises(DataValidationError) as err:
        read_input_table(path, "items")
    assert err.value.column == "category" and str(path) in str(err.value)


def test_wrong_type_counts_bad_rows(tmp_path, items_frame):
    frame = items_frame.astype({"actual_price": object})
    frame.loc[[0, 3, 5], "actual_price"] = "cheap"
    path = _write_csv(tmp_path / "items.csv", frame)
    with pytest.raises(DataValidationError) as err:
        read_input_table(path, "items")
    assert err.value.column == "actual_price" and err.value.bad_rows == 3
    assert "items.csv" in str(err.value) and "3 bad row(s)" in str(err.value)


def test_duplicate_ids_are_refused(tmp_path, items_frame):
    frame = pd.concat([items_frame, items_frame.head(2)])
    path = tmp_path / "items.parquet"
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path)
    with pytest.raises(DataValidationError) as err:
        read_input_table(path, "items")
    assert err.value.column == "item_id" and err.value.bad_rows == 2


def test_dangling_references_are_refused(small_dataset):
    interactions = small_dataset.interactions.head(50).copy()
    interactions.loc[interactions.index[:4], "item_id"] = "no-such-item"
    with pytest.raises(DataValidationError) as err:
        check_references(interactions, small_dataset.users, small_dataset.items, "events.parquet")
    assert err.value.column == "item_id" and err.value.bad_rows == 4 and "events.parquet" in str(err.value)


def test_empty_file_is_refused(tmp_path):
    path = tmp_path / "users.csv"
    path.write_bytes(b"")
    with pytest.raises(DataValidationError, match="empty"):
        read_input_table(path, "users")


def test_header_only_file_is_refused(tmp_path, small_dataset):
    path = _write_csv(tmp_path / "users.csv", small_dataset.users.head(0))
    with pytest.raises(DataValidationError, match="empty"):
        read_input_table(path, "users")


def test_non_utf8_bytes_are_refused(tmp_path, small_dataset):
    path = _write_csv(tmp_path / "users.csv", small_dataset.users.head(5))
    path.write_bytes(path.read_bytes() + b"U999999,2024-01-01,Caf\xe9,30,F\n")
    with pytest.raises(DataValidationError) as err:
        read_input_table(path, "users")
    assert "UTF-8" in str(err.value) and err.value.bad_rows == 1


def test_out_of_range_and_unknown_types_are_refused(small_dataset):
    interactions = small_dataset.interactions.head(30).copy()
    interactions.loc[interactions.index[:2], "interaction_type"] = "like"
    with pytest.raises(DataValidationError) as err:
        conform(interactions, "interactions", "x")
    assert err.value.column == "interaction_type" and err.value.bad_rows == 2
    items = small_dataset.items.head(10).copy()
    items.loc[items.index[0], "discount_percentage"] = 140.0
    with pytest.raises(DataValidationError, match="discount_percentage"):
        conform(items, "items", "x")


def test_write_is_atomic_on_failure(tmp_path, small_dataset):
    target = tmp_path / "users.parquet"
    write_parquet(small_dataset.users, target)
    before = target.read_bytes()

    with pytest.raises(AttributeError):
        write_parquet("not a table", target)  # fails inside the write
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["users.parquet"]


# --- the synthetic generator -------------------------------------------------------------


def test_generator_is_deterministic():
    config = GeneratorConfig(n_users=50, n_items=120, n_interactions=1_000, seed=3)
    a, b = generate_dataset(config), generate_dataset(config)
    pd.testing.assert_frame_equal(a.interactions, b.interactions)
    pd.testing.assert_frame_equal(a.items, b.items)
    c = generate_dataset(GeneratorConfig(n_users=50, n_items=120, n_interactions=1_000, seed=4))
    assert not a.interactions["item_id"].equals(c.interactions["item_id"])


def test_generator_sizes_and_time_order(small_dataset):
    cfg = small_dataset.config
    assert len(small_dataset.users) == cfg.n_users and len(small_dataset.items) == cfg.n_items
    assert len(small_dataset.interactions) == cfg.n_interactions
    merged = small_dataset.interactions.merge(small_dataset.items[["item_id", "arrival_date"]], on="item_id")
    merged = merged.merge(small_dataset.users[["user_id", "signup_date"]], on="user_id")
    assert (merged["timestamp"] >= merged["arrival_date"]).all()
    assert (merged["timestamp"] >= merged["signup_date"]).all()


def test_text_says_what_the_item_is(small_dataset):
    items = small_dataset.items
    headphones = items[items["category"].str.endswith("|Headphones")]
    assert len(headphones) > 0
    assert headphones["product_name"].str.contains("Headphones").all()


def test_preferences_drive_interactions(small_dataset):
    matched, random_share = preference_match(small_dataset.users, small_dataset.items, small_dataset.interactions)
    assert matched > 3 * random_share


def test_affinity_drives_interaction_type_and_rating(small_dataset):
    inter = small_dataset.interactions
    scores = small_dataset.oracle
    rows = pd.Index(scores.user_ids).get_indexer(inter["user_id"])
    cols = pd.Index(scores.item_ids).get_indexer(inter["item_id"])
    affinity = pd.Series(scores.score_pairs(rows, cols), index=inter.index)
    by_type = affinity.groupby(inter["interaction_type"]).mean()
    assert by_type["purchase"] > by_type["positive_view"] > by_type["negative_view"]
    rated = inter["rating"].notna()
    assert np.corrcoef(affinity[rated], inter.loc[rated, "rating"])[0, 1] > 0.2


def _recall_at_k(ranked: np.ndarray, held_out: list[set], k: int = 10) -> float:
    return float(np.mean([len(set(r[:k]) & h) / len(h) for r, h in zip(ranked, held_out)]))


def test_oracle_beats_popularity_beats_random():
    """The signal is real: on held-out interactions the true affinity ranks far better than
    popularity, which ranks better than chance."""
    ds = generate_dataset(GeneratorConfig(n_users=600, n_items=2_000, n_interactions=40_000, seed=11))
    splits = split_interactions(ds.interactions, method="time")
    positive = splits[splits["interaction_type"] != "negative_view"]
    train, test = splits[splits["split"] != "test"], positive[positive["split"] == "test"]
    users = sorted(test["user_id"].unique())
    held_out = [set(g) for _, g in test.groupby("user_id")["item_id"]]
    item_pos = pd.Index(ds.oracle.item_ids)
    seen = np.zeros((len(users), len(item_pos)), dtype=bool)
    user_row = pd.Index(users).get_indexer(train["user_id"])
    keep = user_row >= 0
    seen[user_row[keep], item_pos.get_indexer(train["item_id"][keep])] = True

    def ranked(scores):
        scores = np.where(seen, -np.inf, scores)
        return ds.oracle.item_ids[np.argsort(-scores, axis=1)[:, :10]]

    oracle = _recall_at_k(ranked(ds.oracle.score(users)), held_out)
    counts = positive[positive["split"] != "test"]["item_id"].value_counts().reindex(item_pos, fill_value=0)
    popularity = _recall_at_k(ranked(np.tile(counts.to_numpy(float), (len(users), 1))), held_out)
    rng = np.random.default_rng(0)
    random = _recall_at_k(ranked(rng.random((len(users), len(item_pos)))), held_out)
    print(f"recall@10 oracle={oracle:.4f} popularity={popularity:.4f} random={random:.4f}")
    assert oracle > 2.0 * popularity
    assert popularity > 3.0 * random


def test_oracle_round_trips(tmp_path, small_dataset):
    small_dataset.oracle.save(tmp_path)
    loaded = OracleScorer.load(tmp_path)
    users = list(small_dataset.oracle.user_ids[:5])
    np.testing.assert_allclose(loaded.score(users), small_dataset.oracle.score(users), rtol=1e-6)


def test_generator_cli(tmp_path):
    out = tmp_path / "gen"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "rec_core.generation.dataset_gen_amazon",
            "--n_users",
            "40",
            "--n_items",
            "90",
            "--n_interactions",
            "600",
            "--seed",
            "1",
            "--output",
            str(out),
        ],
        check=True,
        capture_output=True,
    )
    names = {p.name for p in out.iterdir()}
    assert {
        "recommendation_users.parquet",
        "recommendation_items.parquet",
        "recommendation_interactions.parquet",
        "category_tree.json",
    } <= names
    users, items, interactions = load_dataset(out)
    assert (len(users), len(items), len(interactions)) == (40, 90, 600)


# --- real data ----------------------------------------------------------------------------


@pytest.mark.skipif(not MOVIELENS_SMALL.exists(), reason="shared MovieLens copy not present")
def test_movielens_latest_small():
    users, items, interactions = load_movielens(MOVIELENS_SMALL)
    assert (len(users), len(items), len(interactions)) == (610, 9742, 100836)
    assert set(interactions["interaction_type"]) == {"rate"}
    toy_story = items.set_index("item_id").loc["1"]
    assert toy_story["product_name"] == "Toy Story (1995)" and toy_story["category"].startswith("Movies|Adventure")
    _, _, graded = load_movielens(MOVIELENS_SMALL, negative_below=3.0)
    assert (graded["interaction_type"] == "negative_view").sum() == (interactions["rating"] < 3.0).sum()


def test_movielens_100k_layout():
    users, items, interactions = load_movielens(FIXTURES / "ml-100k")
    assert (len(users), len(items), len(interactions)) == (3, 3, 7)
    assert users.set_index("user_id").loc["2", "gender"] == "F"
    assert int(users.set_index("user_id").loc["1", "age"]) == 24
    assert items.set_index("item_id").loc["2", "category"] == "Movies|Action|Adventure"


def test_amazon_layout():
    users, items, interactions = load_amazon(FIXTURES / "amazon" / "amazon.csv")
    cable = items.set_index("item_id").loc["B07JW9H4J1"]
    assert cable["actual_price"] == 1099.0 and cable["discounted_price"] == 399.0
    assert cable["discount_percentage"] == 64.0 and cable["rating_count"] == 24269
    assert len(interactions) == 4 and len(users) == 3
    assert interactions.loc[interactions["item_id"] == "B07JW9H4J1", "review_title"].tolist() == [
        "Satisfied",
        "Charging is really fast",
    ]


def test_movielens_bad_ratings_file(tmp_path):
    (tmp_path / "ratings.csv").write_text("userId,movieId,rating,timestamp\n1,1,x,5\n1,2,4,6\n")
    (tmp_path / "movies.csv").write_text("movieId,title,genres\n1,A (1999),Drama\n2,B (2000),Comedy\n")
    with pytest.raises(DataValidationError) as err:
        load_movielens(tmp_path)
    assert err.value.column == "rating" and err.value.bad_rows == 1 and "ratings.csv" in str(err.value)


# --- splits -------------------------------------------------------------------------------


def test_time_split_holds_out_the_latest(small_dataset):
    splits = split_interactions(small_dataset.interactions, method="time")
    assert set(splits["split"]) == {"train", "validation", "test"}
    last_train = splits[splits["split"] == "train"].groupby("user_id")["timestamp"].max()
    first_test = splits[splits["split"] == "test"].groupby("user_id")["timestamp"].min()
    common = last_train.index.intersection(first_test.index)
    assert (last_train[common] <= first_test[common]).all()
    share = (splits["split"] == "test").mean()
    assert 0.17 < share < 0.25


def test_time_split_breaks_ties_by_interaction_id_as_text():
    # each user has 5 interactions, 3 of them at the same (latest) second: their ids, compared as text
    # ("10" < "100" < "9", numbers too), decide which of those are held out, whatever the row order
    rows = [
        (user, ident, second)
        for user, ids in (("a", ("a10", "a9", "a100", "a1", "a2")), ("b", (10, 9, 100, 1, 2)))
        for ident, second in zip(ids, (3, 3, 3, 1, 2), strict=True)
    ]
    frame = pd.DataFrame(rows, columns=["user_id", "interaction_id", "seconds"]).sample(frac=1.0, random_state=0)
    frame["timestamp"] = pd.to_datetime(frame["seconds"], unit="s", utc=True)
    splits = split_interactions(frame, method="time", test_fraction=0.4, validation_fraction=0.2)
    by_id = dict(zip(splits["interaction_id"], splits["split"], strict=True))
    expected = ["validation", "test", "test", "train", "train"]
    assert [by_id[i] for i in ("a10", "a100", "a9", "a1", "a2")] == expected
    assert [by_id[i] for i in (10, 100, 9, 1, 2)] == expected


def test_random_split_is_seeded_and_80_20(small_dataset):
    a = split_interactions(small_dataset.interactions, method="random", seed=1, validation_fraction=0.0)
    b = split_interactions(small_dataset.interactions, method="random", seed=1, validation_fraction=0.0)
    c = split_interactions(small_dataset.interactions, method="random", seed=2, validation_fraction=0.0)
    assert a["split"].equals(b["split"]) and not a["split"].equals(c["split"])
    assert abs((a["split"] == "test").mean() - 0.2) < 0.02
    assert len(a) == len(small_dataset.interactions)


def test_two_level_sampling_matches_the_distribution():
    from rec_core.generation.synthetic import _sample_rows

    rng = np.random.default_rng(0)
    weights = rng.random((3, 300)).astype(np.float32) ** 4  # uneven, not a multiple of the block size
    rows, cols = _sample_rows(weights.copy(), np.array([60_000, 60_000, 60_000]), rng)
    for r in range(3):
        observed = np.bincount(cols[rows == r], minlength=300) / 60_000
        expected = weights[r] / weights[r].sum()
        assert np.abs(observed - expected).max() < 0.006
