"""Group `model`: the trained two-tower, its evaluation against baselines, and the release gate.

`two_tower_model` trains on the train split (validation drives early stopping and the search)
and writes the serving artifact (safetensors + JSON) under `<artifacts>/two_tower_model`. The
blocking check `two_tower_beats_popularity` scores that artifact on the test split; when the model
is not strictly better than recommending bestsellers the check fails and nothing downstream
(embeddings, index, recommendations) is materialized from it. `model_evaluation` reports the
full comparison: popularity, EASE, ALS and, for synthetic data, the generator's oracle, reusing
the gate's scores of the model (`rec_core.model_evaluation`). Each body is one library call.
"""

import dagster as dg
import pandas as pd

from rec_assets.gpu import GPU_ASSET_KWARGS
from rec_assets.metadata import png_markdown
from rec_assets.resources import ArtifactStore, DeviceResource
from rec_core.config_fields import config_from
from rec_core.data.bundle import DataBundle
from rec_core.evaluation import baseline_table
from rec_core.model_evaluation import evaluate_stored_model, run_release_gate
from rec_core.models import TwoTowerConfig
from rec_core.preprocessing import PreprocessingConfig
from rec_core.progress import Progress
from rec_core.training import TrainingConfig, configure_torch_threads
from rec_core.training_run import train_and_write
from rec_core.tuning import TuningConfig, trials_table

MODEL_VERSION = "1"

DATA_BUNDLE_INS = {name: dg.AssetIn(name) for name in DataBundle.table_names()}
"""The six tables a model is trained, gated and evaluated on; the assets receive them as `**tables`."""


class TwoTowerTrainingConfig(dg.Config):
    """Hyper-parameters of a training run. Every default is read from the library's dataclasses
    (`TrainingConfig`, `TwoTowerConfig`, `PreprocessingConfig`, `TuningConfig`), so the two cannot drift."""

    max_epochs: int = (
        TrainingConfig.max_epochs
    )  # upper bound; early stopping on validation recall@10 usually ends sooner
    batch_size: int = TrainingConfig.batch_size  # also the number of in-batch negatives
    learning_rate: float = TrainingConfig.learning_rate
    weight_decay: float = TrainingConfig.weight_decay
    temperature: float = TrainingConfig.temperature
    logq_correction: float = (
        TrainingConfig.logq_correction
    )  # 0 disables the popularity correction of in-batch negatives
    uniform_negatives: int = TrainingConfig.uniform_negatives  # extra uniformly drawn negatives per batch
    recency_weight: float | None = (
        TrainingConfig.recency_weight
    )  # None: automatic (recent examples count more on a time split)
    history_dropout: float = TrainingConfig.history_dropout
    patience: int = TrainingConfig.patience
    seed: int = TrainingConfig.seed
    processes: int = TrainingConfig.processes  # local training processes (DDP ranks); on GPUs one GPU per process
    embedding_dim: int = TwoTowerConfig.embedding_dim
    id_dim: int = TwoTowerConfig.id_dim
    hidden_layers: int = TwoTowerConfig.hidden_layers
    dropout: float = TwoTowerConfig.dropout
    use_item_id: bool = (
        TwoTowerConfig.use_item_id
    )  # False: content-only item tower (cold-start items ranked like warm ones)
    use_user_id: bool = TwoTowerConfig.use_user_id  # False: users are their features and history only
    history_position_weights: bool = TwoTowerConfig.history_position_weights
    max_history: int = PreprocessingConfig.max_history  # recent positive interactions summarised per user
    use_text: bool = True  # feed item and user text embeddings when present
    use_images: bool = True  # feed CLIP image embeddings when present (empty table = CLIP disabled)
    tuning_trials: int = TuningConfig.trials  # validation-split search trials, the first being this config (1 = none)
    tuning_timeout_s: float | None = TuningConfig.timeout_s  # no new trial starts after this (None = no limit)

    def training_config(self) -> TrainingConfig:
        values = dict(self)
        return config_from(
            TrainingConfig,
            values,
            model=config_from(TwoTowerConfig, values),
            preprocessing=config_from(PreprocessingConfig, values),
        )

    def tuning_config(self) -> TuningConfig:
        return TuningConfig(trials=self.tuning_trials, timeout_s=self.tuning_timeout_s, seed=self.seed)


def _training_plot(history: list[dict]) -> dg.MetadataValue:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    figure, (loss_axis, recall_axis) = plt.subplots(1, 2, figsize=(9, 3))
    loss_axis.plot(epochs, [h["train_loss"] for h in history], marker="o")
    loss_axis.set(title="training loss (sampled softmax)", xlabel="epoch")
    recall_axis.plot(epochs, [h["validation_recall_at_10"] for h in history], marker="o", color="tab:green")
    recall_axis.set(title="validation recall@10", xlabel="epoch")
    figure.tight_layout()
    value = png_markdown(figure, "loss and validation recall by epoch")
    plt.close(figure)
    return value


def _tuning_plot(trials: list[dict]) -> dg.MetadataValue:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 3))
    for state, marker in (("complete", "o"), ("pruned", "x")):
        shown = [t for t in trials if t["state"] == state]
        axis.scatter([t["trial"] for t in shown], [t["validation_recall"] for t in shown], marker=marker, label=state)
    best = [t for t in trials if t["best"]]
    axis.scatter(
        [t["trial"] for t in best],
        [t["validation_recall"] for t in best],
        s=160,
        facecolors="none",
        edgecolors="tab:red",
        label="chosen",
    )
    axis.set(title="search: validation recall@10 by trial", xlabel="trial (0 = configured defaults)")
    axis.legend()
    figure.tight_layout()
    value = png_markdown(figure, "validation recall@10 by search trial")
    plt.close(figure)
    return value


@dg.asset(
    group_name="model",
    code_version=MODEL_VERSION,
    ins=DATA_BUNDLE_INS,
    description="The trained two-tower: safetensors weights, model and preprocessing config as JSON, validation metrics.",
    **GPU_ASSET_KWARGS,
)
def two_tower_model(
    context: dg.AssetExecutionContext,
    config: TwoTowerTrainingConfig,
    artifacts: ArtifactStore,
    device: DeviceResource,
    **tables: pd.DataFrame,
) -> dg.MaterializeResult:
    configure_torch_threads()
    torch_device = device.torch_device()
    data = DataBundle(**tables).with_inputs(text=config.use_text, images=config.use_images)
    run = train_and_write(
        data,
        artifacts.resolved_root(),
        config.training_config(),
        config.tuning_config(),
        device=torch_device,
        progress=context.log.info,
    )
    return dg.MaterializeResult(
        metadata={
            **run.metrics,
            "device": torch_device,
            "path": dg.MetadataValue.path(str(run.model_dir)),
            "training_curve": _training_plot(run.search.trained.history),
            "tuning_trials_table": dg.MetadataValue.md(trials_table(run.search.trials)),
            "tuning_plot": _tuning_plot(run.search.trials),
            "config": dg.MetadataValue.json(run.search.config.to_dict()),
        }
    )


@dg.asset_check(
    asset=two_tower_model,
    blocking=True,
    additional_ins=DATA_BUNDLE_INS,
    description="Blocking release gate: the model's test recall@10 must be above popularity's.",
)
def two_tower_beats_popularity(
    artifacts: ArtifactStore,
    users: pd.DataFrame,
    items: pd.DataFrame,
    interaction_splits: pd.DataFrame,
    item_text_embeddings: pd.DataFrame,
    user_text_embeddings: pd.DataFrame,
    item_clip_embeddings: pd.DataFrame,
) -> dg.AssetCheckResult:
    configure_torch_threads()
    gate = run_release_gate(
        artifacts.resolved_root(),
        DataBundle(users, items, interaction_splits, item_text_embeddings, user_text_embeddings, item_clip_embeddings),
    )
    return dg.AssetCheckResult(
        passed=bool(gate["passed"]),
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={
            "two_tower_recall_at_10": gate["two_tower_recall_at_10"],
            "popularity_recall_at_10": gate["popularity_recall_at_10"],
        },
    )


@dg.asset(
    group_name="model",
    code_version=MODEL_VERSION,
    ins=DATA_BUNDLE_INS,
    deps=[two_tower_model],
    description="Test-split recall@10, NDCG@10 and coverage of the two-tower against popularity, EASE, tuned ALS and "
    "(synthetic) the oracle.",
)
def model_evaluation(
    context: dg.AssetExecutionContext, artifacts: ArtifactStore, **tables: pd.DataFrame
) -> dg.MaterializeResult:
    configure_torch_threads()
    results = evaluate_stored_model(
        artifacts.resolved_root(), DataBundle(**tables), progress=Progress("model_evaluation", context.log.info)
    )
    context.log.info("test recall@10: " + ", ".join(f"{name} {m['recall_at_10']:.4f}" for name, m in results.items()))
    flat = {
        f"{model}_{metric}": float(value)
        for model, values in results.items()
        for metric, value in values.items()
        if metric != "evaluated_users" and isinstance(value, (int, float))
    }  # reasons (text) stay in metrics.json
    return dg.MaterializeResult(
        metadata={
            **flat,
            "evaluated_users": float(results["two_tower"]["evaluated_users"]),
            "baselines": dg.MetadataValue.md(baseline_table(results)),
        }
    )
