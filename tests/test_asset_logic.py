"""The library calls behind the Dagster assets, tested without Dagster: source selection, check logic,
the artifact layout, one training run, and the release gate's scores reused by the full evaluation."""

import json

import numpy as np
import pandas as pd
import pytest

from rec_core.data import paths
from rec_core.data.bundle import DataBundle
from rec_core.data.splits import split_interactions


@pytest.fixture(scope="module")
def bundle(small_dataset):
    return DataBundle(small_dataset.users, small_dataset.items, split_interactions(small_dataset.interactions))


@pytest.fixture(scope="module")
def trained_root(tmp_path_factory, bundle):
    """An artifact root holding a two-tower trained for two epochs by `train_and_write`."""
    from rec_core.training import TrainingConfig
    from rec_core.training_run import train_and_write
    from rec_core.tuning import TuningConfig

    root = tmp_path_factory.mktemp("artifacts")
    run = train_and_write(bundle, str(root), TrainingConfig(max_epochs=2, patience=2), TuningConfig(trials=1))
    return root, run


# ---- layout and bundle -------------------------------------------------------------------------
def test_artifact_root_default_is_the_environment_else_data_artifacts(monkeypatch, tmp_path):
    monkeypatch.setenv(paths.ARTIFACT_ROOT_ENV, "s3://bucket/prefix")
    assert paths.default_artifact_root() == "s3://bucket/prefix"
    monkeypatch.delenv(paths.ARTIFACT_ROOT_ENV)
    monkeypatch.chdir(tmp_path)
    assert paths.default_artifact_root() == str(tmp_path / "data" / "artifacts")
    assert (
        paths.image_link("I1").startswith(f"{paths.PRODUCT_IMAGES_DIR}/")
        and paths.table_file("items") == "items.parquet"
    )


def test_bundle_leaves_out_the_inputs_a_model_does_not_use(bundle):
    table = pd.DataFrame({"item_id": ["x"]})
    full = DataBundle(bundle.users, bundle.items, bundle.interaction_splits, table, table, table)
    assert DataBundle.table_names() == ("users", "items", "interaction_splits", *full.embeddings())
    no_text = full.with_inputs(text=False)
    assert no_text.item_text_embeddings is None and no_text.user_text_embeddings is None
    assert no_text.item_clip_embeddings is table and full.with_inputs(images=False).item_clip_embeddings is None
    assert set(full.split("train")["split"]) == {"train"}


# ---- source selection and checks ---------------------------------------------------------------
def test_synthetic_source_is_conformed_and_keeps_its_oracle(tmp_path):
    from rec_core.data.sources import load_source
    from rec_core.generation.synthetic import GeneratorConfig

    source = load_source(
        "synthetic",
        generator=GeneratorConfig(n_users=40, n_items=90, n_interactions=600, seed=4),
        truth_dir=tmp_path / "truth",
    )
    assert (len(source.users), len(source.items), len(source.interactions)) == (40, 90, 600)
    assert source.label == "synthetic(seed=4)"
    assert str(source.interactions["timestamp"].dtype) == "datetime64[us, UTC]"
    assert (tmp_path / "truth" / paths.ORACLE_IDS).exists() and (tmp_path / "truth" / paths.ORACLE_ARRAYS).exists()


def test_source_config_errors_name_the_problem():
    from rec_core.data.sources import load_source
    from rec_core.data.validation import DataValidationError

    with pytest.raises(DataValidationError, match="'path'.*needs a dataset path"):
        load_source("path")
    with pytest.raises(ValueError, match="unknown source 'ftp'"):
        load_source("ftp")


def test_split_coverage_finds_lost_rows_and_missing_splits(small_dataset):
    from rec_core.data.validation import split_coverage

    splits = split_interactions(small_dataset.interactions)
    whole = split_coverage(splits, small_dataset.interactions)
    assert whole["complete"] and whole["splits"] == ["test", "train", "validation"] and whole["same_interactions"]
    lost = split_coverage(splits.iloc[1:], small_dataset.interactions)
    assert not lost["complete"] and not lost["same_interactions"] and lost["rows"] == len(splits) - 1
    no_test = split_coverage(splits.assign(split="train"), small_dataset.interactions)
    assert not no_test["complete"] and no_test["same_interactions"]


def test_embedding_coverage_counts_missing_ids_and_bad_vectors():
    from rec_core.data.validation import embedding_coverage

    unit, zero, long, broken = [1.0, 0.0], [0.0, 0.0], [3.0, 4.0], [np.nan, 1.0]
    table = pd.DataFrame({"item_id": ["a", "b", "c", "d"], "v": [unit, zero, long, broken], "w": [unit] * 4})
    counts = embedding_coverage(pd.Series(["a", "b", "c", "d", "e"]), table, "item_id", ("v", "w"))
    assert counts == {"missing": 1, "v": 2, "w": 0}  # the zero vector (an empty text) is fine


# ---- one training run --------------------------------------------------------------------------
def test_training_run_writes_the_artifact_and_reports_its_metrics(trained_root):
    root, run = trained_root
    directory = root / paths.MODEL_DIR
    assert run.model_dir == directory
    assert {paths.MODEL_WEIGHTS, paths.MODEL_CONFIG, paths.PREPROCESSING, paths.METRICS, paths.TRAINING_RECORD} <= {
        p.name for p in directory.iterdir()
    }
    assert json.loads((directory / paths.METRICS).read_text()) == run.metrics
    history = run.search.trained.history
    assert run.metrics["epochs"] == len(history) == 2 and run.metrics["tuning_trials"] == 1
    assert run.metrics["validation_recall_at_10"] == max(h["validation_recall_at_10"] for h in history)
    assert not (root / paths.TRAINING_CHECKPOINTS_DIR).exists()  # removed once the artifact is written


# ---- the gate and the full evaluation share one scoring pass -----------------------------------
def test_evaluation_reuses_the_gate_scores_of_the_same_model_and_data(trained_root, bundle, monkeypatch):
    from rec_core import evaluation, model_evaluation

    root, _ = trained_root
    calls = []

    def counted(encoder, data, k=10):
        calls.append(data)
        return evaluation_scores(encoder, data, k)

    evaluation_scores = evaluation.test_split_scores
    monkeypatch.setattr(evaluation, "test_split_scores", counted)
    monkeypatch.setattr(model_evaluation, "test_split_scores", counted)
    fast = {"als_trials": 1, "ease_lambdas": (100.0,)}

    verdict = model_evaluation.run_release_gate(str(root), bundle)
    assert len(calls) == 1 and set(verdict) == {"two_tower_recall_at_10", "popularity_recall_at_10", "passed"}
    stored = json.loads((root / paths.RELEASE_GATE_DIR / paths.GATE_SCORES).read_text())
    results = model_evaluation.evaluate_stored_model(str(root), bundle, **fast)
    assert len(calls) == 1  # the gate's scores, not a second pass
    assert results["two_tower"] == stored["scores"]["two_tower"]
    assert results["two_tower"]["recall_at_10"] == verdict["two_tower_recall_at_10"]
    assert {"ease", "als"} <= set(results)
    assert json.loads((root / paths.MODEL_EVALUATION_DIR / paths.METRICS).read_text()) == results

    other = DataBundle(bundle.users, bundle.items, bundle.interaction_splits.iloc[:-50])  # other data: scored again
    model_evaluation.evaluate_stored_model(str(root), other, **fast)
    assert len(calls) == 2 and calls[-1] is other


def test_oracle_joins_only_when_it_describes_the_data(tmp_path, small_dataset):
    from rec_core.model_evaluation import matching_oracle

    assert matching_oracle(str(tmp_path), small_dataset.users, small_dataset.items) is None
    small_dataset.oracle.save(tmp_path / paths.SYNTHETIC_TRUTH_DIR)
    assert matching_oracle(str(tmp_path), small_dataset.users, small_dataset.items) is not None
    assert matching_oracle(str(tmp_path), small_dataset.users, small_dataset.items.iloc[1:]) is None
