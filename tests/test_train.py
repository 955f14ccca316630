"""Tests of spongebob.train and the saving half of spongebob.checkpoint: parameter groups, the
schedule, token-normalised gradient accumulation (one process and DDP), exact resume after a real
SIGKILL, atomic saves under SIGKILL, strict --init, and the metrics log."""

import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from spongebob.checkpoint import (
    CheckpointError,
    read_checkpoint,
    resume_training,
    save_checkpoint,
    training_state,
)
from spongebob.config import ModelConfig
from spongebob.model import SpongeBob, lm_loss
from spongebob.train import (
    TrainConfig,
    WarmupCosine,
    accumulate_gradients,
    make_optimizer,
    param_groups,
    precision,
    train,
    trained_tokens,
)

TINY = ModelConfig(dim=32, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=64, max_seq_len=32)
HERE = Path(__file__).resolve().parent


class PackedLoader:
    """The loader protocol of spongebob.train over an in-memory token stream (test stand-in).

    Windows of ``T + 1`` tokens at multiples of ``T``, visited in an order reshuffled each epoch
    from ``seed``; global batch ``g`` goes to rank ``g % world_size``. ``masked=True`` hides a
    prefix of each target row (uneven masks, as SFT has); ``weighted=True`` adds loss weights.
    """

    def __init__(
        self,
        tokens,
        batch_size,
        seq_len,
        seed=0,
        rank=0,
        world_size=1,
        masked=False,
        weighted=False,
    ):
        self.tokens, self.B, self.T, self.seed = tokens, batch_size, seq_len, seed
        self.rank, self.world = rank, world_size
        self.masked, self.weighted = masked, weighted
        self.n_windows = (len(tokens) - 1) // seq_len
        self.epoch, self.cursor = 0, 0  # cursor: global batches consumed in this epoch

    def __len__(self):
        return self.n_windows // (self.B * self.world)

    def state_dict(self):
        return {"epoch": self.epoch, "cursor": self.cursor}

    def load_state_dict(self, d):
        self.epoch, self.cursor = d["epoch"], d["cursor"]

    def _batch(self, g):
        order = torch.randperm(
            self.n_windows, generator=torch.Generator().manual_seed(self.seed + self.epoch)
        )
        rows = order[g * self.B : (g + 1) * self.B]
        win = torch.stack(
            [self.tokens[i * self.T : i * self.T + self.T + 1] for i in rows.tolist()]
        )
        x, y = win[:, :-1].long(), win[:, 1:].long().clone()
        w = None
        if self.masked:
            for b, i in enumerate(rows.tolist()):
                y[b, : (i * 7) % (self.T - 1)] = -100  # uneven: 0 .. T-2 hidden targets
        if self.weighted:
            w = 1.0 + (x % 3 == 0).float() * 9.0  # some positions weigh 10, as distillation tags
        return x, y, w

    def __iter__(self):
        while True:
            if self.cursor >= len(self):  # epoch done: the next one is reshuffled
                self.epoch, self.cursor = self.epoch + 1, 0
            g = self.cursor * self.world + self.rank
            self.cursor += 1
            yield self._batch(g)


def make_tokens(n=4000, seed=0):
    g = torch.Generator().manual_seed(seed)
    base = torch.randint(0, 64, (n,), generator=g)
    base[1::2] = (base[0::2][: len(base[1::2])] * 3 + 1) % 64  # learnable: odd tokens follow even
    return base


def fresh_model(seed=0):
    torch.manual_seed(seed)
    return SpongeBob(TINY)


def small_cfg(**kw):
    base = dict(lr=3e-3, warmup_steps=2, max_steps=8, batch_size=4, seq_len=16, log_every=1)
    return TrainConfig(**{**base, **kw})


def params(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# --- optimiser and schedule -------------------------------------------------------------------


def test_param_groups_exempt_norms_and_tied_embedding():
    model = fresh_model()
    decay, no_decay = param_groups(model, 0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    exempt = sorted(names[id(p)] for p in no_decay["params"])
    assert exempt == sorted(
        n for n in names.values() if "norm" in n or n == "tok_embeddings.weight"
    )
    assert all(p.ndim == 2 for p in decay["params"])
    # every parameter exactly once; the tied head is the embedding, not a second tensor
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))
    assert model.output.weight is model.tok_embeddings.weight


def test_warmup_cosine_values():
    s = WarmupCosine(lr=1.0, warmup_steps=10, total_steps=110, min_ratio=0.1)
    assert s(0) == 0.0 and s(5) == pytest.approx(0.5) and s(10) == pytest.approx(1.0)
    assert s(60) == pytest.approx(0.55)  # half way down the cosine: (1 + 0.1) / 2
    assert s(110) == pytest.approx(0.1) and s(500) == pytest.approx(0.1)
    for step in (20, 37, 99):  # an independent formula
        p = (step - 10) / 100
        assert s(step) == pytest.approx(0.1 + 0.9 * (1 + math.cos(math.pi * p)) / 2)
    lrs = [s(i) for i in range(10, 111)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))
    assert WarmupCosine(1.0, 10, None)(50) == 1.0  # time budget not estimated yet: flat at lr


def test_precision_policy_on_cpu():
    cpu = torch.device("cpu")
    assert precision(TrainConfig(dtype="auto"), cpu) == (None, False)
    assert precision(TrainConfig(dtype="bf16"), cpu) == (torch.bfloat16, False)
    assert precision(TrainConfig(dtype="fp16"), cpu) == (
        torch.float16,
        True,
    )  # scaler for fp16 only


def test_config_validation_and_presets():
    with pytest.raises(ValueError, match="dtype"):
        TrainConfig(dtype="float8")
    with pytest.raises(ValueError, match="unknown training preset"):
        TrainConfig.preset("huge")
    seed = TrainConfig.preset("seed")
    assert (seed.lr, seed.batch_size, seed.grad_accum, seed.clip, seed.seed, seed.seq_len) == (
        5e-4,
        32,
        8,
        1.0,
        1337,
        512,
    )
    assert TrainConfig.from_dict(seed.to_dict()) == seed


# --- gradient accumulation ----------------------------------------------------------------------


def _grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("weighted", [False, True])
def test_accumulation_4x1_equals_one_batch_of_4_with_uneven_masks(weighted):
    x, y, w = next(iter(PackedLoader(make_tokens(), 4, 16, masked=True, weighted=weighted)))
    counts = [int((y[i] != -100).sum()) for i in range(4)]
    assert len(set(counts)) > 1  # the masks really are uneven
    one = fresh_model()
    accumulate_gradients(one, [(x, y, w)])
    four = fresh_model()
    loss4, n4 = accumulate_gradients(
        four, [(x[i : i + 1], y[i : i + 1], None if w is None else w[i : i + 1]) for i in range(4)]
    )
    assert float(n4) == pytest.approx(float(trained_tokens(y, w)))
    g1, g4 = _grads(one), _grads(four)
    for name in g1:
        torch.testing.assert_close(g4[name], g1[name], rtol=1e-5, atol=1e-7)
    with torch.no_grad():
        torch.testing.assert_close(loss4, fresh_model()(x, y, loss_weights=w).loss)
    # the naive recipe (mean of per-micro-batch means) gives another gradient
    naive = fresh_model()
    for i in range(4):
        sl = slice(i, i + 1)
        (naive(x[sl], y[sl], loss_weights=None if w is None else w[sl]).loss / 4).backward()
    diff = max((p.grad - g1[n]).abs().max().item() for n, p in naive.named_parameters())
    assert diff > 1e-4


# --- full runs, checkpoints and resume ----------------------------------------------------------


def run(out_dir=None, resume=False, max_steps=8, on_log=None, **kw):
    model = fresh_model()
    loader = PackedLoader(make_tokens(), 4, 16, seed=3)
    val = PackedLoader(make_tokens(seed=1), 4, 16, seed=9)
    cfg = small_cfg(max_steps=max_steps, **kw)
    result = train(
        model,
        loader,
        cfg,
        val_loader=val,
        out_dir=out_dir,
        resume=resume,
        progress=False,
        on_log=on_log,
        extra={"tokenizer": "test-fingerprint"},
    )
    return model, result


def test_training_lowers_the_loss_and_writes_a_loadable_checkpoint(tmp_path):
    model, result = run(tmp_path, max_steps=30, eval_every=10, lr=1e-2)
    first, last = result.history[0]["loss"], result.history[-1]["loss"]
    assert result.step == 30 and last < first - 0.5
    assert [r["step"] for r in result.val_history] == [10, 20, 30]
    assert result.val_history[-1]["val_loss"] < result.val_history[0]["val_loss"]
    lines = [json.loads(s) for s in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines if "loss" in r] == list(range(1, 31))
    assert lines[1]["lr"] == pytest.approx(1e-2 / 2)  # warmup: step 1 of 2
    state, extras = read_checkpoint(result.checkpoint)  # weights_only=True
    assert extras["step"] == 30 and extras["tokenizer"] == "test-fingerprint"
    assert extras["data"] == {"epoch": 0, "cursor": 30} and extras["config"] == TINY.to_dict()
    for k, v in model.state_dict().items():
        assert torch.equal(state[k], v)


def test_resume_after_an_exception_is_bit_identical(tmp_path):
    reference, _ = run()

    def crash(record):
        if record.get("step") == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, save_every=2, on_log=crash)
    assert read_checkpoint(tmp_path / "last.pt")[1]["step"] == 4
    resumed, result = run(tmp_path, resume=True, save_every=2)
    assert result.step == 8
    for k, v in reference.state_dict().items():
        assert torch.equal(resumed.state_dict()[k], v), k


CHILD = """
import sys, time
sys.path.insert(0, {here!r})
from test_train import run

def report(record):
    print("step", record["step"], flush=True)
    if record["step"] == 11:  # wait here (after the step-10 checkpoint) to be killed
        time.sleep(120)

run({out!r}, save_every=2, max_steps=40, on_log=report)
"""


def test_resume_after_sigkill_is_bit_identical(tmp_path):
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD.format(here=str(HERE), out=str(tmp_path))],
        stdout=subprocess.PIPE,
        text=True,
    )
    for line in child.stdout:
        if line.split() == ["step", "11"]:
            break
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert child.returncode == -signal.SIGKILL
    assert read_checkpoint(tmp_path / "last.pt")[1]["step"] == 10
    resumed, result = run(tmp_path, resume=True, save_every=2, max_steps=40)
    reference, _ = run(max_steps=40)
    assert result.step == 40
    for k, v in reference.state_dict().items():
        assert torch.equal(resumed.state_dict()[k], v), k


SAVER = """
import os, sys, time, torch
from spongebob.checkpoint import save_checkpoint
path, mode = sys.argv[1], sys.argv[2]
big = {"step": 1, "w": torch.arange(2_000_000, dtype=torch.float32)}
save_checkpoint(path, big)
real_save = torch.save

def half_then_hang(obj, f):  # write half the bytes, then hang until killed
    import io
    buf = io.BytesIO()
    real_save(obj, buf)
    data = buf.getvalue()
    f.write(data[: len(data) // 2])
    f.flush()
    print("HALF", flush=True)
    time.sleep(60)

torch.save = half_then_hang
state = {"step": 2, "w": torch.zeros(2_000_000)}
if mode == "atomic":
    save_checkpoint(path, state)
else:  # the naive way: write over the file in place
    with open(path, "wb") as f:
        torch.save(state, f)
"""


@pytest.mark.parametrize("mode", ["atomic", "naive"])
def test_sigkill_during_a_save(tmp_path, mode):
    path = tmp_path / "last.pt"
    child = subprocess.Popen(
        [sys.executable, "-c", SAVER, str(path), mode], stdout=subprocess.PIPE, text=True
    )
    assert child.stdout.readline().strip() == "HALF"
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    if mode == "atomic":  # the last good checkpoint is intact
        obj = torch.load(path, weights_only=True)
        assert obj["step"] == 1 and torch.equal(obj["w"], torch.arange(2_000_000.0))
    else:  # the control: writing in place leaves half a file
        with pytest.raises(CheckpointError):
            read_checkpoint(path)


def test_init_loads_strictly_and_names_mismatches(tmp_path):
    source = fresh_model(seed=5)
    save_checkpoint(tmp_path / "pre.pt", {"model": source.state_dict(), "config": TINY.to_dict()})
    loader = PackedLoader(make_tokens(), 4, 16)
    model = fresh_model(seed=0)
    # max_steps=1 runs step 0 at lr 0 (warmup), so the weights are exactly the loaded ones
    train(
        model,
        loader,
        small_cfg(max_steps=1, warmup_steps=5),
        init=tmp_path / "pre.pt",
        progress=False,
    )
    for k, v in source.state_dict().items():
        assert torch.equal(model.state_dict()[k], v)
    other = SpongeBob(
        ModelConfig(dim=48, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=64, max_seq_len=32)
    )
    with pytest.raises(CheckpointError, match="mis-shaped keys") as e:
        train(other, loader, small_cfg(max_steps=1), init=tmp_path / "pre.pt", progress=False)
    assert "pre.pt" in str(e.value) and "tok_embeddings.weight (64, 32)" in str(e.value)


def test_resume_refuses_a_weights_only_file(tmp_path):
    model = fresh_model()
    save_checkpoint(tmp_path / "w.pt", {"model": model.state_dict()})
    opt = make_optimizer(model, small_cfg())
    with pytest.raises(CheckpointError, match="not a resumable training checkpoint"):
        resume_training(tmp_path / "w.pt", model, opt, WarmupCosine(1.0, 1, 10))
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        run(tmp_path / "empty", resume=True)


def test_training_state_round_trips_rng_and_loads_weights_only(tmp_path):
    import random

    import numpy as np

    model = fresh_model()
    opt = make_optimizer(model, small_cfg())
    sched = WarmupCosine(1e-3, 5, 50)
    torch.manual_seed(11)
    random.seed(12)
    np.random.seed(13)
    save_checkpoint(
        tmp_path / "t.pt", training_state(model, opt, sched, step=3, data={"cursor": 3})
    )
    expected = (torch.rand(3), random.random(), np.random.rand())
    torch.manual_seed(0)
    random.seed(0)
    np.random.seed(0)
    sched2 = WarmupCosine(0.0, 0, None)
    extras = resume_training(tmp_path / "t.pt", model, opt, sched2)
    assert extras["step"] == 3 and sched2 == sched
    got = (torch.rand(3), random.random(), np.random.rand())
    assert torch.equal(got[0], expected[0]) and got[1:] == expected[1:]


def test_missing_tracker_package_is_a_clear_error():
    try:
        import wandb  # noqa: F401

        pytest.skip("wandb is installed here")
    except ImportError:
        pass
    with pytest.raises(ImportError, match="pip install wandb"):
        run(tracker="wandb")


# --- DDP ------------------------------------------------------------------------------------------


def _ddp_worker(rank, world, init_file, out):
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    model = fresh_model(seed=rank)  # different on purpose: DDP broadcasts rank 0's weights
    loader = PackedLoader(make_tokens(), 2, 16, seed=3, rank=rank, world_size=world, masked=True)
    train(model, loader, small_cfg(max_steps=4, batch_size=2), progress=False)
    flat = torch.cat([p.detach().flatten() for p in model.parameters()])
    gathered = [torch.zeros_like(flat) for _ in range(world)]
    dist.all_gather(gathered, flat)
    if rank == 0:
        torch.save(torch.stack(gathered), out)
    dist.destroy_process_group()


def test_ddp_two_ranks_stay_identical_and_match_accumulation(tmp_path):
    out = tmp_path / "params.pt"
    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "init"), str(out)), nprocs=2, join=True)
    replicas = torch.load(out, weights_only=True)
    assert torch.equal(replicas[0], replicas[1])
    # one process, accumulation 2 over the same global batches: the same step (token-normalised
    # over both ranks' uneven masks)
    torch.set_num_threads(1)
    model = fresh_model(seed=0)
    loader = PackedLoader(make_tokens(), 2, 16, seed=3, masked=True)
    train(model, loader, small_cfg(max_steps=4, batch_size=2, grad_accum=2), progress=False)
    single = torch.cat([p.detach().flatten() for p in model.parameters()])
    torch.testing.assert_close(replicas[0], single, rtol=1e-4, atol=1e-5)


def test_lm_loss_is_the_per_token_mean_that_accumulation_reweights():
    # accumulate_gradients multiplies lm_loss (a mean) back by its token count: check that
    # identity on weights, independently of the model
    logits = torch.randn(2, 5, 7)
    y = torch.tensor([[1, 2, -100, 3, -100], [4, -100, -100, -100, 0]])
    w = torch.rand(2, 5) + 0.5
    ce = torch.nn.functional.cross_entropy(
        logits.flatten(0, 1), y.flatten().clamp_min(0), reduction="none"
    )
    keep = (y.flatten() != -100).float() * w.flatten()
    torch.testing.assert_close(lm_loss(logits, y, w) * trained_tokens(y, w), (ce * keep).sum())


# --- the command line ------------------------------------------------------------------------------


def test_cli_train_pretrain_runs_resumes_and_reports_bad_input(tmp_path, capsys):
    from spongebob.cli import main
    from spongebob.files import write_jsonl

    texts = [
        {"text": f"SpongeBob has {i} jellyfish nets and Patrick has {i + 1}."} for i in range(300)
    ]
    write_jsonl(tmp_path / "pre.jsonl", texts)
    out = tmp_path / "run"
    common = ["train", "pretrain", str(tmp_path / "pre.jsonl"), "--out", str(out),
              "--batch-size", "2", "--seq-len", "16", "--warmup-steps", "1", "--log-every", "1"]  # fmt: skip
    assert main([*common, "--max-steps", "3"]) == 0
    assert main([*common, "--max-steps", "5", "--resume"]) == 0
    steps = [json.loads(s)["step"] for s in (out / "metrics.jsonl").read_text().splitlines()]
    assert [s for s in steps] == [1, 2, 3, 3, 4, 5, 5]  # 3 logs + val, then 2 more + val
    _, extras = read_checkpoint(out / "last.pt")
    assert extras["step"] == 5 and extras["train_config"]["lr"] == TrainConfig().lr
    assert extras["stage"] == "pretrain" and len(extras["tokenizer"]) == 64
    assert main(["train", "pretrain", str(tmp_path / "missing.jsonl"), "--out", str(out)]) == 2
    assert "missing.jsonl: no such file" in capsys.readouterr().err


def test_pretrain_records_its_cuts_and_reuses_a_finished_run_only_of_the_same_cuts(tmp_path):
    from spongebob.files import write_jsonl
    from spongebob.pretrain import (
        PRETRAIN_RECIPE,
        pretrain,
        pretrain_recipe,
        pretrained_checkpoint,
    )
    from spongebob.tokenizer import train_bpe

    texts = [f"SpongeBob has {i} jellyfish nets and Patrick has {i + 1}." for i in range(300)]
    write_jsonl(tmp_path / "pre.jsonl", [{"text": t} for t in texts])
    tok = train_bpe(texts, vocab_size=300)
    cfg = small_cfg(max_steps=2, batch_size=2)
    run = tmp_path / "run"
    fixed = pretrain(tmp_path / "pre.jsonl", tok, run, cfg, cuts="fixed", progress=False)
    _, extras = read_checkpoint(fixed.checkpoint)
    assert extras["recipe"] == pretrain_recipe("fixed") != PRETRAIN_RECIPE == pretrain_recipe()
    written = fixed.checkpoint.stat().st_mtime_ns
    again = pretrained_checkpoint(tmp_path / "pre.jsonl", tok, run, cfg, cuts="fixed")
    assert again == fixed.checkpoint and again.stat().st_mtime_ns == written  # reused
    shifted = pretrained_checkpoint(tmp_path / "pre.jsonl", tok, run, cfg, progress=False)
    assert read_checkpoint(shifted)[1]["recipe"] == PRETRAIN_RECIPE  # trained again


def test_pretrained_checkpoint_trains_again_when_the_finished_run_lacks_a_probe(tmp_path):
    # A run trained without the probe (a bench script's) has no probe values in its log: chapter
    # 06 reads them back, so the finished run must not be reused for a call that asks for them.
    from spongebob.checkpoint import logged
    from spongebob.files import write_jsonl
    from spongebob.pretrain import pretrained_checkpoint
    from spongebob.tokenizer import train_bpe

    texts = [f"Sandy has {i} acorns and Squidward has {i + 2}." for i in range(300)]
    write_jsonl(tmp_path / "pre.jsonl", [{"text": t} for t in texts])
    tok = train_bpe(texts, vocab_size=300)
    cfg, run = small_cfg(max_steps=2, batch_size=2), tmp_path / "run"
    plain = pretrained_checkpoint(tmp_path / "pre.jsonl", tok, run, cfg, progress=False)
    assert not logged(run / "metrics.jsonl", ["half"]) and logged(run / "metrics.jsonl", [])
    written = plain.stat().st_mtime_ns
    probes = {"half": lambda model: 0.5}
    probed = pretrained_checkpoint(tmp_path / "pre.jsonl", tok, run, cfg, progress=False,
                                   probes=probes)  # fmt: skip
    assert probed.stat().st_mtime_ns != written  # trained again
    assert logged(run / "metrics.jsonl", ["half"])
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["half"] for r in records if "val_loss" in r][-1] == 0.5
    written = probed.stat().st_mtime_ns
    for kw in ({"probes": probes}, {}):  # a run that measured the probe serves both calls
        again = pretrained_checkpoint(tmp_path / "pre.jsonl", tok, run, cfg, progress=False, **kw)
        assert again.stat().st_mtime_ns == written


# --- issue 14: logs on servers, tokens counted, prefetch, per-rank resume ---------------------------


def test_progress_is_plain_lines_every_log_interval_when_stderr_is_not_a_terminal(capsys):
    # pytest captures stderr into a file: as under nohup, a job scheduler or torchrun > log
    model = fresh_model()
    cfg = small_cfg(max_steps=9, log_every=3)
    train(model, PackedLoader(make_tokens(), 4, 16, seed=3), cfg, progress=True)
    err = capsys.readouterr().err
    assert "\r" not in err  # no progress-bar redraws
    lines = err.splitlines()
    assert [line.split(" | ")[0] for line in lines] == ["step 3/9", "step 6/9", "step 9/9"]
    assert all("tokens/s" in line and "loss" in line for line in lines)


class VaryingLengths(PackedLoader):
    """Batches whose length cycles through 16, 9, 5 (as chat batches padded to their longest)."""

    def __iter__(self):
        lengths = [16, 9, 5]
        for i, (x, y, w) in enumerate(super().__iter__()):
            n = lengths[i % 3]
            yield x[:, :n], y[:, :n], w


def test_tokens_and_tokens_per_second_count_the_tokens_in_each_batch():
    records = []
    train(fresh_model(), VaryingLengths(make_tokens(), 4, 16, seed=3),
          small_cfg(max_steps=6, log_every=3), progress=False, on_log=records.append)  # fmt: skip
    per_step = [4 * n for n in (16, 9, 5, 16, 9, 5)]  # x.numel(), not batch_size * seq_len
    assert [r["tokens"] for r in records] == [sum(per_step[:3]), sum(per_step)]
    for r in records:
        assert 0 < r["tok_s"] < float("inf")


def test_prefetch_hands_out_the_loader_state_of_the_batches_it_returns():
    from spongebob.train import Prefetch

    loader = PackedLoader(make_tokens(), 4, 16, seed=3)
    reference = PackedLoader(make_tokens(), 4, 16, seed=3)
    ref = iter(reference)
    batches = Prefetch(loader, grad_accum=2)
    try:
        for step in range(1, 4):
            micro, counts, state = next(batches)
            expected = [next(ref) for _ in range(2)]
            assert all(torch.equal(a[0], b[0]) for a, b in zip(micro, expected))
            assert counts.tolist() == [float((b[1] != -100).sum()) for b in expected]
            assert state == reference.state_dict() == {"epoch": 0, "cursor": 2 * step}
        assert loader.cursor > 6  # the thread ran ahead; the state above did not
    finally:
        batches.close()


def test_resume_restores_each_ranks_own_random_state(tmp_path):
    from spongebob.checkpoint import rng_state

    model = fresh_model()
    opt, sched = make_optimizer(model, small_cfg()), WarmupCosine(1e-3, 5, 50)
    states = []
    for seed in (1, 2):  # rank 0 was seeded 1, rank 1 seeded 2
        torch.manual_seed(seed)
        states.append(rng_state())
    state = training_state(model, opt, sched, step=1, world_size=2, rng_ranks=states)
    save_checkpoint(tmp_path / "t.pt", {**state, "rng": states[0]})
    for rank, world, seed in ((0, 2, 1), (1, 2, 2), (2, 3, 123)):  # rank 2: unknown to the file
        torch.manual_seed(123)
        resume_training(tmp_path / "t.pt", model, opt, sched, rank=rank, world_size=world)
        got = torch.rand(2)
        torch.manual_seed(seed)
        assert torch.equal(got, torch.rand(2)), rank


def test_resume_with_another_world_size_refuses_a_per_rank_data_position(tmp_path):
    model = fresh_model()
    opt, sched = make_optimizer(model, small_cfg()), WarmupCosine(1e-3, 5, 50)
    save_checkpoint(tmp_path / "t.pt", training_state(model, opt, sched, step=3, world_size=2,
                                                      data={"epoch": 0, "cursor": 3}))  # fmt: skip
    loader = PackedLoader(make_tokens(), 4, 16)
    with pytest.raises(CheckpointError) as err:
        resume_training(tmp_path / "t.pt", model, opt, sched, loader=loader, world_size=1)
    msg = str(err.value)
    assert "\n" not in msg and "written by 2 rank(s), this run has 1" in msg
    assert "torchrun --nproc_per_node=2" in msg
    # same world size: accepted, position restored
    resume_training(tmp_path / "t.pt", model, opt, sched, loader=loader, world_size=2)
    assert loader.cursor == 3


def test_seed_presets_compile_by_default_and_tiny_does_not():
    from spongebob.distill import distill_config
    from spongebob.sft import sft_config

    assert TrainConfig.preset("seed").compile and not TrainConfig.preset("tiny").compile
    assert sft_config("seed").compile and sft_config("seed-long").compile
    assert distill_config("seed").compile
    assert not sft_config("tiny").compile and not distill_config("tiny").compile


def test_a_time_budget_is_checked_at_log_steps_and_fixes_the_schedule_after_the_probe(monkeypatch):
    import itertools
    from types import SimpleNamespace

    import spongebob.train as T

    ticks = itertools.count()  # a fake clock: one second per reading, so the run is reproducible
    monkeypatch.setattr(T, "time", SimpleNamespace(perf_counter=lambda: float(next(ticks))))
    cfg = small_cfg(max_steps=None, max_minutes=1.0, probe_steps=3, log_every=4)
    records = []
    result = train(fresh_model(), PackedLoader(make_tokens(), 4, 16, seed=3), cfg,
                   progress=False, on_log=records.append)  # fmt: skip
    # the budget ended the run, at a log step (the clock is read there, not at every step)
    assert result.step % cfg.log_every == 0 and result.step >= cfg.probe_steps
    assert [r["step"] for r in records] == list(range(4, result.step + 1, 4))
    assert 55 <= records[-1]["elapsed"] <= 65  # about the 60 s budget of the fake clock
    # the schedule's length was fixed after the probe: the cosine is under way, not flat at lr
    assert records[-1]["lr"] < cfg.lr and records[0]["lr"] == pytest.approx(cfg.lr)


def test_probes_are_measured_with_validation_and_logged_in_the_same_record(tmp_path):
    """A probe sees the model as it is at its step (here: the norm of one weight, recomputed
    from the checkpoint at the end), in eval mode, without changing the training itself."""
    seen = []

    def weight_norm(m):
        seen.append(m.training)
        return m.output.weight.norm().item()

    tokens = make_tokens()
    model = fresh_model()
    result = train(model, PackedLoader(tokens, 4, 16), small_cfg(max_steps=6, eval_every=3),
                   out_dir=tmp_path, progress=False, probes={"w_norm": weight_norm})  # fmt: skip
    lines = [json.loads(s) for s in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    probed = [r for r in lines if "w_norm" in r]
    assert [r["step"] for r in probed] == [3, 6] and seen == [False, False] and model.training
    assert probed[-1]["w_norm"] == pytest.approx(model.output.weight.norm().item())
    assert probed[0]["w_norm"] != probed[1]["w_norm"]  # measured at its own step
    plain = fresh_model()
    train(plain, PackedLoader(tokens, 4, 16), small_cfg(max_steps=6, eval_every=3), progress=False)
    for k, v in plain.state_dict().items():  # probing changes nothing in the run
        assert torch.equal(v, model.state_dict()[k]), k
    assert result.val_history[-1]["step"] == 6
