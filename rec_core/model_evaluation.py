"""The stored model judged on the test split: the release gate, then the full comparison, one scoring pass.

`run_release_gate` scores the model under `<root>/two_tower_model` and popularity on the test
split; the model is released only if it is strictly better ("recommend the bestsellers" is the
bar). It keeps those scores under `<root>/two_tower_beats_popularity/`, stamped with the model's
version and a fingerprint of the data. `evaluate_stored_model` (the `model_evaluation` asset)
adds EASE, ALS and the oracle to the gate's scores when the stamp matches the model and data it
is given, and scores the model itself only when the gate has not seen them.
"""

from __future__ import annotations

import hashlib
import json
import logging

import pandas as pd

from rec_core import storage
from rec_core.data.bundle import DataBundle
from rec_core.data.paths import (
    GATE_SCORES,
    METRICS,
    MODEL_DIR,
    MODEL_EVALUATION_DIR,
    ORACLE_IDS,
    RELEASE_GATE_DIR,
    SYNTHETIC_TRUTH_DIR,
)
from rec_core.evaluation import compare_with_baselines, test_split_scores

log = logging.getLogger(__name__)


def gate_verdict(scores: dict[str, dict[str, float]], k: int = 10) -> dict[str, float]:
    """Test recall@k of the model and of popularity; `passed` = 1.0 when the model is strictly better."""
    model, popularity = scores["two_tower"][f"recall_at_{k}"], scores["popularity"][f"recall_at_{k}"]
    return {
        f"two_tower_recall_at_{k}": model,
        f"popularity_recall_at_{k}": popularity,
        "passed": float(model > popularity),
    }


def run_release_gate(root, data: DataBundle, k: int = 10) -> dict[str, float]:
    """The gate's verdict on the model under `root`; its scores are kept for `evaluate_stored_model`."""
    encoder, stamp = _load(root, data)
    scores = test_split_scores(encoder, data, k)
    document = {"stamp": stamp, "k": k, "scores": scores}
    storage.write_bytes(json.dumps(document, indent=2).encode(), storage.as_path(root) / RELEASE_GATE_DIR / GATE_SCORES)
    return gate_verdict(scores, k)


def evaluate_stored_model(root, data: DataBundle, k: int = 10, **comparison) -> dict[str, dict[str, float | str]]:
    """Every baseline against the model under `root` (see `compare_with_baselines`, which gets `comparison`),
    written to `<root>/model_evaluation/metrics.json`. The oracle joins when `<root>/synthetic_truth` describes `data`."""
    encoder, stamp = _load(root, data)
    scores = _gate_scores(root, stamp, k)
    if scores is None:
        log.info("the release gate has not scored this model on this data: scoring it here")
    results = compare_with_baselines(
        encoder, data, oracle=matching_oracle(root, data.users, data.items), k=k, test_scores=scores, **comparison
    )
    storage.write_bytes(json.dumps(results, indent=2).encode(), storage.as_path(root) / MODEL_EVALUATION_DIR / METRICS)
    return results


def matching_oracle(root, users: pd.DataFrame, items: pd.DataFrame):
    """The synthetic generator's oracle saved under `root` when it describes these users and items, else None."""
    directory = storage.as_path(root) / SYNTHETIC_TRUTH_DIR
    if not (directory / ORACLE_IDS).exists():
        return None
    from rec_core.generation.oracle import OracleScorer

    oracle = OracleScorer.load(directory)
    if set(map(str, oracle.item_ids)) != set(items["item_id"].astype(str)) or not set(
        users["user_id"].astype(str)
    ) <= set(map(str, oracle.user_ids)):
        log.info("%s does not describe the current data; evaluating without the oracle", directory)
        return None
    return oracle


def _load(root, data: DataBundle):
    """(the encoder of the model under `root`, the stamp naming that model and `data`)."""
    from rec_core.inference import TwoTowerEncoder
    from rec_core.release import model_version

    model_dir = storage.as_path(root) / MODEL_DIR
    return TwoTowerEncoder.load(model_dir), {"model_version": model_version(model_dir), "data": _fingerprint(data)}


def _gate_scores(root, stamp: dict, k: int) -> dict | None:
    path = storage.as_path(root) / RELEASE_GATE_DIR / GATE_SCORES
    if not path.exists():
        return None
    document = json.loads(path.read_text())
    return document["scores"] if document.get("stamp") == stamp and document.get("k") == k else None


def _fingerprint(data: DataBundle) -> str:
    """A digest of who is scored on what: the split interactions, the user ids and the item ids."""
    digest = hashlib.sha256()
    for frame in (
        data.interaction_splits[["interaction_id", "user_id", "item_id", "split"]],
        data.users[["user_id"]],
        data.items[["item_id"]],
    ):
        digest.update(pd.util.hash_pandas_object(frame.astype(str), index=False).to_numpy().tobytes())
    return digest.hexdigest()[:16]
