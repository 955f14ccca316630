# Hand-written module (not generated from a notebook).
"""Run-time policy shared by every chapter: seeds, device and dtype, and where artifacts live.

Artifacts (generated data, tokenizers, checkpoints) live outside the repository, in
``$SPONGEBOB_HOME`` (default ``~/.cache/spongebob``), so that notebooks never print or commit local paths.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import torch


def seed_everything(seed: int = 1337) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) so that a run is reproducible on one machine."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


def artifacts_dir(*parts: str) -> Path:
    """Folder for generated files, ``$SPONGEBOB_HOME/<parts...>``, created if missing."""
    base = Path(os.environ.get("SPONGEBOB_HOME", Path.home() / ".cache" / "spongebob"))
    path = base.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def pick_device(preferred: str | None = None) -> torch.device:
    """`preferred` if given, else CUDA when available, else CPU (never MPS implicitly)."""
    if preferred:
        return torch.device(preferred)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """bf16 autocast on CUDA GPUs that support it, none (fp32) elsewhere.

    bf16 has fp32's exponent range, so unlike fp16 it needs no GradScaler (SEED.md defect 1).
    """
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None
