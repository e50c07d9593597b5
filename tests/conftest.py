"""Shared fixtures: environment for offline, CPU-friendly runs and small datasets."""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "fixtures"
MOVIELENS_SMALL = REPO.parent / "shared" / "data" / "movielens-latest-small"


def cpu_resources(root) -> dict:
    """The resources a test materialization needs: artifacts and tables under `root`, models on the CPU."""
    from rec_assets.resources import ArtifactStore, DeviceResource, TableIOManager

    return {
        "artifacts": ArtifactStore(root=str(root)),
        "io_manager": TableIOManager(root=str(root)),
        "device": DeviceResource(device="cpu"),
    }


@pytest.fixture(scope="session")
def small_dataset():
    """A small synthetic dataset shared by tests that only read it."""
    from rec_core.generation.synthetic import GeneratorConfig, generate_dataset

    return generate_dataset(GeneratorConfig(n_users=300, n_items=800, n_interactions=15_000, seed=7))


@pytest.fixture(scope="session")
def tiny_dataset():
    """A dataset of a few dozen items, for tests that draw or encode every one of them."""
    from rec_core.generation.synthetic import GeneratorConfig, generate_dataset

    return generate_dataset(GeneratorConfig(n_users=12, n_items=24, n_interactions=60, seed=3))


def pytest_collection_modifyitems(config, items):
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)
