"""Where to train: one helper shared by every stage (importing it costs only torch)."""

from __future__ import annotations

import torch


def pick_device(prefer: str | None = None) -> torch.device:
    """The device to train / decode on.

    ``prefer=None``: CUDA if available (so ``CUDA_VISIBLE_DEVICES`` is honoured), else CPU.
    ``prefer="cpu"`` forces the CPU; any other string (``"cuda"``, ``"cuda:1"``) is used as given
    and must be available.
    """
    if prefer is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(prefer)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {prefer!r} requested but CUDA is not available")
    return device
