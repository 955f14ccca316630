"""Probe: is batch-1 CPU decoding bound by reading the weights? Quarter the bytes and see.

    .venv/bin/python bench/probe_int8_decode.py [--threads 2]

Runs the exported `generate` (greedy, 64-token prompt, 128 new tokens, KV cache) on the `seed`
preset in fp32, then on the same model with its `nn.Linear` weights converted to int8 by PyTorch's
dynamic quantization (4x fewer weight bytes; activations stay float). This is a measurement for
docs/benchmarks.md, not a supported path: `torch.ao.quantization` is deprecated and int8 weights
change the model's numbers.
"""

import argparse
import time
import warnings

import torch
from torch import nn

from spongebob.config import ModelConfig
from spongebob.generate import generate
from spongebob.model import SpongeBob


def tokens_per_second(model: nn.Module, prompt: torch.Tensor, new: int, repeats: int):
    generate(model, prompt, 16, temperature=0)  # warm-up
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = generate(model, prompt, new, temperature=0)
        times.append(time.perf_counter() - start)
    return new / sorted(times)[len(times) // 2], out[0]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = SpongeBob(ModelConfig.preset("seed")).eval()
    prompt = torch.randint(3, model.config.vocab_size, (1, 64))
    fp32, ids32 = tokens_per_second(model, prompt, 128, args.repeats)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the deprecation notices of torch.ao.quantization
        int8 = torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)
        q, ids8 = tokens_per_second(int8, prompt, 128, args.repeats)
    same = sum(a == b for a, b in zip(ids32, ids8))
    print(f"threads {args.threads}: fp32 {fp32:.1f} tokens/s, int8 weights {q:.1f} tokens/s, ")
    print(
        f"ratio {q / fp32:.2f}x; greedy tokens equal to fp32: {same}/{len(ids32)} (untrained model)"
    )


if __name__ == "__main__":
    main()
