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


DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def resolve_device(name: str | torch.device | None = "auto") -> torch.device:
    """The ``torch.device`` that ``--device NAME`` means (train, chat, eval, pipeline).

    ``auto`` (or None): CUDA when available, then Apple's MPS, then the CPU. ``cpu``, ``cuda``
    (also ``cuda:N``) and ``mps`` are taken as asked, and raise ``ValueError`` in one line when the
    machine has no such device. MPS runs in fp32 (`autocast_dtype`) and is untested here.
    """
    if isinstance(name, torch.device):
        name = str(name)
    name = (name or "auto").strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    kind = name.split(":", 1)[0]
    if kind not in DEVICE_CHOICES:
        raise ValueError(f"unknown device {name!r}; choose one of {', '.join(DEVICE_CHOICES)}")
    if kind == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name}: no CUDA GPU is visible to PyTorch (--device auto or cpu)")
    if kind == "mps" and not _mps_available():
        raise ValueError(f"device {name}: Apple MPS is not available here (--device auto or cpu)")
    try:
        return torch.device(name)
    except RuntimeError as e:
        raise ValueError(f"device {name!r}: {e}") from None


def default_device() -> torch.device:
    """The device of the notebooks and of library calls that name none: ``$SPONGEBOB_DEVICE``
    (``auto``, ``cpu``, ``cuda``, ``mps``), else the CPU, so that committed notebook outputs stay
    CPU-calibrated even on a machine with a GPU."""
    return resolve_device(os.environ.get("SPONGEBOB_DEVICE") or "cpu")


def pick_device(preferred: str | None = None) -> torch.device:
    """`preferred` if given, else CUDA when available, else CPU (never MPS implicitly)."""
    if preferred:
        return torch.device(preferred)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """The autocast dtype that ``dtype="auto"`` trains in on ``device``: bf16 on CUDA GPUs that
    support it, none (fp32) elsewhere (the CPU, and MPS). It reads `spongebob.train.precision`,
    the one statement of the policy, so the two cannot drift apart.

    bf16 has fp32's exponent range, so unlike fp16 it needs no GradScaler (SEED.md defect 1).
    """
    from spongebob.train import precision  # spongebob.train imports this module

    return precision("auto", device)[0]
