"""The model, attention and generation on a CUDA GPU: bf16 autocast training, torch.compile,
FlashAttention on the training path, batched generation and cached decoding on the device.

Skipped as a whole where no CUDA GPU is visible (CI and the course's laptops); the CPU halves of
these properties are tested in test_attention.py, test_model.py and test_generate.py.
"""

import pytest
import torch

if not torch.cuda.is_available():
    pytest.skip(
        "no CUDA GPU: torch.cuda.is_available() is False (these tests need one)",
        allow_module_level=True,
    )

from torch.nn.attention import SDPBackend, sdpa_kernel  # noqa: E402

from spongebob.config import ModelConfig  # noqa: E402
from spongebob.generate import CHAT_SAMPLING, generate  # noqa: E402
from spongebob.model import SpongeBob, init_weights  # noqa: E402

DEVICE = torch.device("cuda")
TINY = ModelConfig.preset("tiny", max_seq_len=256)
PROMPTS = [[5, 6, 7], list(range(20, 37)), [9], [100, 3, 100, 3]]


def tiny_model(std: float = 0.02, seed: int = 0) -> SpongeBob:
    torch.manual_seed(seed)
    m = SpongeBob(TINY)
    if std != 0.02:
        init_weights(m, std=std)
    return m.to(DEVICE)


def batch(B: int = 4, T: int = 128, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, TINY.vocab_size, (B, T + 1), generator=g).to(DEVICE)
    return ids[:, :-1], ids[:, 1:]


def test_bf16_autocast_forward_and_backward_reach_every_parameter():
    model = tiny_model().train()
    x, y = batch()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = model(x, y)
    assert out.logits.dtype == torch.bfloat16 and out.loss.dtype == torch.float32
    assert torch.isfinite(out.loss) and abs(out.loss.item() - 7.62) < 0.5  # ln(2048) = 7.62
    out.loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert p.grad.dtype == torch.float32 and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_flash_attention_runs_the_bf16_training_path():
    if torch.cuda.get_device_capability() < (8, 0):
        pytest.skip("FlashAttention in PyTorch needs an sm80 (Ampere) or newer GPU")
    model = tiny_model().train()
    x, y = batch()
    # Only FlashAttention is allowed: a mask, a float32 input or an unsupported GQA call would
    # make SDPA raise here instead of falling back to another kernel.
    with sdpa_kernel(SDPBackend.FLASH_ATTENTION), torch.autocast("cuda", dtype=torch.bfloat16):
        loss = model(x, y).loss
        loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_compiled_model_equals_eager_within_bf16_tolerance():
    model = tiny_model(std=0.1).eval()  # logits of order 1, so that a wrong graph shows
    compiled = torch.compile(model)  # the default backend: inductor
    x, y = batch(seed=1)
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        eager_out, compiled_out = model(x, y), compiled(x, y)
    eager, got = eager_out.logits.float(), compiled_out.logits.float()
    err = (got - eager).abs()
    # bf16 keeps 8 significant bits (0.4 %); fused kernels round at other places than eager ones.
    assert err.mean() < 0.01 * eager.abs().mean(), (err.mean(), eager.abs().mean())
    assert err.max() < 0.05 * eager.abs().max(), (err.max(), eager.abs().max())
    torch.testing.assert_close(compiled_out.loss, eager_out.loss, atol=2e-2, rtol=2e-2)


def test_cached_decoding_equals_the_full_forward_on_the_device():
    model = tiny_model(std=0.1).eval()
    ids, _ = batch(B=2, T=40, seed=2)
    with torch.no_grad():
        full = model(ids).logits
        caches = model.make_caches(2, 40)
        assert caches[0].k.device.type == "cuda"
        parts = [model(ids[:, :16], caches=caches).logits]
        parts.append(model(ids[:, 16:24], caches=caches, start_pos=16).logits)  # a chunk
        for t in range(24, 40):
            parts.append(model(ids[:, t : t + 1], caches=caches, start_pos=t).logits)
    torch.testing.assert_close(torch.cat(parts, 1), full, atol=1e-4, rtol=1e-4)


def test_caches_are_bf16_under_cuda_autocast():
    model = tiny_model()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        assert model.make_caches(1, 8)[0].k.dtype == torch.bfloat16
    assert model.make_caches(1, 8)[0].k.dtype == torch.float32


def test_padded_batched_generation_equals_one_prompt_at_a_time():
    model = tiny_model(std=0.2).eval()  # large weights: decisive argmax at every step
    batched = generate(model, PROMPTS, 12, temperature=0)
    one_by_one = [generate(model, p, 12, temperature=0)[0] for p in PROMPTS]
    assert batched == one_by_one
    assert all(len(r) == 12 for r in batched)


def test_sampling_with_a_seed_or_a_cpu_generator_on_cuda_logits():
    model = tiny_model(std=0.2).eval()
    a = generate(model, PROMPTS, 10, **CHAT_SAMPLING, seed=3)  # a CUDA generator, made inside
    assert a == generate(model, PROMPTS, 10, **CHAT_SAMPLING, seed=3)
    cpu = [
        generate(model, PROMPTS, 10, **CHAT_SAMPLING, generator=torch.Generator().manual_seed(3))
        for _ in range(2)
    ]  # a CPU generator with CUDA logits: sampled on the CPU, no device error
    assert cpu[0] == cpu[1]
    assert all(0 <= t < TINY.vocab_size for row in cpu[0] for t in row)


# --- the training loop on CUDA (issue 14, point 11) ------------------------------------------------


def _ids(n: int = 60_000, seed: int = 0):
    import numpy as np

    return np.random.default_rng(seed).integers(0, TINY.vocab_size, n).astype(np.uint16)


def _train_cfg(**kw):
    from spongebob.train import TrainConfig

    base = dict(lr=3e-3, warmup_steps=1, max_steps=3, batch_size=4, seq_len=64, grad_accum=2,
                log_every=1, save_every=0)  # fmt: skip
    return TrainConfig(**{**base, **kw})


def test_train_three_steps_on_cuda_then_resume_matches_a_straight_run(tmp_path):
    from spongebob.checkpoint import read_checkpoint
    from spongebob.data import PackedLoader
    from spongebob.train import train

    def run(out, steps, resume=False):
        model = tiny_model()
        loader = PackedLoader(_ids(), 64, 4, seed=1)
        # warmup 10 > 5 steps: the lr of a step does not depend on max_steps (3 or 5)
        cfg = _train_cfg(max_steps=steps, warmup_steps=10)
        result = train(model, loader, cfg, out_dir=out, resume=resume, progress=False)
        return model, result

    model, result = run(tmp_path / "a", 3)
    assert result.step == 3 and result.history[-1]["loss"] < 8.0
    _, extras = read_checkpoint(tmp_path / "a" / "last.pt")
    assert len(extras["optimizer"]["state"]) == len(list(model.parameters()))  # fused AdamW state
    assert extras["world_size"] == 1
    assert isinstance(extras["rng"]["cuda"], torch.Tensor)  # this device's generator only
    resumed, _ = run(tmp_path / "a", 5, resume=True)
    straight, _ = run(tmp_path / "b", 5)
    for (k, a), b in zip(resumed.state_dict().items(), straight.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=k)  # atomics may reorder sums


class _VaryingLengths:
    """Chat-like batches: lengths vary per batch (as ChatLoader's), some targets masked."""

    def __init__(self, lengths):
        self.lengths, self.i = lengths, 0

    def __iter__(self):
        g = torch.Generator().manual_seed(0)
        while True:
            T = self.lengths[self.i % len(self.lengths)]
            self.i += 1
            ids = torch.randint(0, TINY.vocab_size, (4, T + 1), generator=g)
            y = ids[:, 1:].clone()
            y[:, : T // 3] = -100  # the prompt is not trained
            yield ids[:, :-1], y, None

    def state_dict(self):
        return {"i": self.i}

    def load_state_dict(self, d):
        self.i = d["i"]


def test_compiled_sft_of_varying_lengths_compiles_at_most_twice():
    from torch._dynamo.utils import counters

    from spongebob.train import train

    torch._dynamo.reset()
    counters.clear()
    lengths = [48, 64, 37, 100, 128, 77, 90, 53]
    train(tiny_model(), _VaryingLengths(lengths), _train_cfg(max_steps=8, grad_accum=1,
          compile=True), progress=False)  # fmt: skip
    graphs = counters["stats"]["unique_graphs"]
    breaks = sum(counters["graph_break"].values())
    print(
        f"unique graphs {graphs}, graph breaks {breaks}, recompiles {dict(counters['recompiles'])}"
    )
    assert breaks == 0, dict(counters["graph_break"])
    assert 1 <= graphs <= 2, graphs  # one static graph, then one with a dynamic length


def test_a_training_step_never_waits_for_the_gpu(monkeypatch):
    import spongebob.train as T
    from spongebob.data import PackedLoader

    def allowed(fn):  # log steps copy numbers back on purpose
        def wrapped(*a, **k):
            torch.cuda.set_sync_debug_mode(0)
            try:
                return fn(*a, **k)
            finally:
                torch.cuda.set_sync_debug_mode("error")

        return wrapped

    T.train(tiny_model(), PackedLoader(_ids(), 64, 4), _train_cfg(max_steps=2), progress=False)
    monkeypatch.setattr(T, "_log_window", allowed(T._log_window))
    torch.cuda.set_sync_debug_mode("error")
    try:  # every step but the log steps (every 3rd) runs under "error"
        result = T.train(tiny_model(), PackedLoader(_ids(), 64, 4, seed=2),
                         _train_cfg(max_steps=7, log_every=3), progress=False)  # fmt: skip
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert result.step == 7 and [r["step"] for r in result.history] == [3, 6, 7]


def test_the_seed_shape_trains_in_bf16_with_flash_attention():
    from spongebob.train import TrainConfig, accumulate_gradients, make_optimizer

    if torch.cuda.get_device_capability() < (8, 0):
        pytest.skip("FlashAttention in PyTorch needs an sm80 (Ampere) or newer GPU")
    cfg = ModelConfig.preset("seed")
    assert (cfg.vocab_size, cfg.dim // cfg.n_heads, cfg.n_kv_heads) == (6400, 64, 8)
    torch.manual_seed(0)
    model = SpongeBob(cfg).to(DEVICE)
    opt = make_optimizer(model, TrainConfig(lr=5e-4))
    assert opt.defaults["fused"]
    ids = torch.randint(0, cfg.vocab_size, (8, 513), device=DEVICE)

    def autocast():
        return torch.autocast("cuda", dtype=torch.bfloat16)

    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
        losses = []
        for _ in range(3):
            loss, _ = accumulate_gradients(model, [(ids[:, :-1], ids[:, 1:], None)],
                                           autocast=autocast)  # fmt: skip
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            losses.append(loss.item())
    assert abs(losses[0] - 8.76) < 0.5  # ln 6400
    assert losses[-1] < losses[0]  # the same batch three times: it is learnt
