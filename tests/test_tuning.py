"""The validation-split search: the base configuration is trial 0, the winner is the best validation
recall, and a fixed seed gives the same trials."""

import pytest

from rec_core.data.splits import split_interactions
from rec_core.training import TrainingConfig, prepare_training_data
from rec_core.tuning import TuningConfig, base_params, tune_two_tower

METRIC = "validation_recall_at_10"


@pytest.fixture(scope="module")
def data_and_base(small_dataset):
    base = TrainingConfig(max_epochs=4, patience=4, seed=0)
    splits = split_interactions(small_dataset.interactions, method="random", seed=0)
    return prepare_training_data(small_dataset.users, small_dataset.items, splits, config=base), base


def test_search_keeps_the_best_validation_trial_and_starts_from_the_base(data_and_base):
    data, base = data_and_base
    lines: list[str] = []
    result = tune_two_tower(data, base, TuningConfig(trials=3, timeout_s=None, seed=0, prune=False), log=lines.append)
    assert [r["trial"] for r in result.trials] == [0, 1, 2]
    assert result.trials[0]["params"] == base_params(base, data)
    assert all(r["state"] == "complete" for r in result.trials)
    best = max(result.trials, key=lambda r: r["validation_recall"])
    assert [r["best"] for r in result.trials].count(True) == 1 and best["best"]
    assert max(row[METRIC] for row in result.trained.history) == pytest.approx(best["validation_recall"])
    assert result.trained.config == result.config
    assert len(lines) == 3 and all("ETA" in line and "trials/min" in line for line in lines)
    # a later trial's configuration really differs from the base (the search explores)
    assert result.trials[1]["params"] != result.trials[0]["params"]


def test_search_is_deterministic_for_a_seed(data_and_base):
    data, base = data_and_base
    tuning = TuningConfig(trials=2, timeout_s=None, seed=3, prune=False)
    first, second = tune_two_tower(data, base, tuning), tune_two_tower(data, base, tuning)
    assert [r["params"] for r in first.trials] == [r["params"] for r in second.trials]
    assert [r["validation_recall"] for r in first.trials] == [r["validation_recall"] for r in second.trials]


def test_one_trial_is_the_base_configuration(data_and_base):
    data, base = data_and_base
    result = tune_two_tower(data, base, TuningConfig(trials=1))
    assert result.config == base and len(result.trials) == 1


def test_dagster_training_config_defaults_are_the_library_defaults():
    from rec_assets.assets.model import TwoTowerTrainingConfig

    config = TwoTowerTrainingConfig()
    assert config.training_config() == TrainingConfig()
    assert config.tuning_config() == TuningConfig()


def test_time_split_trials_probe_the_recency_weight_and_any_base_is_accepted(small_dataset):
    splits = split_interactions(small_dataset.interactions, method="time")
    base = TrainingConfig(max_epochs=2, patience=2, seed=0, learning_rate=0.0)  # outside the sampled range
    data = prepare_training_data(small_dataset.users, small_dataset.items, splits, config=base)
    assert data.time_split
    result = tune_two_tower(data, base, TuningConfig(trials=3, timeout_s=None, prune=False))
    weights = [r["params"]["recency_weight"] for r in result.trials]
    base_weight = data.recency_weight(base)
    assert weights == [base_weight, base_weight / 4, base_weight / 16]
    assert result.trials[0]["params"]["learning_rate"] == 0.0
