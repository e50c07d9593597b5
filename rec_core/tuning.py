"""Hyperparameter search on the run's own validation split, then the winner's model.

Why a search inside every training run: no fixed learning rate, temperature or regularization is
right for every catalog, and a default chosen on one dataset shows its bias on the next. The
search only ever looks at the validation split (carved from the data the run was given), so the
test split stays an honest estimate.

How: trial 0 is always the base configuration, so a search can only improve on it by validation
recall; on a time split trials 1 and 2 probe lower recency weights; later trials are Optuna's TPE
sampler, seeded, over the knobs whose best value depends most on the data (learning rate,
temperature, weight decay, and on a time split the recency weight). Trials report validation
recall after every epoch and the median pruner stops ones that trail the median of earlier trials
at the same epoch, once past the epoch where the base trial peaked. Training is deterministic for
a fixed seed and data, so the winning trial's model *is* the refit with the winning setting; it is
returned as is rather than trained a second time.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import optuna

from rec_core.distributed import train_distributed
from rec_core.progress import Progress, progress_line
from rec_core.training import TrainedTwoTower, TrainingConfig, TrainingData

logger = logging.getLogger(__name__)


@dataclass
class TuningConfig:
    # trials at most, the first being the base configuration. 1 = no search: at today's cost of a trial
    # (about 50 s at the default data size) more would push the default pipeline past its 180 s bar.
    trials: int = 1
    timeout_s: float | None = 600.0  # safety net for large data: no new trial starts after this (None = no limit)
    seed: int = 0  # sampler seed: the same data and seed give the same trials
    prune: bool = True  # stop trials trailing the median of earlier ones at the same epoch
    prune_warmup_epochs: int = 3  # epochs every trial runs before it can be pruned (or the base's best epoch, if later)


@dataclass
class TuningResult:
    config: TrainingConfig  # the winning configuration
    trained: TrainedTwoTower  # the winning trial's model (a refit would reproduce it bit for bit)
    # per trial: trial (number), state, validation_recall (at the config's eval_k), epochs, seconds, params, best
    trials: list[dict] = field(default_factory=list)
    wall_s: float = 0.0


def suggest_config(trial: optuna.Trial, base: TrainingConfig, data: TrainingData) -> TrainingConfig:
    """The search space: the few knobs whose best value depends most on the data.

    A budget of a handful of trials samples a small space far better than a wide one, so widths,
    dropout and the popularity correction keep their defaults. On a time split the recency weight
    is searched too: how fast interest drifts is a property of the data (MovieLens validation
    preferred 2, the synthetic generator's drifting catalog 20).
    """
    recency = {}
    if data.time_split:
        recency["recency_weight"] = trial.suggest_float("recency_weight", 0.5, 30.0, log=True)
    return dataclasses.replace(
        base,
        **recency,
        learning_rate=trial.suggest_float("learning_rate", 1e-3, 1e-2, log=True),
        temperature=trial.suggest_float("temperature", 0.03, 0.3, log=True),
        weight_decay=trial.suggest_float("weight_decay", 1e-6, 1e-2, log=True),
    )


RECENCY_PROBE_FACTORS = (0.25, 0.0625)
"""On a time split, trials 1 and 2 try the base recency weight times these. The best weight seen on
validation splits differed tenfold between datasets (MovieLens 2, synthetic 20), so a log-spaced probe
along that one axis finds the right order of magnitude within a budget too small for random sampling.
The default base (20) sits at the top of that range, so the probes go down."""


def trial_config(trial: optuna.Trial, base: TrainingConfig, data: TrainingData) -> tuple[TrainingConfig, dict]:
    """(configuration, its parameters) of a trial: the base, then recency probes on a time split, then samples."""
    probes = [data.recency_weight(base) * factor for factor in RECENCY_PROBE_FACTORS] if data.time_split else []
    if trial.number == 0:
        config = base  # used as given, even outside the search ranges
    elif trial.number <= len(probes):
        config = dataclasses.replace(base, recency_weight=probes[trial.number - 1])
    else:
        return suggest_config(trial, base, data), dict(trial.params)
    return config, base_params(config, data)


def base_params(base: TrainingConfig, data: TrainingData) -> dict:
    """The base configuration in the search space's terms (enqueued as trial 0)."""
    recency = {"recency_weight": data.recency_weight(base)} if data.time_split else {}
    return recency | {
        "learning_rate": base.learning_rate,
        "temperature": base.temperature,
        "weight_decay": base.weight_decay,
    }


def tune_two_tower(
    data: TrainingData,
    base: TrainingConfig | None = None,
    tuning: TuningConfig | None = None,
    device: str = "cpu",
    log: Callable[[str], None] | None = None,
    checkpoint_dir: str | Path | None = None,
    progress: Progress | None = None,
) -> TuningResult:
    """Searches on `data.validation`, returns the best trial's configuration and model.

    `log` gets a line per finished trial; `progress` reports each trial's epochs as they finish
    (its ETA is to `max_epochs`: early stopping usually ends sooner) and, within an epoch that
    outlasts its interval, the batches done (ETA to the epoch's end).

    With `checkpoint_dir`, each trial checkpoints every epoch under `trial-N/`. The seeded sampler
    proposes the same trials again after an interruption, so a rerun replays finished trials from
    their checkpoints and resumes the interrupted one where it stopped.
    """
    base = base or TrainingConfig()
    tuning = tuning or TuningConfig()
    log = log or logger.info
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    pruner = (
        optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=0)
        if tuning.prune
        else optuna.pruners.NopPruner()
    )
    study = optuna.create_study(
        direction="maximize", sampler=optuna.samplers.TPESampler(seed=tuning.seed), pruner=pruner
    )
    metric = f"validation_recall_at_{base.eval_k}"
    started = time.perf_counter()
    models: dict[int, tuple[TrainingConfig, TrainedTwoTower]] = {}
    base_best_epoch = [0]  # set when trial 0 (never pruned) finishes
    records: list[dict] = []
    progress = progress or Progress("two_tower")

    def objective(trial: optuna.Trial) -> float:
        config, params = trial_config(trial, base, data)
        trial_started = time.perf_counter()
        recalls: list[float] = []
        epochs = progress.stage(f"trial {trial.number}", unit="epochs").start(config.max_epochs)
        epoch_batches: Progress | None = None  # the running epoch's reporter

        def report_batch(done: int, total: int) -> None:
            nonlocal epoch_batches
            if done == 1:  # epochs reported so far (restored ones included) + 1 is the running one
                epoch_batches = progress.stage(f"trial {trial.number} epoch {len(recalls) + 1}", unit="batches").start(
                    total
                )
            epoch_batches.advance(1)  # throttled; the epoch's own line closes it

        def report(row: dict) -> None:
            recalls.append(row[metric])
            epochs.advance(1, note=f"validation recall {row[metric]:.4f}")
            trial.report(row[metric], row["epoch"])
            # judged only from the epoch where the base peaked: a slower start is not a worse end
            if row["epoch"] >= max(tuning.prune_warmup_epochs, base_best_epoch[0]) and trial.should_prune():
                raise optuna.TrialPruned()

        record = {"trial": trial.number, "params": params}
        try:
            trained = train_distributed(
                data,
                config,
                processes=config.processes,
                device=device,
                on_epoch=report,
                on_batch=report_batch,
                checkpoint_dir=None if checkpoint_dir is None else Path(checkpoint_dir) / f"trial-{trial.number}",
            )
        except optuna.TrialPruned:
            epochs.finish(note="pruned")
            records.append(
                record
                | {
                    "state": "pruned",
                    "validation_recall": max(recalls),
                    "epochs": len(recalls),
                    "seconds": time.perf_counter() - trial_started,
                }
            )
            _log_trial(log, records[-1], started, tuning)
            raise
        value = max(row[metric] for row in trained.history)
        epochs.finish(note=f"best validation recall {value:.4f} at epoch {trained.best_epoch}")
        if trial.number == 0:
            base_best_epoch[0] = trained.best_epoch
        models[trial.number] = (config, trained)
        records.append(
            record
            | {
                "state": "complete",
                "validation_recall": value,
                "epochs": len(trained.history),
                "seconds": time.perf_counter() - trial_started,
            }
        )
        _log_trial(log, records[-1], started, tuning)
        # keep only the best model so far in memory
        for number in [n for n in models if n != _best_number(models, metric)]:
            del models[number]
        return value

    study.optimize(objective, n_trials=max(1, tuning.trials), timeout=tuning.timeout_s)
    winner = _best_number(models, metric)
    config, trained = models[winner]
    for record in records:
        record["best"] = record["trial"] == winner
    return TuningResult(config, trained, records, time.perf_counter() - started)


def _best_number(models: dict[int, tuple[TrainingConfig, TrainedTwoTower]], metric: str) -> int:
    return max(models, key=lambda n: (max(row[metric] for row in models[n][1].history), -n))


def _log_trial(log: Callable[[str], None], record: dict, started: float, tuning: TuningConfig) -> None:
    done = record["trial"] + 1
    elapsed = time.perf_counter() - started
    per_trial = elapsed / done
    remaining = max(0, tuning.trials - done)
    eta = remaining * per_trial
    if tuning.timeout_s is not None:
        eta = min(eta, max(0.0, tuning.timeout_s - elapsed) + per_trial)
    log(
        progress_line(
            "tuning",
            done,
            tuning.trials,
            "trials",
            elapsed,
            math.ceil(eta),
            per="min",
            note=f"trial {record['trial']} {record['state']}, validation recall {record['validation_recall']:.4f} "
            f"after {record['epochs']} epochs in {record['seconds']:.1f}s",
        )
    )


def trials_table(trials: list[dict]) -> str:
    """A markdown table of the search: one row per trial, the chosen one marked."""
    names = sorted({name for t in trials for name in t["params"]})
    lines = [
        "| trial | state | validation recall | epochs | seconds | " + " | ".join(names) + " |",
        "|---" * (5 + len(names)) + "|",
    ]
    for t in trials:
        params = " | ".join(_short(t["params"].get(name)) for name in names)
        mark = " (chosen)" if t.get("best") else ""
        lines.append(
            f"| {t['trial']}{mark} | {t['state']} | {t['validation_recall']:.4f} | {t['epochs']} | "
            f"{t['seconds']:.1f} | {params} |"
        )
    return "\n".join(lines)


def _short(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)
