"""Training the two-tower the way it is used: rank the right item above the catalog.

Loss: in-batch sampled softmax. For a batch of (user, positive item) pairs, every other item in
the batch is a negative. In-batch items are drawn proportionally to popularity, which would
teach the model to demote popular items, so each logit is corrected by subtracting log Q(item)
(its expected count in the batch; Yi et al. 2019, "logQ correction"). Logits are cosine / T
(temperature). When the same item is the positive of two rows of a batch ("accidental hit"),
it is masked out as a negative for the other row. Optional extra negatives shared by the batch:
items drawn uniformly from the catalog (corrected by their own log Q).

Inputs: each example's user history excludes the example's own item (leave-one-out), so the
target never leaks into the summary that should predict it. Early stopping watches validation
recall@k; the best epoch's weights are kept. Each epoch's shuffling and dropout draw from
seeds derived from (seed, epoch), so a run resumed from a checkpoint continues exactly as an
uninterrupted one would.
"""

from __future__ import annotations

import copy
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from safetensors.torch import save_model
from tqdm.auto import tqdm

from rec_core.checkpoints import TrainingCheckpoint, run_fingerprint
from rec_core.data.paths import METRICS, MODEL_CONFIG, MODEL_WEIGHTS, PREPROCESSING, TRAINING_RECORD
from rec_core.data.schema import positive_interactions
from rec_core.distributed import Ranks
from rec_core.inference import (
    encode_item_features,
    encode_user_features,
    item_inputs,
    user_inputs,
)
from rec_core.models import TwoTower, TwoTowerConfig
from rec_core.preprocessing import FittedPreprocessing, ItemFeatures, PreprocessingConfig, UserFeatures, data_preprocess
from rec_core.ranking import VALIDATION_USERS, RankingTask, build_ranking_task, ranking_metrics

TIME_SPLIT_RECENCY_WEIGHT = 20.0  # synthetic validation's optimum; MovieLens preferred 2 (the search probes /4 and /16)


@dataclass
class TrainingConfig:
    max_epochs: int = 40  # upper bound; early stopping usually ends sooner
    batch_size: int = 1024  # also the number of in-batch negatives
    learning_rate: float = 1e-3
    weight_decay: float = 1e-5  # AdamW decoupled weight decay
    temperature: float = 0.1  # softmax temperature on cosine similarities
    logq_correction: float = 1.0  # weight of the log-popularity correction (0 = none)
    uniform_negatives: int = 0  # extra negatives per batch drawn uniformly from the catalog
    # Example weight exp(-recency_weight * r), r = 0 for a user's newest train positive, 1 for the oldest.
    # None = auto: TIME_SPLIT_RECENCY_WEIGHT when the held-out interactions follow each user's train
    # interactions in time (a time split: the model is asked for what comes next), else 0.
    recency_weight: float | None = None
    history_dropout: float = 0.0  # share of history items hidden per example (augmentation: robust summaries)
    patience: int = 5  # epochs without validation improvement before stopping
    eval_k: int = 10  # early stopping watches validation recall@eval_k
    max_validation_users: int = VALIDATION_USERS  # fixed random subset of validation users checked each epoch
    seed: int = 0
    processes: int = 1  # data-parallel training processes (DDP ranks, `rec_core.distributed`); on GPUs one each
    model: TwoTowerConfig = field(default_factory=TwoTowerConfig)
    preprocessing: PreprocessingConfig = field(default_factory=PreprocessingConfig)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class TrainingData:
    """Everything a training run reads, already as tensors, computed once per entity."""

    preprocessing: FittedPreprocessing
    users: UserFeatures
    items: ItemFeatures
    example_users: torch.Tensor  # [N] long: user row of each positive train interaction
    example_items: torch.Tensor  # [N] long: item row of each positive train interaction
    example_weights: torch.Tensor  # [N] float: loss weight of each example under the preparing config, mean 1
    train_history: torch.Tensor  # [n_users, L] long: recent train positives (item-id rows)
    item_log_q: torch.Tensor  # [n_items] float: log of each item's share of training examples
    validation: RankingTask
    validation_user_rows: torch.Tensor  # [n_validation_users] long
    example_age: torch.Tensor  # [N] float: place in its user's train sequence, 0 = newest, 1 = oldest
    time_split: bool  # whether held-out interactions follow the train ones in time (see is_time_split)

    def recency_weight(self, config: TrainingConfig) -> float:
        """The configured recency weight, or the automatic one for this split."""
        if config.recency_weight is not None:
            return config.recency_weight
        return TIME_SPLIT_RECENCY_WEIGHT if self.time_split else 0.0

    def weights_for(self, config: TrainingConfig) -> torch.Tensor:
        """[N] loss weights exp(-recency_weight * age), mean 1 (a search varies the weight without re-preparing)."""
        weights = torch.exp(-self.recency_weight(config) * self.example_age)
        return weights / weights.mean()


@dataclass
class TrainedTwoTower:
    model: TwoTower  # best epoch's weights, eval mode, on the CPU
    preprocessing: FittedPreprocessing
    config: TrainingConfig
    history: list[dict[str, float]]  # per epoch: epoch, train_loss, validation recall@k, seconds
    best_epoch: int
    train_seconds: float
    examples_seen: int
    resumed_from_epoch: int = 0  # epochs restored from a checkpoint at the start (0 = a fresh run)


def prepare_training_data(
    users: pd.DataFrame,
    items: pd.DataFrame,
    splits: pd.DataFrame,
    item_text_embeddings: pd.DataFrame | None = None,
    user_text_embeddings: pd.DataFrame | None = None,
    item_clip_embeddings: pd.DataFrame | None = None,
    config: TrainingConfig | None = None,
) -> TrainingData:
    """Fits preprocessing on the train split and builds the example, history and validation tensors."""
    config = config or TrainingConfig()
    train = splits[splits["split"] == "train"]
    preprocessing, user_features, item_features = data_preprocess(
        users, items, train, item_text_embeddings, user_text_embeddings, item_clip_embeddings, config.preprocessing
    )
    user_row = pd.Series(np.arange(len(user_features.ids)), index=pd.Index(user_features.ids, dtype=object))
    item_row = pd.Series(np.arange(len(item_features.ids)), index=pd.Index(item_features.ids, dtype=object))
    positives = positive_interactions(train)
    unknown_users = int((~positives["user_id"].isin(user_row.index)).sum())
    unknown_items = int((~positives["item_id"].isin(item_row.index)).sum())
    if unknown_users or unknown_items:
        raise ValueError(
            f"interaction_splits: {unknown_users} train row(s) name users missing from users, "
            f"{unknown_items} name items missing from items"
        )
    if positives.empty:
        raise ValueError("interaction_splits: the train split has no positive interactions to learn from")
    example_items = item_row[positives["item_id"]].to_numpy()
    # each example's age within its user's train sequence: 0 = newest, 1 = oldest
    # (tied timestamps share one age: their order says nothing)
    from_end = positives.groupby("user_id")["timestamp"].rank(method="average", ascending=False).to_numpy() - 1
    per_user = positives.groupby("user_id")["timestamp"].transform("size").to_numpy()
    example_age = torch.from_numpy((from_end / np.maximum(per_user - 1, 1)).astype(np.float32))
    counts = np.bincount(example_items, minlength=len(item_features.ids)).astype(np.float64)
    validation = build_ranking_task(splits, item_features.ids, "validation", config.max_validation_users, config.seed)
    data = TrainingData(
        preprocessing=preprocessing,
        users=user_features,
        items=item_features,
        example_users=torch.from_numpy(
            user_row[positives["user_id"]].to_numpy(copy=True)
        ),  # pandas hands out read-only views
        example_items=torch.from_numpy(example_items),
        example_weights=torch.ones(len(example_items)),
        train_history=preprocessing.history_matrix(user_features.ids, positives),
        item_log_q=torch.from_numpy(np.log(np.maximum(counts, 1.0) / counts.sum()).astype(np.float32)),
        validation=validation,
        validation_user_rows=torch.from_numpy(user_row[validation.user_ids].to_numpy()),
        example_age=example_age,
        time_split=is_time_split(splits),
    )
    data.example_weights = data.weights_for(config)
    return data


def is_time_split(splits: pd.DataFrame) -> bool:
    """Whether the held-out interactions follow each user's train interactions in time.

    Only validation rows whose timestamp differs from their user's newest train timestamp say
    anything about order: a tie fits a time split and a random split equally well. So the split
    counts as a time split when (nearly) every untied row is later, and most rows are untied;
    data whose timestamps tie (day-granular logs, or one shared import time) is not ordered
    enough for recency weighting to mean anything, whichever split produced it.
    """
    last_train = splits[splits["split"] == "train"].groupby("user_id")["timestamp"].max()
    validation = splits[splits["split"] == "validation"]
    validation = validation[validation["user_id"].isin(last_train.index)]
    if validation.empty:
        return False
    held_out = validation["timestamp"].to_numpy()
    newest_train = last_train.reindex(validation["user_id"]).to_numpy()
    untied = held_out != newest_train
    if untied.mean() < 0.5:
        return False
    return bool((held_out[untied] > newest_train[untied]).mean() >= 0.95)


def build_model(data: TrainingData, config: TrainingConfig) -> TwoTower:
    p = data.preprocessing
    model_config = TwoTowerConfig(
        **{
            **asdict(config.model),
            "n_item_ids": p.n_item_ids,
            "n_user_ids": p.n_user_ids,
            "history_length": p.config.max_history,
            "n_category_nodes": p.n_category_nodes,
            "item_numerical": data.items.numerical.shape[1],
            "item_categories": p.category_vocabulary_sizes,
            "item_text_dim": p.item_text_dim,
            "item_image_dim": p.item_image_dim,
            "user_numerical": data.users.numerical.shape[1],
            "user_categories": p.user_category_vocabulary_sizes,
            "user_text_dim": p.user_text_dim,
        }
    )
    model = TwoTower(model_config)
    # the content of each id-vocabulary item, for the user tower's history summary
    has_id = data.items.id_index > 0
    categorical = torch.zeros(p.n_item_ids + 1, data.items.categorical.shape[1], dtype=torch.long)
    numerical = torch.zeros(p.n_item_ids + 1, data.items.numerical.shape[1])
    categorical[data.items.id_index[has_id]] = data.items.categorical[has_id]
    numerical[data.items.id_index[has_id]] = data.items.numerical[has_id]
    model.set_history_item_content(categorical, numerical)
    return model


def sampled_softmax_loss(
    user_vectors: torch.Tensor,  # [B, D] unit
    item_vectors: torch.Tensor,  # [C, D] unit: the batch's distinct positives, then extra negatives
    positive_column: torch.Tensor,  # [B] long: column of each row's positive in item_vectors
    log_q: torch.Tensor,  # [C] log expected count of each column's item among the candidates
    temperature: float,
    logq_correction: float = 1.0,
    accidental_hits: torch.Tensor | None = None,  # [B, C] bool: columns that are also positives of the row
) -> torch.Tensor:  # [B] per-example loss
    logits = user_vectors @ item_vectors.T / temperature - logq_correction * log_q  # [B, C]
    if accidental_hits is not None:
        logits = logits.masked_fill(accidental_hits, float("-inf"))
    return F.cross_entropy(logits, positive_column, reduction="none")  # [B]


def _move_features(features, device: str):
    moved = copy.copy(features)
    for name, value in vars(features).items():
        if isinstance(value, torch.Tensor):
            setattr(moved, name, value.to(device))
    return moved


def train_two_tower(
    data: TrainingData,
    config: TrainingConfig | None = None,
    device: str = "cpu",
    checkpoint_dir: str | Path | None = None,
    progress: bool = True,
    on_epoch: Callable[[dict], None] | None = None,
    on_batch: Callable[[int, int], None] | None = None,
) -> TrainedTwoTower:
    """Trains to early stop on validation recall@k; returns the best epoch's model (on the CPU).

    `on_epoch` receives each epoch's history row as it finishes (progress logs, search pruning:
    an exception raised there stops training). `on_batch` receives (batches done, batches in the
    epoch) after each optimizer step, so an epoch too long to wait for can report its progress.
    """
    config = config or TrainingConfig()
    torch.manual_seed(config.seed)
    model = build_model(data, config).to(device)
    best = copy.deepcopy(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    users, items = _move_features(data.users, device), _move_features(data.items, device)
    history_table = data.train_history.to(device)
    item_log_q = data.item_log_q.to(device)
    example_users, example_items = data.example_users.to(device), data.example_items.to(device)
    example_weights = data.weights_for(config).to(device)
    n_examples, n_items = example_items.numel(), len(data.items.ids)
    k = config.eval_k

    state = {
        "epoch": 0,
        "history": [],
        "best_epoch": 0,
        "best_recall": -1.0,
        "bad_epochs": 0,
        "seconds": 0.0,
        "examples_seen": 0,
    }
    checkpoint = TrainingCheckpoint(checkpoint_dir, run_fingerprint(config, data)) if checkpoint_dir else None
    if checkpoint is not None:
        state = checkpoint.load(model, best, optimizer) or state
    resumed_from_epoch = state["epoch"]
    for row in state["history"] if on_epoch is not None else ():
        on_epoch(row)  # a resumed run reports its restored epochs too, so a caller sees the same sequence
    ranks = Ranks.current()  # rank 0 of 1 outside torch.distributed: every ranks.* hook below is the identity
    batch_loss, batch_size = ranks.data_parallel(model, _batch_loss), ranks.batch_size(config.batch_size)

    bar = tqdm(total=config.max_epochs, initial=state["epoch"], desc="two-tower", unit="epoch", disable=not progress)
    while state["epoch"] < config.max_epochs and state["bad_epochs"] < config.patience:
        epoch = state["epoch"] + 1
        started = time.perf_counter()
        torch.manual_seed(ranks.seed(config.seed * 100_003 + epoch))  # dropout and negative sampling of this epoch
        order = torch.randperm(n_examples, generator=torch.Generator().manual_seed(config.seed * 100_003 + epoch))
        order = ranks.epoch_share(order).to(device)  # this rank's examples of the epoch
        model.train()
        loss_sum, batches, epoch_batches = 0.0, 0, math.ceil(len(order) / batch_size)
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            loss = batch_loss(
                model,
                users,
                items,
                history_table,
                item_log_q,
                example_users[batch],
                example_items[batch],
                example_weights[batch],
                n_items,
                config,
                device,
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += float(loss.detach())
            batches += 1
            if on_batch is not None:
                on_batch(batches, epoch_batches)
        recall = ranks.from_main(lambda: validation_recall(model, data, device, k))  # rank 0 decides for all
        seconds = time.perf_counter() - started
        state["history"].append(
            {
                "epoch": epoch,
                "train_loss": loss_sum / max(batches, 1),
                f"validation_recall_at_{k}": recall,
                "seconds": seconds,
            }
        )
        state["epoch"], state["seconds"], state["examples_seen"] = (
            epoch,
            state["seconds"] + seconds,
            state["examples_seen"] + n_examples,
        )
        if recall > state["best_recall"]:
            state.update(best_recall=recall, best_epoch=epoch, bad_epochs=0)
            best.load_state_dict(model.state_dict())
        else:
            state["bad_epochs"] += 1
        if checkpoint is not None and ranks.is_main:
            checkpoint.save(model, best, optimizer, state)
        bar.update(1)
        bar.set_postfix(loss=f"{loss_sum / max(batches, 1):.3f}", **{f"val_recall@{k}": f"{recall:.4f}"})
        if on_epoch is not None:
            on_epoch(state["history"][-1])
    bar.close()
    return TrainedTwoTower(
        best.cpu().eval(),
        data.preprocessing,
        config,
        state["history"],
        state["best_epoch"],
        state["seconds"],
        state["examples_seen"],
        resumed_from_epoch,
    )


def _batch_loss(
    model: TwoTower,
    users: UserFeatures,
    items: ItemFeatures,
    history_table: torch.Tensor,
    item_log_q: torch.Tensor,
    batch_users: torch.Tensor,
    batch_items: torch.Tensor,
    batch_weights: torch.Tensor,
    n_items: int,
    config: TrainingConfig,
    device: str,
) -> torch.Tensor:
    history = history_table[batch_users]  # [B, L]
    history = history.masked_fill(history == items.id_index[batch_items].unsqueeze(1), 0)  # leave the target out
    if config.history_dropout:
        history = history.masked_fill(torch.rand(history.shape, device=device) < config.history_dropout, 0)
    user_vectors = model.user_tower(
        **user_inputs(users, history_table, batch_users, device) | {"history": history}
    )  # [B, D]
    candidates, positive_column = torch.unique(batch_items, return_inverse=True)  # [C], [B]
    log_q = item_log_q[candidates] + math.log(len(batch_items))  # expected in-batch count of each candidate
    if config.uniform_negatives:
        uniform = torch.randint(0, n_items, (config.uniform_negatives,), device=device)
        candidates = torch.cat([candidates, uniform])
        log_q = torch.cat(
            [
                log_q,
                torch.full((config.uniform_negatives,), math.log(config.uniform_negatives / n_items), device=device),
            ]
        )
    item_vectors = model.item_tower(**item_inputs(items, candidates, device))  # [C, D]
    # a candidate equal to the row's positive but in another column (uniform draws) is an accidental hit
    accidental = candidates.unsqueeze(0) == batch_items.unsqueeze(1)  # [B, C]
    accidental[torch.arange(len(batch_items), device=device), positive_column] = False
    losses = sampled_softmax_loss(
        user_vectors, item_vectors, positive_column, log_q, config.temperature, config.logq_correction, accidental
    )  # [B]
    return (losses * batch_weights).sum() / batch_weights.sum()


def validation_recall(model: TwoTower, data: TrainingData, device: str, k: int) -> float:
    item_vectors = encode_item_features(model, data.items, device)  # [n_items, D]
    user_vectors = encode_user_features(model, data.users, data.train_history, device, data.validation_user_rows)
    return ranking_metrics(lambda rows: (user_vectors[rows] @ item_vectors.T).cpu().numpy(), data.validation, k)[
        f"recall_at_{k}"
    ]


def write_artifact(trained: TrainedTwoTower, directory, metrics: dict[str, float] | None = None):
    """Writes the serving artifact atomically (local) or file by file (object storage):
    safetensors weights and JSON configs, no pickle. Returns `directory`."""
    from rec_core.storage import atomic_directory

    with atomic_directory(directory) as staging:
        save_model(trained.model, str(staging / MODEL_WEIGHTS))
        (staging / MODEL_CONFIG).write_text(json.dumps(trained.model.config.to_dict(), indent=2))
        trained.preprocessing.save(staging / PREPROCESSING)
        (staging / METRICS).write_text(json.dumps(metrics or {}, indent=2))
        (staging / TRAINING_RECORD).write_text(
            json.dumps(
                {
                    "config": trained.config.to_dict(),
                    "history": trained.history,
                    "best_epoch": trained.best_epoch,
                    "train_seconds": trained.train_seconds,
                    "examples_seen": trained.examples_seen,
                },
                indent=2,
            )
        )
    return directory


def configure_torch_threads(threads: int | None = None) -> None:
    """Pins intra-op threads (default: all cores, at most the number of CPUs) for predictable CPU speed."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    torch.set_num_threads(threads or max(1, min(os.cpu_count() or 1, torch.get_num_threads())))
