"""Progress lines of long steps: the reporter's arithmetic and throttling (injected clock), the library
loops that report through it, and the lines reaching a Dagster run's event log while the step runs."""

import os
import re

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from rec_core.embeddings import Checkpoint, embedding_matrix, text_embeddings
from rec_core.progress import PROGRESS_INTERVAL_ENV, Progress, format_duration, interval_from_env
from tests.conftest import cpu_resources
from tests.test_faults_media import HashEncoder, _items, _texts

# label: done/total unit (pct), rate unit/s|min, ETA ...
RUNNING = re.compile(
    r"^(?P<label>[\w ]+): (?P<done>[\d,]+)/(?P<total>[\d,]+) (?P<unit>\w+) \(\d+\.\d%\), "
    r"[\d,]+\.\d+ (?P=unit)/(s|min), ETA (\d+h)?(\d+m)?\d+s?(; .*)?$"
)


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_line_has_count_rate_and_eta_from_the_rate_so_far():
    clock, lines = Clock(), []
    progress = Progress("item_text_embeddings", lines.append, unit="items", every_s=15, clock=clock).start(50_000)
    clock.now += 29.25
    progress.advance(12_000)
    assert lines == ["item_text_embeddings: 12,000/50,000 items (24.0%), 410.3 items/s, ETA 1m33s"]
    assert progress.rate == pytest.approx(12_000 / 29.25) and progress.eta_s == pytest.approx(38_000 / (12_000 / 29.25))
    clock.now += 30.75
    progress.advance(38_000)
    progress.finish()
    assert lines[-1] == "item_text_embeddings: 50,000/50,000 items (100.0%), 833.3 items/s, done in 1m00s"


def test_lines_are_throttled_to_one_per_interval_and_the_finish_always_logs():
    clock, lines = Clock(), []
    progress = Progress("product_images", lines.append, unit="images", every_s=15, clock=clock).start(100)
    for seconds in (5, 9.9, 0.1, 5, 11, 10):  # t = 5, 14.9, 15, 20, 31, 41
        clock.now += seconds
        progress.advance(10)
    assert [line.split(":")[1].split(" (")[0] for line in lines] == [" 30/100 images", " 50/100 images"]
    assert all(RUNNING.match(line) for line in lines)
    progress.finish()
    assert (
        len(lines) == 3 and lines[-1].startswith("product_images: 60/100 images (60.0%)") and "done in 41s" in lines[-1]
    )


def test_slow_loops_report_per_minute_and_stages_share_the_log():
    clock, lines = Clock(), []
    root = Progress("model_evaluation", lines.append, every_s=0, clock=clock)
    ease = root.stage("EASE", unit="lambdas").start(5)
    clock.now += 90
    ease.advance(1, note="lambda 100: validation recall 0.0712")
    assert lines == [
        "model_evaluation EASE: 1/5 lambdas (20.0%), 0.67 lambdas/min, ETA 6m00s; lambda 100: validation recall 0.0712"
    ]
    assert RUNNING.match(lines[0])


def test_a_silent_reporter_counts_and_an_unknown_total_has_no_eta():
    clock, lines = Clock(), []
    silent = Progress("x", clock=clock).start(10)
    clock.now += 1
    silent.advance(4)
    silent.finish()
    assert silent.done == 4 and silent.line() == "x: 4/10 items (40.0%), 4.0 items/s, ETA 2s"
    open_ended = Progress("push", lines.append, unit="rows", every_s=0, clock=clock).start(None)
    clock.now += 2
    open_ended.advance(1234)
    assert lines == ["push: 1,234 rows, 617.0 rows/s"]
    Progress("nothing", lines.append, every_s=0, clock=clock).start(0).finish()
    assert len(lines) == 1  # a loop with nothing to do says nothing


def test_durations_read_at_a_glance():
    assert [format_duration(s) for s in (0.4, 45, 93, 3599, 7500)] == ["0s", "45s", "1m33s", "59m59s", "2h05m"]


def test_interval_comes_from_the_environment_and_bad_values_are_named(monkeypatch):
    monkeypatch.delenv(PROGRESS_INTERVAL_ENV, raising=False)
    assert interval_from_env() == 15.0 and Progress("x").every_s == 15.0
    monkeypatch.setenv(PROGRESS_INTERVAL_ENV, "0")
    assert Progress("x").every_s == 0.0
    for bad in ("soon", "-1", "nan"):
        monkeypatch.setenv(PROGRESS_INTERVAL_ENV, bad)
        with pytest.raises(ValueError, match=f"{PROGRESS_INTERVAL_ENV}='{bad}'"):
            Progress("x")


def test_encoding_reports_each_chunk_and_gives_the_same_vectors(tmp_path):
    items = _items(40)
    lines: list[str] = []
    reported = text_embeddings(
        "item_id",
        items["item_id"],
        _texts(items),
        HashEncoder(),
        checkpoint=Checkpoint(tmp_path / "parts", chunk_rows=10),
        progress=Progress("item_text_embeddings", lines.append, every_s=0),
    )
    assert [RUNNING.match(line)["done"] for line in lines[:-1]] == ["10", "20", "30"]
    assert lines[-1].startswith("item_text_embeddings: 40/40 items (100.0%)") and "done in" in lines[-1]
    plain = text_embeddings("item_id", items["item_id"], _texts(items), HashEncoder())
    for column in ("name_embedding", "description_embedding"):
        np.testing.assert_array_equal(embedding_matrix(reported.table, column), embedding_matrix(plain.table, column))
    unchanged: list[str] = []
    text_embeddings(
        "item_id",
        items["item_id"],
        _texts(items),
        HashEncoder(),
        previous=plain.table,
        progress=Progress("item_text_embeddings", unchanged.append, every_s=0),
    )
    assert unchanged == []  # everything reused: nothing to report


def test_progress_lines_reach_the_run_event_log_while_the_step_runs(tmp_path, small_dataset, monkeypatch):
    from rec_assets.assets.media import product_images
    from rec_core.generation.generate_images import PLACEHOLDER_BATCH

    monkeypatch.setenv(PROGRESS_INTERVAL_ENV, "0")  # a line per batch instead of one per 15 s
    items = small_dataset.items.head(3 * PLACEHOLDER_BATCH + 5)

    @dg.asset(name="items")
    def items_stub() -> pd.DataFrame:
        return items

    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize(
        [items_stub, product_images],
        instance=instance,
        resources=cpu_resources(tmp_path),
    )
    assert result.success
    entries = instance.all_logs(result.run_id)
    running = [(e.timestamp, RUNNING.match(e.user_message)) for e in entries if RUNNING.match(e.user_message or "")]
    assert [m["done"] for _, m in running] == ["64", "128", "192"]
    assert all(m["label"] == "product_images" and m["total"] == str(len(items)) for _, m in running)
    finished = [
        e for e in entries if (e.user_message or "").startswith(f"product_images: {len(items)}/{len(items)} images")
    ]
    assert len(finished) == 1 and "done in" in finished[0].user_message
    [materialized] = [
        e
        for e in entries
        if e.dagster_event
        and e.dagster_event.event_type == dg.DagsterEventType.ASSET_MATERIALIZATION
        and e.dagster_event.asset_key == product_images.key
    ]
    assert max(t for t, _ in running) <= finished[0].timestamp <= materialized.timestamp  # logged during the step


def test_training_epochs_report_batches_and_train_the_same_model(small_dataset, monkeypatch):
    from rec_core.data.splits import split_interactions
    from rec_core.training import TrainingConfig, prepare_training_data, train_two_tower
    from rec_core.tuning import TuningConfig, tune_two_tower

    monkeypatch.setenv(PROGRESS_INTERVAL_ENV, "0")  # a line per batch instead of one per 15 s
    base = TrainingConfig(max_epochs=2, patience=2, batch_size=2048, seed=0)
    data = prepare_training_data(
        small_dataset.users,
        small_dataset.items,
        split_interactions(small_dataset.interactions, method="random", seed=0),
        config=base,
    )
    lines: list[str] = []
    result = tune_two_tower(
        data, base, TuningConfig(trials=1), log=lambda line: None, progress=Progress("two_tower", lines.append)
    )
    total = -(-data.example_items.numel() // base.batch_size)
    assert total >= 3
    for epoch in (1, 2):
        batches = [RUNNING.match(line) for line in lines if line.startswith(f"two_tower trial 0 epoch {epoch}:")]
        assert all(batches) and {m["unit"] for m in batches} == {"batches"}
        assert [m["done"] for m in batches] == [str(done) for done in range(1, total)]  # the epoch's own line ends it
        assert {m["total"] for m in batches} == {str(total)}
    plain = train_two_tower(data, base, progress=False)  # no hook: the hook draws nothing, so the same training
    assert [(r["train_loss"], r["validation_recall_at_10"]) for r in result.trained.history] == [
        (r["train_loss"], r["validation_recall_at_10"]) for r in plain.history
    ]
