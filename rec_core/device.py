"""Device selection shared by training, encoders and image generation."""

from __future__ import annotations


def resolve_device(device: str = "auto") -> str:
    """Maps `auto` to `cuda` when a CUDA device is present, else `cpu`; validates explicit names."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        return device
    if device == "cuda" or device.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise RuntimeError(f"device '{device}' was requested but no CUDA device is available")
        return device
    raise ValueError(f"unknown device '{device}': use auto, cpu, cuda or cuda:N")
