"""Data-parallel training of the two-tower over several processes (torch.distributed DDP).

Why: one process trains on one machine's cores or one GPU; past that, the same training loop runs
as N ranks (processes on one machine, or one pod per rank on Kubernetes), each on its share of
every epoch, gradients averaged across ranks by DistributedDataParallel after each step.

How the single-process loop (`rec_core.training.train_two_tower`) becomes distributed: it asks
`Ranks.current()` who it is. Without an initialized process group that is rank 0 of 1, and every
hook below is the identity, so single-process results stay bit for bit what they were. Inside a
process group each rank
- takes a DistributedSampler-like share of the epoch's permutation: the permutation (same seed on
  every rank) padded by wrapping to a multiple of the world size, rank r taking positions
  r, r+W, r+2W, ...; so every rank runs the same number of steps;
- steps with batches of ceil(batch_size / W) examples, so the ranks' batches of one step together
  are the single-process batch of that step and an epoch has the same number of optimizer steps.
  In-batch negatives are the rank's own batch (batch_size / W of them; gathering item vectors
  across ranks would restore all of them, at the cost of an all-gather per step);
- draws dropout and sampled negatives from its own seed, so ranks do not mask the same positions;
- computes the loss through a DDP wrapper (gradients all-reduced in the backward pass). Every
  parameter of the model takes part in every step's loss, including the item-id and category
  tables the towers share (DDP sees each shared parameter once), so `find_unused_parameters`
  stays off; a parameter left out of a step makes DDP raise at the next step rather than hang;
- leaves validation to rank 0, which broadcasts the recall: early stopping and the best epoch are
  decided once, and all ranks stop together. Only rank 0 writes checkpoints; all ranks read them.

Two ways to start ranks:
- `train_distributed(data, config, processes=N)`: spawns N local workers (gloo on CPU, nccl on
  GPUs, one GPU per rank) that rendezvous through a file store in a private temporary folder (no
  port to collide). Rank 0 hands its model back as safetensors and JSON; every rank's weights are
  compared, so a DDP that let ranks drift fails loudly.
- `torchrun --nproc-per-node N -m rec_core.distributed --root ROOT`: each rank reads the pipeline's
  tables from an artifact root (local or object storage), trains, and rank 0 writes the serving
  artifact. This is what runs in one pod per rank on Kubernetes (deploy/pytorchjob-two-tower.yaml).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import queue
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.distributed as dist

if TYPE_CHECKING:
    from rec_core.training import TrainedTwoTower, TrainingConfig, TrainingData

RESULT = "result.json"  # rank 0's training history and counters, beside the rank weight files


def rank_weights(directory: str | os.PathLike, rank: int) -> Path:
    """Where rank `rank` of a `run_ranks` call leaves its best model's weights."""
    return Path(directory) / f"rank-{rank}.safetensors"


@dataclass(frozen=True)
class Ranks:
    """Which of how many training processes this one is, and the hooks that make one loop data-parallel."""

    rank: int = 0
    world_size: int = 1

    @classmethod
    def current(cls) -> Ranks:
        """This process's place in the initialized process group, or rank 0 of 1 without one."""
        if dist.is_available() and dist.is_initialized():
            return cls(dist.get_rank(), dist.get_world_size())
        return cls()

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def epoch_share(self, order: torch.Tensor) -> torch.Tensor:
        """This rank's examples of an epoch's permutation `order` [N], as DistributedSampler splits it."""
        if self.world_size == 1:
            return order
        padded = math.ceil(len(order) / self.world_size) * self.world_size
        wrapped = order[torch.arange(padded, device=order.device) % len(order)]  # the first examples again
        return wrapped[self.rank :: self.world_size]

    def batch_size(self, batch_size: int) -> int:
        """Examples per rank and step: together the ranks' batches make one configured batch."""
        return math.ceil(batch_size / self.world_size)

    def seed(self, seed: int) -> int:
        """A per-rank seed for random draws inside a step (rank 0 keeps `seed`)."""
        return seed + (self.rank << 32)

    def data_parallel(self, model: torch.nn.Module, loss: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
        """`loss(model, ...)` itself in one process; in a group, the same call run through DDP."""
        if self.world_size == 1:
            return loss
        parameters = next(model.parameters())
        # the buffers (each id's item content for history summaries) are set alike on every rank before training
        # and never change, so they are not re-sent every step
        ddp = torch.nn.parallel.DistributedDataParallel(
            _LossModule(model, loss),
            device_ids=[parameters.device.index] if parameters.is_cuda else None,
            broadcast_buffers=False,
        )

        def step(called_with: torch.nn.Module, *args, **kwargs) -> torch.Tensor:
            if called_with is not model:
                raise ValueError("data_parallel: the loss was called with a model other than the one wrapped")
            return ddp(*args, **kwargs)

        return step

    def from_main(self, compute: Callable[[], float]) -> float:
        """`compute()` on rank 0, its value on every rank (validation runs once, decisions agree)."""
        if self.world_size == 1:
            return compute()
        backend_device = "cuda" if dist.get_backend() == "nccl" else "cpu"
        value = torch.tensor([compute() if self.is_main else 0.0], dtype=torch.float64, device=backend_device)
        dist.broadcast(value, src=0)
        return float(value.item())


class _LossModule(torch.nn.Module):
    """A module whose forward is `loss(model, ...)`: DDP synchronizes gradients of what runs in forward."""

    def __init__(self, model: torch.nn.Module, loss: Callable[..., torch.Tensor]):
        super().__init__()
        self.model = model
        self.loss = loss

    def forward(self, *args, **kwargs) -> torch.Tensor:
        return self.loss(self.model, *args, **kwargs)


def _backend(device: str) -> str:
    return "nccl" if device.startswith("cuda") else "gloo"


def _rank_device(device: str, local_rank: int) -> str:
    """One GPU per rank on a machine (cuda:local_rank); CPU ranks share the CPU."""
    if not device.startswith("cuda"):
        return device
    return f"cuda:{local_rank % torch.cuda.device_count()}"


def _share_threads(processes: int) -> None:
    """Splits the cores between the ranks on one machine instead of each rank claiming all of them."""
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // processes))


def _worker(
    rank: int,
    processes: int,
    store_file: str,
    data: TrainingData,
    config: TrainingConfig,
    device: str,
    checkpoint_dir: str | None,
    directory: str,
    progress: bool,
    epochs,
    report_batches: bool,
) -> None:
    from safetensors.torch import save_model

    from rec_core.training import train_two_tower

    _share_threads(processes)
    rank_device = _rank_device(device, rank)
    if rank_device.startswith("cuda"):
        torch.cuda.set_device(rank_device)
    store = dist.FileStore(store_file, processes)
    dist.init_process_group(_backend(device), store=store, rank=rank, world_size=processes)
    try:
        trained = train_two_tower(
            data,
            config,
            device=rank_device,
            checkpoint_dir=checkpoint_dir,
            progress=progress and rank == 0,
            on_epoch=epochs.put if rank == 0 else None,
            on_batch=(lambda done, total: epochs.put((done, total))) if rank == 0 and report_batches else None,
        )
        save_model(trained.model, str(rank_weights(directory, rank)))
        if rank == 0:
            (Path(directory) / RESULT).write_text(
                json.dumps(
                    {
                        "history": trained.history,
                        "best_epoch": trained.best_epoch,
                        "train_seconds": trained.train_seconds,
                        "examples_seen": trained.examples_seen,
                        "resumed_from_epoch": trained.resumed_from_epoch,
                    }
                )
            )
    finally:
        dist.destroy_process_group()


def run_ranks(
    data: TrainingData,
    config: TrainingConfig,
    processes: int,
    directory: str | os.PathLike,
    device: str = "cpu",
    checkpoint_dir: str | os.PathLike | None = None,
    progress: bool = False,
    on_epoch: Callable[[dict], None] | None = None,
    on_batch: Callable[[int, int], None] | None = None,
) -> None:
    """Trains with `processes` local ranks; each leaves its best weights in `directory` (rank 0 also `RESULT`).

    `on_epoch` is called in this process with rank 0's history rows as they finish; an exception it
    raises stops every rank and propagates, as it would stop `train_two_tower`. `on_batch` gets rank
    0's (batches done, batches in the epoch), polled with the epochs.
    """
    if processes < 1:
        raise ValueError(f"processes must be at least 1, got {processes}")
    if device.startswith("cuda") and processes > torch.cuda.device_count():
        raise ValueError(
            f"{processes} processes on '{device}' need one GPU each; {torch.cuda.device_count()} are visible"
        )
    context = torch.multiprocessing.get_context("spawn")
    epochs = context.Queue()
    with tempfile.TemporaryDirectory(prefix="rec-ranks-") as rendezvous:
        ranks = torch.multiprocessing.start_processes(
            _worker,
            args=(
                processes,
                str(Path(rendezvous) / "store"),
                data,
                config,
                device,
                None if checkpoint_dir is None else str(checkpoint_dir),
                str(directory),
                progress,
                epochs,
                on_batch is not None,
            ),
            nprocs=processes,
            join=False,
            start_method="spawn",
        )
        try:
            finished = False
            while not finished:
                finished = ranks.join(timeout=0.2)
                _forward_epochs(epochs, on_epoch, on_batch)
        except BaseException:
            for process in ranks.processes:
                if process.is_alive():
                    process.terminate()
            for process in ranks.processes:
                process.join()
            raise


def _forward_epochs(
    epochs, on_epoch: Callable[[dict], None] | None, on_batch: Callable[[int, int], None] | None
) -> None:
    """Hands rank 0's messages to the callbacks in order: a history row (dict) or (batches done, batches in epoch)."""
    while True:
        try:
            message = epochs.get_nowait()
        except queue.Empty:
            return
        if isinstance(message, tuple):
            if on_batch is not None:
                on_batch(*message)
        elif on_epoch is not None:
            on_epoch(message)


def collect_ranks(
    directory: str | os.PathLike, data: TrainingData, config: TrainingConfig, processes: int
) -> TrainedTwoTower:
    """Rank 0's result of `run_ranks` as a `TrainedTwoTower`, after checking every rank ended with the same weights."""
    from safetensors.torch import load_file, load_model

    from rec_core.training import TrainedTwoTower, build_model

    reference = load_file(str(rank_weights(directory, 0)))
    for rank in range(1, processes):
        weights = load_file(str(rank_weights(directory, rank)))
        drifted = sorted(name for name in reference if not torch.equal(reference[name], weights[name]))
        if drifted:
            raise RuntimeError(
                f"rank {rank} ended with weights unlike rank 0's in {len(drifted)} tensor(s), "
                f"first {drifted[0]}: gradients were not synchronized"
            )
    with torch.random.fork_rng():  # building the model draws initial weights; leave the caller's generator alone
        model = build_model(data, config)
    load_model(model, str(rank_weights(directory, 0)))
    result = json.loads((Path(directory) / RESULT).read_text())
    return TrainedTwoTower(
        model.eval(),
        data.preprocessing,
        config,
        result["history"],
        result["best_epoch"],
        result["train_seconds"],
        result["examples_seen"],
        result["resumed_from_epoch"],
    )


def train_distributed(
    data: TrainingData,
    config: TrainingConfig | None = None,
    processes: int = 2,
    device: str = "cpu",
    checkpoint_dir: str | os.PathLike | None = None,
    progress: bool = False,
    on_epoch: Callable[[dict], None] | None = None,
    on_batch: Callable[[int, int], None] | None = None,
) -> TrainedTwoTower:
    """`train_two_tower` over `processes` local ranks (DDP); returns rank 0's best model, on the CPU.

    One process is `train_two_tower` itself. `device="cuda"` puts one rank on each visible GPU.
    """
    from rec_core.training import TrainingConfig, train_two_tower

    config = config or TrainingConfig()
    if processes == 1:
        return train_two_tower(
            data,
            config,
            device=device,
            checkpoint_dir=checkpoint_dir,
            progress=progress,
            on_epoch=on_epoch,
            on_batch=on_batch,
        )
    with tempfile.TemporaryDirectory(prefix="rec-ddp-") as directory:
        run_ranks(data, config, processes, directory, device, checkpoint_dir, progress, on_epoch, on_batch)
        return collect_ranks(directory, data, config, processes)


def training_config_from_json(path: str | os.PathLike) -> TrainingConfig:
    """A `TrainingConfig` from JSON shaped like `TrainingConfig.to_dict()` (missing keys keep their defaults)."""
    from rec_core.models import TwoTowerConfig
    from rec_core.preprocessing import PreprocessingConfig
    from rec_core.training import TrainingConfig

    values = json.loads(Path(path).read_text())
    try:
        return TrainingConfig(
            **{
                **values,
                "model": TwoTowerConfig(**values.get("model", {})),
                "preprocessing": PreprocessingConfig(**values.get("preprocessing", {})),
            }
        )
    except TypeError as error:  # an unknown key
        raise ValueError(f"{path}: not a training config: {error}") from None


def launch_parser() -> argparse.ArgumentParser:
    """The command line of one rank (what torchrun, or a PyTorchJob pod, passes to `python -m rec_core.distributed`)."""
    from rec_core.data.paths import MODEL_DIR
    from rec_core.tuning import TuningConfig

    parser = argparse.ArgumentParser(
        prog="python -m rec_core.distributed",
        description="One training rank: reads the tables under --root, trains, rank 0 writes the artifact.",
    )
    parser.add_argument(
        "--root",
        required=True,
        help="artifact root holding the tables of `DataBundle` as "
        "<name>.parquet (users, items, interaction_splits required)",
    )
    parser.add_argument("--config", help="TrainingConfig as JSON (TrainingConfig.to_dict() layout); default: defaults")
    parser.add_argument("--trials", type=int, default=TuningConfig.trials, help="validation search trials (1 = none)")
    parser.add_argument("--output", help=f"where rank 0 writes the serving artifact (default: <root>/{MODEL_DIR})")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (one GPU per rank: cuda:LOCAL_RANK)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """One rank of a torchrun or PyTorchJob launch: read the tables under --root, train (and search), rank 0
    writes the artifact.

    Every rank runs the same seeded search and sees the same broadcast validation recalls, so all
    take the same decisions; the search has no time limit here, as a clock would differ between ranks.
    """
    from rec_core import storage
    from rec_core.data.bundle import DataBundle
    from rec_core.data.paths import MODEL_DIR
    from rec_core.training import TrainingConfig, prepare_training_data, write_artifact
    from rec_core.training_run import run_metrics
    from rec_core.tuning import TuningConfig, tune_two_tower

    parser = launch_parser()
    args = parser.parse_args(argv)
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        parser.error("RANK and WORLD_SIZE are not set: start this module with torchrun (or a PyTorchJob)")
    device = _rank_device(args.device, int(os.environ.get("LOCAL_RANK", "0")))
    if device.startswith("cuda"):
        torch.cuda.set_device(device)
    dist.init_process_group(_backend(device))
    try:
        config = training_config_from_json(args.config) if args.config else TrainingConfig()
        required = ("users", "items", "interaction_splits")
        tables = DataBundle(
            **{
                name: storage.read_asset_table(args.root, name, required=name in required)
                for name in DataBundle.table_names()
            }
        )
        data = prepare_training_data(
            tables.users, tables.items, tables.interaction_splits, **tables.embeddings(), config=config
        )
        ranks = Ranks.current()
        say = print if ranks.is_main else (lambda line: None)
        search = tune_two_tower(
            data, config, TuningConfig(trials=args.trials, timeout_s=None, seed=config.seed), device=device, log=say
        )
        if ranks.is_main:
            metrics = run_metrics(search, data) | {"processes": float(ranks.world_size)}
            output = args.output or storage.as_path(args.root) / MODEL_DIR
            write_artifact(search.trained, output, metrics)
            say(
                f"rank 0 of {ranks.world_size}: validation recall@10 {metrics['validation_recall_at_10']:.4f}, "
                f"artifact at {output}"
            )
    finally:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
