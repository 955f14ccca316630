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
