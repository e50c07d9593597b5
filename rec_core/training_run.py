"""One training run end to end, as the `two_tower_model` asset and the quality benchmark run it.

Fit the preprocessing on the train split, search the validation split (`rec_core.tuning`), write
the serving artifact under `<root>/two_tower_model` and report the run's metrics. Checkpoints go
to a local work folder of the root (`storage.local_work_dir`), so a killed run resumes from its
last finished epoch; they are removed once the artifact is written.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rec_core import storage
from rec_core.data.bundle import DataBundle
from rec_core.data.paths import MODEL_DIR, TRAINING_CHECKPOINTS_DIR
from rec_core.progress import Progress
from rec_core.training import TrainingConfig, TrainingData, prepare_training_data, write_artifact
from rec_core.tuning import TuningConfig, TuningResult, tune_two_tower

log = logging.getLogger(__name__)


@dataclass
class TrainingRun:
    search: TuningResult  # the winning configuration, its model and every trial
    metrics: dict[str, float]  # also written to the artifact's metrics.json
    model_dir: Path  # where the artifact was written (a UPath on object storage)


def run_metrics(search: TuningResult, data: TrainingData) -> dict[str, float]:
    """What a run reports: the best validation recall, epochs, speed, input widths and the search's cost."""
    trained = search.trained
    best = max(trained.history, key=lambda h: h["validation_recall_at_10"])
    return {
        "validation_recall_at_10": float(best["validation_recall_at_10"]),
        "best_epoch": float(trained.best_epoch),
        "epochs": float(len(trained.history)),
        "train_seconds": float(trained.train_seconds),
        "examples_per_second": float(trained.examples_seen / max(trained.train_seconds, 1e-9)),
        "train_examples": float(data.example_items.numel()),
        "item_text_dim": float(data.preprocessing.item_text_dim),
        "item_image_dim": float(data.preprocessing.item_image_dim),
        "user_text_dim": float(data.preprocessing.user_text_dim),
        "tuning_trials": float(len(search.trials)),
        "tuning_wall_s": float(search.wall_s),
    }


def train_and_write(
    data: DataBundle,
    root,
    training: TrainingConfig | None = None,
    tuning: TuningConfig | None = None,
    device: str = "cpu",
    progress: Callable[[str], None] | None = None,
) -> TrainingRun:
    """Trains on `data` (searching as `tuning` says), writes the artifact under `root`; `progress` gets each trial's
    line and, throttled, each epoch's (`rec_core.progress`)."""
    training = training or TrainingConfig()
    prepared = prepare_training_data(
        data.users, data.items, data.interaction_splits, **data.embeddings(), config=training
    )
    checkpoints = storage.local_work_dir(root, TRAINING_CHECKPOINTS_DIR)
    search = tune_two_tower(
        prepared,
        training,
        tuning or TuningConfig(),
        device=device,
        log=progress or log.info,
        checkpoint_dir=checkpoints,
        progress=Progress("two_tower", progress or log.info),
    )
    metrics = run_metrics(search, prepared)
    model_dir = storage.as_path(root) / MODEL_DIR
    write_artifact(search.trained, model_dir, metrics)
    shutil.rmtree(checkpoints, ignore_errors=True)
    log.info(
        "two-tower: validation recall@10 %.4f after %d epochs on %s",
        metrics["validation_recall_at_10"],
        len(search.trained.history),
        device,
    )
    return TrainingRun(search, metrics, model_dir)
