# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 06 · Pretraining: one training loop from a laptop CPU to many GPUs

# %%
#| default_exp train

from spongebob.checkpoint import CheckpointError, load_state_dict_checked, read_checkpoint

# %%
#| export
"""One training loop for pretraining, SFT and distillation.

Defined in 06_pretrain. ``train(model, loader, TrainConfig.preset("tiny"))`` runs AdamW (fused on
CUDA) with no weight decay on norms and embeddings, a linear warmup from 0 then a cosine to
``lr * min_lr_ratio``, gradient accumulation whose loss is normalised by the number of trained tokens
of the WHOLE optimizer step (all micro-batches, all DDP ranks), gradient clipping, bf16 autocast on
CUDA (fp16 with a GradScaler), optional ``torch.compile``, a tqdm bar (loss, lr, tokens/s, ETA, MFU
on CUDA), a JSONL metrics log, optional wandb/swanlab, periodic validation, and atomic checkpoints
that resume exactly (``spongebob.checkpoint``)::

    model = SpongeBob(ModelConfig.preset("tiny"))
    result = train(model, loader, TrainConfig.preset("tiny"), out_dir=run_folder)

A loader yields ``(x, y, w)`` batches forever: ``x``, ``y`` ``(B, T)`` int64 (``y`` already shifted,
``-100`` = not trained), ``w`` ``None`` or ``(B, T)`` float32 loss weights. ``iter(loader)`` continues
from the loader's position, and ``state_dict()`` / ``load_state_dict()`` save and restore that
position (the checkpoint stores rank 0's). Under ``torchrun`` each rank reads its own shard.
"""

import json
import math
import os
import time
from collections.abc import Callable, Iterable, Mapping
from contextlib import nullcontext
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.distributed as dist
from torch import Tensor, nn

from spongebob.model import IGNORE_INDEX, RMSNorm, flops_per_token

# %%
#| export
@dataclass
class TrainConfig:
    """How to train: optimiser, schedule, batch, precision, logging. Defined in 06_pretrain.

    The length of a run is ``max_steps`` optimizer steps, else ``max_minutes`` of wall time (the
    total step count is then estimated from the speed of the first ``probe_steps`` steps and fixed,
    so the cosine ends on time), else ``epochs`` passes over a loader that has a ``len``. One
    optimizer step sees ``batch_size * grad_accum * world_size`` sequences of ``seq_len`` tokens.
    ``dtype``: ``"auto"`` (bf16 autocast on CUDA, fp32 on CPU), ``"bf16"``, ``"fp16"`` (autocast +
    GradScaler) or ``"fp32"``. ``*_every = 0`` means only at the end.
    """

    lr: float = 3e-3
    min_lr_ratio: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = 0.1
    warmup_steps: int = 30
    max_steps: int | None = 900
    max_minutes: float | None = None
    epochs: float = 1.0
    probe_steps: int = 10
    batch_size: int = 16
    seq_len: int = 256
    grad_accum: int = 1
    clip: float = 1.0
    seed: int = 1337
    dtype: str = "auto"
    compile: bool = False
    log_every: int = 10
    eval_every: int = 0
    eval_batches: int = 8
    save_every: int = 0
    tracker: str = "none"
    run_name: str = "spongebob"

    def __post_init__(self) -> None:
        self.betas = tuple(self.betas)  # a list after a JSON or checkpoint round trip
        bad = [
            f"{k} must be >= 1"
            for k in ("batch_size", "seq_len", "grad_accum", "probe_steps")
            if getattr(self, k) < 1
        ]
        if self.dtype not in ("auto", "bf16", "fp16", "fp32"):
            bad.append(f"dtype must be auto, bf16, fp16 or fp32, got {self.dtype!r}")
        if self.tracker not in ("none", "wandb", "swanlab"):
            bad.append(f"tracker must be none, wandb or swanlab, got {self.tracker!r}")
        if self.max_steps is not None and self.max_steps < 1:
            bad.append(f"max_steps must be >= 1 or None, got {self.max_steps}")
        if not 0 <= self.min_lr_ratio <= 1 or self.lr <= 0 or self.warmup_steps < 0:
            bad.append("need lr > 0, warmup_steps >= 0 and 0 <= min_lr_ratio <= 1")
        if bad:
            raise ValueError("invalid TrainConfig: " + "; ".join(bad))

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> "TrainConfig":
        """A named recipe from ``TRAIN_PRESETS`` (``"tiny"``, ``"seed"``) with ``overrides``."""
        if name not in TRAIN_PRESETS:
            raise ValueError(
                f"unknown training preset {name!r}; choose one of {sorted(TRAIN_PRESETS)}"
            )
        return cls(**{**TRAIN_PRESETS[name], **overrides})

    def to_dict(self) -> dict[str, Any]:
        """Plain types only, so a ``weights_only`` checkpoint can hold it."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "TrainConfig":
        unknown = sorted(set(d) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"unknown TrainConfig field(s) {unknown}")
        return cls(**d)


TRAIN_PRESETS: dict[str, dict[str, Any]] = {
    # The course's CPU recipe (calibrated on a 2-core laptop: about 220 steps a minute).
    "tiny": {},
    # The original's recipe (SEED.md): lr 5e-4, batch 32 x accumulation 8, T=512, clip 1.0, seed
    # 1337, bf16 on CUDA; one epoch of the data when neither max_steps nor max_minutes is given.
    "seed": dict(
        lr=5e-4,
        batch_size=32,
        grad_accum=8,
        seq_len=512,
        warmup_steps=100,
        max_steps=None,
        log_every=20,
        eval_every=500,
        save_every=500,
    ),
}


# %%
#| export
def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW parameter groups: decay on the weight matrices, none on norms and embeddings.

    Defined in 06_pretrain. Norm gains are scales (decaying them towards 0 fights the
    normalisation) and the embedding rows of rare tokens get few gradients, so decay would shrink
    them towards zero between updates; the output head is tied to the embedding and follows it.
    A tied tensor appears once (``named_parameters`` skips duplicates).
    """
    exempt = set()
    for module in model.modules():
        if isinstance(module, (nn.Embedding, RMSNorm, nn.LayerNorm)):
            exempt.update(id(p) for p in module.parameters(recurse=False))
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if id(p) in exempt or p.ndim < 2 else decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW over ``param_groups``, fused into one kernel per step on CUDA. Defined in 06_pretrain."""
    on_cuda = next(model.parameters()).is_cuda
    return torch.optim.AdamW(
        param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=cfg.betas, fused=on_cuda or None
    )


# %%
#| export
@dataclass
class WarmupCosine:
    """Learning rate at optimizer step ``s`` (0-based). Defined in 06_pretrain.

    Linear warmup ``lr * s / warmup_steps`` (so step 0 runs at 0), then a cosine from ``lr`` down
    to ``lr * min_ratio`` at ``total_steps``, flat after. ``total_steps=None`` (a time budget not
    estimated yet) keeps ``lr`` after the warmup. ``state_dict`` makes it part of a checkpoint.
    """

    lr: float
    warmup_steps: int
    total_steps: int | None
    min_ratio: float = 0.1

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return self.lr * step / self.warmup_steps
        if self.total_steps is None:
            return self.lr
        span = max(1, self.total_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / span)
        low = self.lr * self.min_ratio
        return low + (self.lr - low) * 0.5 * (1 + math.cos(math.pi * progress))

    def state_dict(self) -> dict[str, Any]:
        return asdict(self)

    def load_state_dict(self, d: Mapping[str, Any]) -> None:
        for k, v in d.items():
            setattr(self, k, v)


# %%
#| export
def trained_tokens(targets: Tensor, weights: Tensor | None = None) -> Tensor:
    """The loss's denominator: ``sum(w)`` over positions whose target is not ``-100`` (``w = 1``
    without weights), as a float32 scalar. Defined in 06_pretrain."""
    w = (targets != IGNORE_INDEX).float()
    if weights is not None:
        w = w * weights.float()
    return w.sum()


def _distributed() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def accumulate_gradients(
    model: nn.Module,
    micro_batches: list[tuple[Tensor, Tensor, Tensor | None]],
    *,
    autocast: Callable[[], Any] = nullcontext,
    scaler: torch.amp.GradScaler | None = None,
) -> tuple[Tensor, Tensor]:
    """Backward over all micro-batches of one optimizer step: ``(loss, trained tokens N)``.

    Defined in 06_pretrain. Each micro-batch's mean loss is re-weighted by its share of the
    trained tokens of the whole step (all micro-batches, all DDP ranks: ``N`` is all-reduced
    first), so the summed gradient is that of ``sum(w * ce) / N``: the gradient of one big batch,
    however the masks fall. DDP averages gradients over ranks, hence the extra ``world_size``.
    Under DDP only the last micro-batch synchronises (``no_sync`` for the others). The returned
    loss is this rank's share of the step's mean loss (the mean itself on one process; an
    all-reduce sum gives the mean over ranks).
    """
    _, world = _distributed()
    device = next(model.parameters()).device
    counts = [trained_tokens(y, w) for _, y, w in micro_batches]
    total = torch.stack(counts).sum().to(device)
    if world > 1:
        dist.all_reduce(total)  # trained tokens of the step on every rank
    denom = total.clamp_min(1e-12)
    loss_sum = torch.zeros((), device=device)
    for k, (x, y, w) in enumerate(micro_batches):
        last = k == len(micro_batches) - 1
        sync = nullcontext() if last or not hasattr(model, "no_sync") else model.no_sync()
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        w = None if w is None else w.to(device, non_blocking=True)
        with sync:
            with autocast():
                loss = model(x, y, loss_weights=w).loss  # mean over this micro-batch's tokens
            share = counts[k].to(device) * world / denom
            scaled = loss * share
            (scaler.scale(scaled) if scaler is not None else scaled).backward()
        loss_sum += loss.detach() * counts[k].to(device)
    return loss_sum / denom, total


# %%
#| export
# Dense bf16 tensor-core peak of one GPU (FLOP/s), from the vendors' data sheets; matched as a
# substring of torch.cuda.get_device_name(). Longer names first (e.g. "H100 PCIe" before "H100").
PEAK_FLOPS: dict[str, float] = {
    "H200": 989e12,
    "GH200": 989e12,
    "H100 PCIe": 756e12,
    "H100": 989e12,
    "A100": 312e12,
    "L40S": 362e12,
    "L4": 121e12,
    "A10G": 70e12,
    "A10": 125e12,
    "RTX 4090": 165e12,
    "RTX 3090": 71e12,
}


def peak_flops(device: torch.device) -> float | None:
    """Peak bf16 FLOP/s of ``device`` from ``PEAK_FLOPS``, or None (CPU, unknown GPU)."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key in sorted(PEAK_FLOPS, key=len, reverse=True):
        if key in name:
            return PEAK_FLOPS[key]
    return None


def precision(cfg: TrainConfig, device: torch.device) -> tuple[torch.dtype | None, bool]:
    """``(autocast dtype or None, needs a GradScaler)`` for ``cfg.dtype`` on ``device``.

    ``auto`` is bf16 on CUDA GPUs that support it and fp32 elsewhere. bf16 keeps fp32's exponent
    range, so gradients do not underflow and no GradScaler is needed; fp16 needs one (SEED.md
    defect 1: the original ran fp16 under a "bf16" flag, with a scaler enabled for bf16).
    """
    amp = {"auto": None, "bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}[cfg.dtype]
    if cfg.dtype == "auto" and device.type == "cuda" and torch.cuda.is_bf16_supported():
        amp = torch.bfloat16
    return amp, amp == torch.float16


# %%
#| export
class _Tracker:
    """wandb / swanlab, imported only when asked for; a clear error when the package is missing."""

    def __init__(self, kind: str, project: str, config: dict, enabled: bool) -> None:
        self.run = None
        if kind == "none" or not enabled:
            return
        try:
            module = __import__(kind)
        except ImportError:
            raise ImportError(
                f"tracker={kind!r} needs the {kind} package: pip install {kind} (or tracker='none')"
            ) from None
        self.run = module.init(project=project, config=config)

    def log(self, record: dict[str, Any]) -> None:
        if self.run is not None:
            self.run.log({k: v for k, v in record.items() if k != "step"}, step=record["step"])

    def finish(self) -> None:
        if self.run is not None:
            self.run.finish()


@torch.no_grad()
def evaluate_loss(model: nn.Module, batches: Iterable, autocast: Callable[[], Any] = nullcontext):
    """Token-weighted mean loss over ``batches`` (all ranks together). Defined in 06_pretrain."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    total = torch.zeros(2, device=device)  # [sum of w * ce, sum of w]
    for x, y, w in batches:
        x, y = x.to(device), y.to(device)
        w = None if w is None else w.to(device)
        with autocast():
            loss = model(x, y, loss_weights=w).loss
        n = trained_tokens(y, w)
        total += torch.stack([loss.float() * n, n])
    if _distributed()[1] > 1:
        dist.all_reduce(total)
    model.train(was_training)
    return (total[0] / total[1].clamp_min(1e-12)).item()

# %%
#| export
class TrainResult(NamedTuple):
    """What ``train`` returns. Defined in 06_pretrain.

    ``history``: one record per log interval (``step``, ``loss``, ``lr``, ``grad_norm``,
    ``tokens``, ``tok_s``, ``elapsed``, and ``mfu`` on a known GPU); ``val_history``: ``step``,
    ``val_loss``; ``step``: optimizer steps done; ``checkpoint``: the last file written, or None.
    """

    history: list[dict[str, Any]]
    val_history: list[dict[str, Any]]
    step: int
    checkpoint: Path | None


def setup_distributed() -> tuple[int, int, torch.device]:
    """``(rank, world_size, device)``; joins the process group when started by ``torchrun``.

    Defined in 06_pretrain. ``torchrun --nproc_per_node=N`` sets ``WORLD_SIZE``, ``RANK`` and
    ``LOCAL_RANK``: each process drives GPU ``LOCAL_RANK`` over NCCL (gloo on CPU). A plain
    ``python`` run is rank 0 of 1 on CUDA if available, else the CPU.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1, torch.device("cuda" if torch.cuda.is_available() else "cpu")
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local)
        device, backend = torch.device("cuda", local), "nccl"
    else:
        device, backend = torch.device("cpu"), "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend)
    return dist.get_rank(), dist.get_world_size(), device


def _total_steps(cfg: TrainConfig, loader: Iterable) -> int | None:
    if cfg.max_steps is not None:
        return cfg.max_steps
    if cfg.max_minutes is not None:
        return None  # estimated from the first steps' speed
    try:
        n = len(loader)  # batches per epoch (of this rank)
    except TypeError:
        raise ValueError("the loader has no len(): give max_steps or max_minutes") from None
    return max(1, math.ceil(cfg.epochs * n / cfg.grad_accum))


# %%
#| export
def train(
    model: nn.Module,
    loader: Iterable,
    cfg: TrainConfig,
    *,
    val_loader: Iterable | None = None,
    out_dir: str | Path | None = None,
    resume: bool | str | Path = False,
    init: str | Path | None = None,
    extra: Mapping[str, Any] | None = None,
    progress: bool = True,
    on_log: Callable[[dict[str, Any]], Any] | None = None,
) -> TrainResult:
    """Train ``model`` (already on its device) on ``loader``'s batches. Defined in 06_pretrain.

    ``out_dir`` receives ``last.pt`` (every ``save_every`` steps and at the end, atomically) and
    ``metrics.jsonl``. ``resume=True`` continues from ``out_dir/last.pt`` (or a given path)
    exactly where it stopped; ``init`` loads another stage's weights strictly (new optimizer and
    schedule) and is ignored when resuming. ``extra`` adds plain entries to every checkpoint
    (e.g. the tokenizer fingerprint). Under ``torchrun`` (see ``setup_distributed``) the model is
    wrapped in DDP; rank 0 logs and saves.
    """
    from tqdm.auto import tqdm

    from spongebob.checkpoint import (
        load_checkpoint,
        resume_training,
        save_checkpoint,
        training_state,
    )

    rank, world = _distributed()
    device = next(model.parameters()).device
    out = Path(out_dir) if out_dir is not None else None
    ckpt = out / "last.pt" if out is not None else None
    amp, needs_scaler = precision(cfg, device)
    autocast = (lambda: torch.autocast(device.type, dtype=amp)) if amp is not None else nullcontext
    scaler = torch.amp.GradScaler(device.type, enabled=needs_scaler)
    optimizer = make_optimizer(model, cfg)
    schedule = WarmupCosine(cfg.lr, cfg.warmup_steps, _total_steps(cfg, loader), cfg.min_lr_ratio)
    step, tokens, elapsed = 0, 0, 0.0
    torch.manual_seed(cfg.seed + rank)
    if resume:
        path = ckpt if resume is True else Path(resume)
        if path is None or not path.exists():
            raise FileNotFoundError(f"resume: no checkpoint {path}; start without resume first")
        extras = resume_training(path, model, optimizer, schedule, scaler=scaler, loader=loader)
        step, tokens, elapsed = extras["step"], extras["tokens"], extras["elapsed"]
    elif init is not None:
        load_checkpoint(model, init)  # strict: names every missing, unexpected, mis-shaped key
    net = torch.compile(model) if cfg.compile else model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(
            net, device_ids=[device.index] if device.type == "cuda" else None
        )
    val_batches = list(_take(val_loader, cfg.eval_batches)) if val_loader is not None else []
    log = open(out / "metrics.jsonl", "a") if out is not None and rank == 0 else None
    tracker = _Tracker(cfg.tracker, cfg.run_name, cfg.to_dict(), enabled=rank == 0)
    peak = peak_flops(device)
    fpt = flops_per_token(model.config, cfg.seq_len)
    step_tokens = cfg.batch_size * cfg.seq_len * cfg.grad_accum * world
    history, val_history, saved = [], [], None
    bar = tqdm(total=schedule.total_steps, initial=step, disable=not progress or rank != 0)
    win_loss, win_steps, t_win = torch.zeros((), device=device), 0, time.perf_counter()
    t0, probe = time.perf_counter() - elapsed, None
    batches = iter(loader)
    net.train()

    def emit(record: dict[str, Any], store: list) -> None:
        store.append(record)
        if log is not None:
            log.write(json.dumps(record) + "\n")
            log.flush()
        tracker.log(record)
        if on_log is not None and rank == 0:
            on_log(record)

    def save() -> Path | None:
        if ckpt is None:
            return None
        if rank == 0:
            state = training_state(
                model,
                optimizer,
                schedule,
                step=step,
                data=loader.state_dict(),
                scaler=scaler,
                tokens=tokens,
                elapsed=time.perf_counter() - t0,
                train_config=cfg.to_dict(),
                **dict(extra or {}),
            )
            save_checkpoint(ckpt, state)
        if world > 1:
            dist.barrier()
        return ckpt

    def log_window(lr: float, norm: Tensor) -> None:
        nonlocal win_loss, win_steps, t_win
        if world > 1:
            dist.all_reduce(win_loss)  # each rank holds its share of the mean
        now = time.perf_counter()
        record = {
            "step": step,
            "loss": win_loss.item() / win_steps,
            "lr": lr,
            "grad_norm": float(norm),
            "tokens": tokens,
            "tok_s": step_tokens * win_steps / (now - t_win),
            "elapsed": now - t0,
        }
        if peak is not None:
            record["mfu"] = fpt * record["tok_s"] / (peak * world)
        emit(record, history)
        mfu = {"mfu": f"{record['mfu']:.1%}"} if peak is not None else {}
        bar.set_postfix(
            loss=f"{record['loss']:.3f}", lr=f"{lr:.2e}", tok_s=f"{record['tok_s']:.0f}", **mfu
        )
        win_loss, win_steps, t_win = torch.zeros((), device=device), 0, now

    def validate() -> None:
        if val_batches:
            emit({"step": step, "val_loss": evaluate_loss(net, val_batches, autocast)}, val_history)
            net.train()

    while True:
        if schedule.total_steps is not None and step >= schedule.total_steps:
            break
        if cfg.max_minutes is not None and _time_up(t0, cfg.max_minutes, world, device):
            break
        lr = schedule(step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        micro = [next(batches) for _ in range(cfg.grad_accum)]
        loss, _ = accumulate_gradients(net, micro, autocast=autocast, scaler=scaler)
        scaler.unscale_(optimizer)  # no-op when disabled (bf16, fp32)
        norm = nn.utils.clip_grad_norm_(model.parameters(), cfg.clip if cfg.clip > 0 else math.inf)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        step, tokens = step + 1, tokens + step_tokens
        win_loss += loss
        win_steps += 1
        bar.update(1)
        if schedule.total_steps is None:  # a time budget: fix the length after probe_steps
            probe = probe or (step, time.perf_counter())
            if step - probe[0] >= cfg.probe_steps:
                per_step = (time.perf_counter() - probe[1]) / (step - probe[0])
                left = cfg.max_minutes * 60 - (time.perf_counter() - t0)
                schedule.total_steps = _agree(step + max(1, int(left / per_step)), world, device)
                bar.total = schedule.total_steps
        if step % cfg.log_every == 0 or step == schedule.total_steps:
            log_window(lr, norm)
        if cfg.eval_every and step % cfg.eval_every == 0:
            validate()
        if cfg.save_every and step % cfg.save_every == 0:
            saved = save()
    if win_steps:
        log_window(lr, norm)  # a time budget ended between two log steps
    bar.close()
    if not (val_history and val_history[-1]["step"] == step):
        validate()
    if ckpt is not None and not (saved and cfg.save_every and step % cfg.save_every == 0):
        saved = save()
    tracker.finish()
    if log is not None:
        log.close()
    return TrainResult(history, val_history, step, saved)


def _take(loader: Iterable, n: int) -> Iterable:
    batches = iter(loader)
    return [next(batches) for _ in range(n)]


def _agree(value: int, world: int, device: torch.device) -> int:
    """Rank 0's ``value`` on every rank (ranks must agree on the run's length and its end)."""
    if world == 1:
        return value
    t = torch.tensor([value], device=device)
    dist.broadcast(t, 0)
    return int(t.item())


def _time_up(t0: float, minutes: float, world: int, device: torch.device) -> bool:
    return bool(_agree(int(time.perf_counter() - t0 >= minutes * 60), world, device))

# %%
#| export: checkpoint
TRAINING_FORMAT = "spongebob-training-1"  # the "format" entry of a resumable checkpoint


def rng_state() -> dict[str, Any]:
    """Every random generator a training step may touch, as tensors and plain types.

    Defined in 06_pretrain. Plain types keep the checkpoint loadable with ``weights_only=True``:
    NumPy's key array becomes an int64 tensor, Python's state a tuple of ints.
    """
    import random

    import numpy as np

    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "gauss": float(gauss),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what ``rng_state`` captured. Defined in 06_pretrain."""
    import random

    import numpy as np

    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    keys = n["keys"].numpy().astype(np.uint32)
    np.random.set_state((n["kind"], keys, n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# %%
#| export: checkpoint
def save_checkpoint(path: str | Path, state: Mapping[str, Any]) -> Path:
    """Write ``state`` with ``torch.save``, atomically. Defined in 06_pretrain.

    The bytes go to a temporary file in the same folder, which is flushed, fsynced and renamed
    over ``path`` (``spongebob.files.atomic_open``): a crash or a kill at any moment leaves either
    the old file or the new one, never half of one. ``state`` should hold only tensors and plain
    containers, so that ``read_checkpoint`` (``weights_only=True``) can load it.
    """
    from spongebob.files import atomic_open

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path, "wb") as fh:
        torch.save(dict(state), fh)
    return path


def training_state(
    model: nn.Module,
    optimizer,
    scheduler,
    *,
    step: int,
    data: Mapping | None = None,
    scaler=None,
    **extra: Any,
) -> dict[str, Any]:
    """Everything a run needs to continue exactly, as a checkpoint dict. Defined in 06_pretrain.

    ``model`` (the unwrapped module: no ``_orig_mod.``/``module.`` prefixes) and its ``config``
    (so ``load_model`` rebuilds it), optimizer, scheduler, GradScaler, the step, every RNG state
    and the data position; ``extra`` adds plain entries (train config, tokenizer fingerprint...).
    """
    config = getattr(model, "config", None)
    return {
        "format": TRAINING_FORMAT,
        "model": model.state_dict(),
        "config": config.to_dict() if config is not None else None,
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None and scaler.is_enabled() else None,
        "step": int(step),
        "rng": rng_state(),
        "data": dict(data) if data is not None else None,
        **extra,
    }


# %%
#| export: checkpoint
def resume_training(
    path: str | Path, model: nn.Module, optimizer, scheduler, *, scaler=None, loader=None
) -> dict[str, Any]:
    """Load a ``training_state`` file into live objects; return its other entries (``step``...).

    Defined in 06_pretrain. The weights load strictly (every mismatch named), the file is read
    with ``weights_only=True``; optimizer, scheduler, scaler, RNG states and the loader's position
    are restored, so the next step is the one the interrupted run would have taken.
    """
    state, extras = read_checkpoint(path)
    if extras.get("format") != TRAINING_FORMAT:
        raise CheckpointError(
            f"{path}: not a resumable training checkpoint (no optimizer state); "
            "to start a new run from its weights use init= (--init) instead of resume"
        )
    load_state_dict_checked(model, state, source=str(path))
    optimizer.load_state_dict(extras["optimizer"])
    scheduler.load_state_dict(extras["scheduler"])
    if scaler is not None and extras.get("scaler") is not None:
        scaler.load_state_dict(extras["scaler"])
    if loader is not None and extras.get("data") is not None:
        loader.load_state_dict(extras["data"])
    set_rng_state(extras["rng"])
    return extras
