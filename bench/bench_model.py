"""CPU benchmark of the course model against a straightforward version of the original's formulation.

    .venv/bin/python bench/bench_model.py --threads 2     # about 3 minutes on 2 idle cores
    .venv/bin/python bench/bench_model.py --threads 1     # on a machine shared with other jobs

Not a test: it prints tokens/s and writes nothing. Every workload is measured the same way for both
models (one warm-up each, then ``--repeats`` rounds in which baseline and ours run in turn; medians),
with ``torch.set_num_threads`` fixed. Wall-clock and process CPU time are both reported: on a
machine shared with other jobs, the CPU-time ratio at ``--threads 1`` is the stable one.
The two target workloads (docs/benchmarks.md):

* training step of the ``seed`` preset (28,975,616 parameters), fp32, batch 4 x 512 random tokens:
  forward, masked cross-entropy, backward, clipping, AdamW step (the baseline's AdamW as the original
  builds it; ours as ``spongebob train`` builds it, ``make_optimizer``: fused);
* generation at batch 1 with a KV cache: a 64-token prompt, 128 new tokens, greedy and with the
  original's chat sampling (temperature 0.85, top-p 0.85, repetition penalty 1.3).

Extra rows explain the result: ours with bf16 weights, 8 prompts at once (the baseline runs them one
after the other: it has no batched generation), and a 768-token prompt.

The baseline below is written here from the original project's *description* (SEED.md), not copied:
manual attention with a registered ``max_seq_len x max_seq_len`` mask buffer in every layer, complex
RoPE through ``torch.view_as_complex``, a KV cache that grows with ``torch.cat``, logits for every
prompt position, and a repetition penalty applied token by token in a Python loop. It has the same
state-dict keys, so both models run with identical weights (checked: equal logits, equal greedy ids).
Never run it with more threads than idle cores: OpenMP threads then wait on each other at every op
and the numbers mean nothing.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

from spongebob.config import ModelConfig
from spongebob.generate import CHAT_SAMPLING, generate
from spongebob.model import SpongeBob, count_parameters
from spongebob.train import TrainConfig, make_optimizer

# ---- the baseline: the original's formulation, written out plainly ---------------------------


class BaseRMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        xf = x.float()
        return self.weight * (
            xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        ).type_as(x)


def base_freqs_cis(head_dim: int, max_seq_len: int, theta: float) -> torch.Tensor:
    freqs = 1.0 / theta ** (torch.arange(0, head_dim, 2)[: head_dim // 2].float() / head_dim)
    angles = torch.outer(torch.arange(max_seq_len).float(), freqs)
    return torch.polar(torch.ones_like(angles), angles)  # complex64 (T, D/2)


def base_rope(q, k, freqs_cis):
    qc = torch.view_as_complex(q.float().reshape(*q.shape[:-1], -1, 2))
    kc = torch.view_as_complex(k.float().reshape(*k.shape[:-1], -1, 2))
    f = freqs_cis.view(1, q.shape[1], 1, q.shape[-1] // 2)
    q_out = torch.view_as_real(qc * f).flatten(3)
    k_out = torch.view_as_real(kc * f).flatten(3)
    return q_out.type_as(q), k_out.type_as(k)


class BaseAttention(nn.Module):
    def __init__(self, c: ModelConfig):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = c.n_heads, c.n_kv_heads, c.head_dim
        self.wq = nn.Linear(c.dim, c.n_heads * c.head_dim, bias=False)
        self.wk = nn.Linear(c.dim, c.n_kv_heads * c.head_dim, bias=False)
        self.wv = nn.Linear(c.dim, c.n_kv_heads * c.head_dim, bias=False)
        self.wo = nn.Linear(c.n_heads * c.head_dim, c.dim, bias=False)
        mask = torch.full((1, 1, c.max_seq_len, c.max_seq_len), float("-inf")).triu(1)
        self.register_buffer("mask", mask, persistent=False)  # per layer, as in the original

    def forward(self, x, freqs_cis, past_kv=None):
        B, T, _ = x.shape
        q = self.wq(x).view(B, T, self.n_heads, self.head_dim)
        k = self.wk(x).view(B, T, self.n_kv_heads, self.head_dim)
        v = self.wv(x).view(B, T, self.n_kv_heads, self.head_dim)
        q, k = base_rope(q, k, freqs_cis)
        if past_kv is not None:
            k = torch.cat([past_kv[0], k], dim=1)  # the cache grows by copying
            v = torch.cat([past_kv[1], v], dim=1)
        new_kv = (k, v)
        rep = self.n_heads // self.n_kv_heads
        if rep > 1:
            S = k.shape[1]
            k = (
                k[:, :, :, None]
                .expand(B, S, self.n_kv_heads, rep, self.head_dim)
                .reshape(B, S, -1, self.head_dim)
            )
            v = (
                v[:, :, :, None]
                .expand(B, S, self.n_kv_heads, rep, self.head_dim)
                .reshape(B, S, -1, self.head_dim)
            )
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        scores = q @ k.transpose(-2, -1) / math.sqrt(self.head_dim)
        if T > 1:  # prefill or training: the sequence starts at position 0
            scores = scores + self.mask[:, :, :T, :T]
        scores = F.softmax(scores.float(), dim=-1).type_as(q)
        out = (scores @ v).transpose(1, 2).reshape(B, T, -1)
        return self.wo(out), new_kv


class BaseFeedForward(nn.Module):
    def __init__(self, c: ModelConfig):
        super().__init__()
        self.w1 = nn.Linear(c.dim, c.ffn_hidden_dim, bias=False)
        self.w2 = nn.Linear(c.ffn_hidden_dim, c.dim, bias=False)
        self.w3 = nn.Linear(c.dim, c.ffn_hidden_dim, bias=False)

    def forward(self, x):
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class BaseBlock(nn.Module):
    def __init__(self, c: ModelConfig):
        super().__init__()
        self.attention = BaseAttention(c)
        self.feed_forward = BaseFeedForward(c)
        self.attention_norm = BaseRMSNorm(c.dim, c.norm_eps)
        self.ffn_norm = BaseRMSNorm(c.dim, c.norm_eps)

    def forward(self, x, freqs_cis, past_kv=None):
        a, kv = self.attention(self.attention_norm(x), freqs_cis, past_kv)
        h = x + a
        return h + self.feed_forward(self.ffn_norm(h)), kv


class Baseline(nn.Module):
    def __init__(self, c: ModelConfig):
        super().__init__()
        self.config = c
        self.tok_embeddings = nn.Embedding(c.vocab_size, c.dim)
        self.layers = nn.ModuleList(BaseBlock(c) for _ in range(c.n_layers))
        self.norm = BaseRMSNorm(c.dim, c.norm_eps)
        self.output = nn.Linear(c.dim, c.vocab_size, bias=False)
        self.tok_embeddings.weight = self.output.weight
        freqs = base_freqs_cis(c.head_dim, c.max_seq_len, c.rope_theta)
        self.register_buffer("freqs_cis", freqs, persistent=False)

    def forward(self, ids, past_kvs=None, start_pos=0):
        h = self.tok_embeddings(ids)
        freqs_cis = self.freqs_cis[start_pos : start_pos + ids.shape[1]]
        new_kvs = []
        for i, layer in enumerate(self.layers):
            h, kv = layer(h, freqs_cis, None if past_kvs is None else past_kvs[i])
            new_kvs.append(kv)
        return self.output(self.norm(h)), new_kvs  # logits for every position


def baseline_loss(logits, targets, loss_mask):
    ce = F.cross_entropy(logits.view(-1, logits.shape[-1]), targets.view(-1), reduction="none")
    return (ce * loss_mask.view(-1)).sum() / loss_mask.sum()


@torch.no_grad()
def baseline_generate(
    model, ids, max_new_tokens, temperature=0.0, top_p=None, rp=1.0, generator=None
):
    """The original's loop shape: full logits at prefill, cat-grown cache, Python-loop penalty."""
    logits, kvs = model(ids)
    pos = ids.shape[1]
    out = []
    for step in range(max_new_tokens):
        last = logits[:, -1, :].clone()
        if rp != 1.0:
            for token in set(ids.tolist()[0]):  # divides, as the original does (defect 9)
                last[:, token] /= rp
        if temperature == 0:
            nxt = last.argmax(-1, keepdim=True)
        else:
            last = last / temperature
            if top_p is not None and top_p < 1.0:
                sorted_logits, order = torch.sort(last, descending=True)
                cum = F.softmax(sorted_logits, dim=-1).cumsum(-1)
                remove = cum > top_p
                remove[:, 1:] = remove[:, :-1].clone()
                remove[:, 0] = False
                last = last.masked_fill(remove.scatter(1, order, remove), float("-inf"))
            nxt = torch.multinomial(F.softmax(last, dim=-1), 1, generator=generator)
        ids = torch.cat([ids, nxt], dim=1)
        out.append(int(nxt))
        if step + 1 < max_new_tokens:
            logits, kvs = model(nxt, kvs, start_pos=pos)
            pos += 1
    return out


# ---- measurement ---------------------------------------------------------------------------


def timed_pair(fns, warmup: int, repeats: int) -> list[tuple[float, float]]:
    """Median (wall, CPU) seconds per call of each function, measured interleaved.

    After ``warmup`` untimed calls of each, the functions run in turn, ``repeats`` rounds, so a
    change of machine load hits all of them alike. CPU time is this process's (all threads).
    """
    for fn in fns:
        for _ in range(warmup):
            fn()
    samples = [([], []) for _ in fns]
    for _ in range(repeats):
        for fn, (wall, cpu) in zip(fns, samples):
            w0, c0 = time.perf_counter(), time.process_time()
            fn()
            wall.append(time.perf_counter() - w0)
            cpu.append(time.process_time() - c0)
    return [(statistics.median(w), statistics.median(c)) for w, c in samples]


def train_step_fn(model, loss_fn, batch, seq, optimizer=None):
    """One training step on fixed random tokens. ``optimizer``: the baseline's is the original's
    ``torch.optim.AdamW(model.parameters(), ...)``; ours passes the package's own
    (``spongebob.train.make_optimizer``: the same hyperparameters, fused on the CPU)."""
    opt = optimizer or torch.optim.AdamW(model.parameters(), lr=5e-4, weight_decay=0.1)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, model.config.vocab_size, (batch, seq), generator=g)
    y = torch.randint(0, model.config.vocab_size, (batch, seq), generator=g)
    mask = torch.ones(batch, seq)

    def step():
        loss = loss_fn(model, x, y, mask)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (
        f"{cpu}, {os.cpu_count()} logical CPUs, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, load average {load:.1f} at start"
    )


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seq", type=int, default=512)
    p.add_argument("--prompt", type=int, default=64)
    p.add_argument("--new", type=int, default=128)
    p.add_argument("--skip-train", action="store_true")
    p.add_argument("--skip-extra", action="store_true", help="only the two target workloads")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(machine())

    cfg = ModelConfig.preset("seed")
    torch.manual_seed(0)
    ours = SpongeBob(cfg)
    base = Baseline(cfg)
    base.load_state_dict(ours.state_dict(), strict=True)  # identical weights, same keys
    print(f"seed preset: {count_parameters(ours):,} parameters")

    # Same function: equal logits, equal greedy continuation.
    ours.eval(), base.eval()
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, cfg.vocab_size, (1, args.prompt), generator=g)
    with torch.no_grad():
        torch.testing.assert_close(ours(ids).logits, base(ids)[0], atol=2e-4, rtol=1e-4)
    reference = generate(ours, ids, args.new, temperature=0)[0]
    assert reference == baseline_generate(base, ids, args.new), "baseline and ours disagree"

    rows = []

    def measure(label, base_fn, ours_fn, tokens):
        (bw, bc), (ow, oc) = timed_pair([base_fn, ours_fn], warmup=1, repeats=args.repeats)
        rows.append((label, tokens / bw, tokens / ow, bc / oc))
        print(
            f"{label:56} baseline {tokens / bw:8.1f}  ours {tokens / ow:8.1f} tokens/s  "
            f"(wall {bw / ow:.2f}x, CPU time {bc / oc:.2f}x)",
            flush=True,
        )

    if not args.skip_train:
        ours.train(), base.train()
        tokens = args.batch * args.seq
        measure(
            f"train step, fp32, AdamW, batch {args.batch} x {args.seq}",
            train_step_fn(
                base, lambda m, x, y, k: baseline_loss(m(x)[0], y, k), args.batch, args.seq
            ),
            train_step_fn(
                ours,
                lambda m, x, y, k: m(x, y, loss_weights=k).loss,
                args.batch,
                args.seq,
                make_optimizer(ours, TrainConfig(lr=5e-4, weight_decay=0.1)),
            ),
            tokens,
        )
        ours.eval(), base.eval()
        ours.load_state_dict(base.state_dict())  # training changed the weights differently

    def gen_pair(model_ours, model_base, prompt, **kw):
        bkw = dict(
            temperature=kw.get("temperature", 0.0),
            top_p=kw.get("top_p"),
            rp=kw.get("repetition_penalty", 1.0),
        )

        def run_base():
            for row in prompt:  # the original generates one prompt at a time
                baseline_generate(
                    model_base,
                    row[None],
                    args.new,
                    generator=torch.Generator().manual_seed(0),
                    **bkw,
                )

        def run_ours():
            generate(model_ours, prompt, args.new, generator=torch.Generator().manual_seed(0), **kw)

        return run_base, run_ours

    new = args.new
    measure(f"generate fp32, batch 1, {args.prompt}+{new}, greedy", *gen_pair(ours, base, ids), new)
    measure(
        f"generate fp32, batch 1, {args.prompt}+{new}, chat sampling",
        *gen_pair(ours, base, ids, **CHAT_SAMPLING),
        new,
    )
    if not args.skip_extra:
        half = SpongeBob(cfg).eval()
        half.load_state_dict(ours.state_dict())
        half = half.to(torch.bfloat16)
        reference = generate(ours, ids, new, temperature=0)[0]  # the current (trained) weights
        got = generate(half, ids, new, temperature=0)[0]
        same = next((i for i, (a, b) in enumerate(zip(reference, got)) if a != b), len(got))
        print(f"bf16 greedy ids equal the fp32 ones for the first {same} of {new} tokens")
        run_base, _ = gen_pair(ours, base, ids)
        _, run_half = gen_pair(half, base, ids)
        measure("generate, batch 1, greedy: ours bf16 weights vs fp32", run_base, run_half, new)
        batch8 = torch.randint(0, cfg.vocab_size, (8, args.prompt), generator=g)
        measure(
            f"generate fp32, batch 8, {args.prompt}+{new}, greedy",
            *gen_pair(ours, base, batch8),
            8 * new,
        )
        long = torch.randint(0, cfg.vocab_size, (1, 768), generator=g)
        measure(f"generate fp32, batch 1, 768+{new}, greedy", *gen_pair(ours, base, long), new)

    print(
        "\n| workload | baseline tokens/s | ours tokens/s | speed-up (wall) | speed-up (CPU time) |"
    )
    print("|---|---|---|---|---|")
    for work, b, o, cpu_ratio in rows:
        print(f"| {work} | {b:,.1f} | {o:,.1f} | {o / b:.2f}x | {cpu_ratio:.2f}x |")
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
