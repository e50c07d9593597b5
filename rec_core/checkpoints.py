"""Per-epoch training checkpoints: an interrupted run resumes from its last finished epoch.

Weights and optimizer state in safetensors, the loop's state in JSON (no pickle), all written as
one directory swap. A checkpoint names the run it belongs to (`run_fingerprint`), so a changed
configuration or data starts afresh instead of resuming someone else's run.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors.torch import load_file, load_model, save_file, save_model

from rec_core.data.paths import MODEL_WEIGHTS
from rec_core.models import TwoTower

if TYPE_CHECKING:
    from rec_core.training import TrainingConfig, TrainingData


class TrainingCheckpoint:
    """Per-epoch training state in safetensors + JSON, so an interrupted run resumes where it stopped."""

    def __init__(self, directory: str | Path, fingerprint: str):
        self.directory = Path(directory)
        self.fingerprint = fingerprint

    def save(self, model: TwoTower, best: TwoTower, optimizer: torch.optim.Optimizer, state: dict) -> None:
        from rec_core.storage import atomic_directory

        with atomic_directory(self.directory) as staging:
            save_model(model, str(staging / MODEL_WEIGHTS))
            save_model(best, str(staging / "best.safetensors"))
            opt = optimizer.state_dict()
            tensors = {f"{pid}.{name}": value for pid, s in opt["state"].items() for name, value in s.items()}
            save_file({k: v.contiguous() for k, v in tensors.items()}, str(staging / "optimizer.safetensors"))
            groups = opt["param_groups"]
            (staging / "state.json").write_text(
                json.dumps({**state, "fingerprint": self.fingerprint, "param_groups": groups})
            )

    def load(self, model: TwoTower, best: TwoTower, optimizer: torch.optim.Optimizer) -> dict | None:
        state_file = self.directory / "state.json"
        if not state_file.is_file():
            return None
        state = json.loads(state_file.read_text())
        if state.get("fingerprint") != self.fingerprint:
            return None  # a checkpoint of a different run: start afresh (it is overwritten after epoch 1)
        load_model(model, str(self.directory / MODEL_WEIGHTS))
        load_model(best, str(self.directory / "best.safetensors"))
        tensors = load_file(str(self.directory / "optimizer.safetensors"))
        opt_state: dict[int, dict] = {}
        for key, value in tensors.items():
            pid, name = key.split(".", 1)
            opt_state.setdefault(int(pid), {})[name] = value
        optimizer.load_state_dict({"state": opt_state, "param_groups": state.pop("param_groups")})
        return state


def run_fingerprint(config: TrainingConfig, data: TrainingData) -> str:
    """Names the run a checkpoint belongs to: its configuration and the shape of its examples."""
    payload = json.dumps(
        {
            "config": config.to_dict(),
            "examples": int(data.example_items.numel()),
            "items": len(data.items.ids),
            "users": len(data.users.ids),
            "item_sum": int(data.example_items.sum()),
            "user_sum": int(data.example_users.sum()),
        },
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]
