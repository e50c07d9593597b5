"""Issue 8 (training part): a training run killed with SIGKILL resumes from its last checkpoint.

A real process is killed (no simulated exception, unlike tests/test_training.py): it trains with
a checkpoint directory and gets SIGKILL as soon as its first per-epoch checkpoint is on disk.
The next run with the same checkpoint directory must continue from that epoch, not from
scratch, and end as good as a run that was never interrupted.
"""

import json
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import asdict

import pytest

from rec_core.data.splits import split_interactions
from rec_core.evaluation import build_ranking_task, popularity_scorer, ranking_metrics, two_tower_scorer
from rec_core.inference import TwoTowerEncoder
from rec_core.training import TrainingConfig, prepare_training_data, train_two_tower
from tests.conftest import REPO

CONFIG = {"max_epochs": 8, "patience": 20, "seed": 2}  # patience > epochs: every run does all epochs
CHECKPOINT_TIMEOUT_S = 300  # the child never writing a checkpoint within this is a failure, not a hang

TRAINER = textwrap.dedent("""
    import json, os, sys
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from rec_core.data.splits import split_interactions
    from rec_core.generation.synthetic import GeneratorConfig, generate_dataset
    from rec_core.training import TrainingConfig, prepare_training_data, train_two_tower
    generator, config, checkpoint_dir = json.loads(sys.argv[1]), TrainingConfig(**json.loads(sys.argv[2])), sys.argv[3]
    dataset = generate_dataset(GeneratorConfig(**generator))
    splits = split_interactions(dataset.interactions, method="time", seed=0)
    data = prepare_training_data(dataset.users, dataset.items, splits, config=config)
    print("training", flush=True)
    train_two_tower(data, config, checkpoint_dir=checkpoint_dir, progress=False)
    print("finished", flush=True)
""")


def _test_recall(trained, dataset, splits) -> float:
    test = build_ranking_task(splits, dataset.items["item_id"].tolist(), "test")
    encoder = TwoTowerEncoder(trained.model, trained.preprocessing)
    return ranking_metrics(two_tower_scorer(encoder, dataset.users, dataset.items, test), test)["recall_at_10"]


def _train_until_killed(small_dataset, checkpoint_dir) -> int:
    """Runs the trainer in a child process, SIGKILLs it once a checkpoint exists; returns the checkpointed epoch."""
    state_file = checkpoint_dir / "state.json"
    log = checkpoint_dir.with_name("trainer.log")
    with open(log, "wb") as stderr:  # a file, not a pipe: a chatty child can never block on a full pipe
        child = subprocess.Popen(
            [
                sys.executable,
                "-c",
                TRAINER,
                json.dumps(asdict(small_dataset.config)),
                json.dumps(CONFIG),
                str(checkpoint_dir),
            ],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=stderr,
        )
    try:
        deadline = time.monotonic() + CHECKPOINT_TIMEOUT_S
        while not state_file.is_file():
            if child.poll() is not None:
                pytest.fail(
                    f"the trainer exited ({child.returncode}) before its first checkpoint:\n{log.read_text()[-3000:]}"
                )
            if time.monotonic() > deadline:
                pytest.fail("the trainer wrote no checkpoint in time")
            time.sleep(0.02)
        child.send_signal(signal.SIGKILL)
        child.wait()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    output = child.stdout.read().decode()
    assert child.returncode == -signal.SIGKILL, "the trainer was not killed: it had already exited"
    assert "training" in output and "finished" not in output
    return json.loads(state_file.read_text())["epoch"]


def test_sigkilled_training_resumes_from_its_checkpoint_and_reaches_the_same_recall(small_dataset, tmp_path):
    checkpoint_dir = tmp_path / "checkpoint"
    killed_at_epoch = _train_until_killed(small_dataset, checkpoint_dir)
    assert 1 <= killed_at_epoch < CONFIG["max_epochs"], "the kill did not land mid-training"

    config = TrainingConfig(**CONFIG)
    splits = split_interactions(small_dataset.interactions, method="time", seed=0)
    data = prepare_training_data(small_dataset.users, small_dataset.items, splits, config=config)
    resumed = train_two_tower(data, config, checkpoint_dir=checkpoint_dir, progress=False)
    uninterrupted = train_two_tower(data, config, progress=False)

    # It continued where the killed process stopped: only the missing epochs were trained.
    assert resumed.resumed_from_epoch == killed_at_epoch and uninterrupted.resumed_from_epoch == 0
    assert [h["epoch"] for h in resumed.history] == list(range(1, CONFIG["max_epochs"] + 1))
    assert json.loads((checkpoint_dir / "state.json").read_text())["epoch"] == CONFIG["max_epochs"]

    # ... and it is as good as the run that was never interrupted, and better than popularity.
    resumed_recall = _test_recall(resumed, small_dataset, splits)
    uninterrupted_recall = _test_recall(uninterrupted, small_dataset, splits)
    test = build_ranking_task(splits, small_dataset.items["item_id"].tolist(), "test")
    popularity = ranking_metrics(popularity_scorer(splits[splits["split"] == "train"], test), test)["recall_at_10"]
    print(
        f"killed after epoch {killed_at_epoch}/{CONFIG['max_epochs']}: test recall@10 resumed {resumed_recall:.4f}, "
        f"uninterrupted {uninterrupted_recall:.4f}, popularity {popularity:.4f}"
    )
    assert abs(resumed_recall - uninterrupted_recall) <= max(0.02, 0.15 * uninterrupted_recall)
    assert min(resumed_recall, uninterrupted_recall) > popularity
