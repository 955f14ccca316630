# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 04 · The model: solutions to the exercises
#
# Each solution fills a stub of [the chapter](../04_model.ipynb) and runs the same self-check. The
# setup rebuilds the two objects the checks use: the tiny configuration and the freshly
# initialised tiny `model`.

# %%
import torch

from spongebob.config import ModelConfig
from spongebob.generate import generate
from spongebob.model import SpongeBob, count_parameters
from spongebob.runtime import seed_everything

tiny = ModelConfig.preset("tiny")
seed_everything(1337)
model = SpongeBob(tiny).eval()

# %% [markdown]
# **Exercise 1.** Per layer: `wq` and `wo` are `dim × dim`, `wk` and `wv` are
# `(n_kv_heads · head_dim) × dim`, the SwiGLU has three `dim × hidden` matrices, and two norms of
# `dim`. Add the embedding (tied, so counted once) and the final norm.


# %%
def param_count(cfg: ModelConfig) -> int:
    kv_dim = cfg.n_kv_heads * cfg.head_dim
    attention = 2 * cfg.dim * cfg.dim + 2 * cfg.dim * kv_dim
    feed_forward = 3 * cfg.dim * cfg.ffn_hidden_dim
    norms = 2 * cfg.dim
    return cfg.vocab_size * cfg.dim + cfg.n_layers * (attention + feed_forward + norms) + cfg.dim


# %%
try:
    odd = ModelConfig(dim=96, n_layers=3, n_heads=6, n_kv_heads=3, vocab_size=1000, hidden_dim=200)
    configs = (ModelConfig(), ModelConfig.preset("seed-gqa"), tiny, odd)
    got = [param_count(c) for c in configs]
except NotImplementedError:
    print("Exercise 1: not attempted yet")
except NameError as err:  # a name from the chapter is missing: run it first
    print(f"Exercise 1: run the chapter's cells above first ({err})")
else:
    for c, n in zip(configs, got):
        want = count_parameters(SpongeBob(c))
        assert n == want, (
            f"Exercise 1: {n:,} != {want:,} for {c}. Hint: count the tied embedding once, "
            "wk and wv with n_kv_heads * head_dim rows, and the norms' gains (2 per layer + 1)"
        )
    print("Exercise 1: correct")

# %% [markdown]
# **Exercise 2.** Compare each probability with `min_p` times the row's largest one; the top token
# always survives, and a flat distribution keeps everything.


# %%
def min_p_filter(logits: torch.Tensor, min_p: float) -> torch.Tensor:
    probs = logits.softmax(dim=-1)  # (B, V)
    keep = probs >= min_p * probs.max(dim=-1, keepdim=True).values
    return logits.masked_fill(~keep, float("-inf"))


# %%
try:
    lg = torch.tensor([[0.5, 0.3, 0.15, 0.05], [0.25, 0.25, 0.25, 0.25]]).log()
    out = min_p_filter(lg, 0.4)
except NotImplementedError:
    print("Exercise 2: not attempted yet")
except NameError as err:  # a name from the chapter is missing: run it first
    print(f"Exercise 2: run the chapter's cells above first ({err})")
else:
    kept = torch.isfinite(out).tolist()
    assert kept == [[True, True, False, False], [True] * 4], (
        f"Exercise 2: kept {kept}. Hint: compare softmax probabilities (not logits) with "
        "min_p * the largest probability of the same row (keepdim=True)"
    )
    torch.testing.assert_close(
        out[0, :2], lg[0, :2], msg=lambda m: f"Exercise 2: kept logits must not change. {m}"
    )
    print("Exercise 2: correct")

# %% [markdown]
# **Exercise 3.** Feed prompt + answer without its last token; the target at position `t` is token
# `t + 1`. The first `len(prompt) - 1` targets are prompt tokens, so they get `-100`. Both parts
# must be non-empty: the first answer token is predicted from the last prompt token (with an empty
# prompt, `len(prompt) - 1 = -1` would silently mask the wrong targets).


# %%
def answer_loss(model, prompt_ids: list[int], answer_ids: list[int]) -> float:
    if not prompt_ids or not answer_ids:
        raise ValueError("answer_loss needs at least one prompt token and one answer token")
    ids = torch.tensor([prompt_ids + answer_ids])  # (1, T)
    targets = ids[:, 1:].clone()  # (1, T - 1)
    targets[:, : len(prompt_ids) - 1] = -100  # no loss on predicting the prompt itself
    with torch.no_grad():
        return model(ids[:, :-1], targets).loss.item()


# %%
try:
    p_ids, a_ids = [5, 9, 13, 2, 7], [40, 41, 42]
    got = answer_loss(model, p_ids, a_ids)
except NotImplementedError:
    print("Exercise 3: not attempted yet")
except NameError as err:  # a name from the chapter is missing: run it first
    print(f"Exercise 3: run the chapter's cells above first ({err})")
else:
    with torch.no_grad():
        logp = model(torch.tensor([p_ids + a_ids])).logits[0].log_softmax(-1)  # (T, V)
    expected = -sum(logp[len(p_ids) - 1 + i, a].item() for i, a in enumerate(a_ids)) / len(a_ids)
    assert abs(got - expected) < 1e-4, (
        f"Exercise 3: {got:.4f} != {expected:.4f}. Hint: the token at position t is predicted "
        "from position t - 1, so targets are the inputs shifted by one, -100 over the prompt"
    )
    print("Exercise 3: correct")

# %%
for bad in (([], [40, 41]), ([5, 9], [])):
    try:
        answer_loss(model, *bad)
    except ValueError as e:
        print("refused:", e)
    else:
        raise AssertionError(f"answer_loss accepted {bad}")

# %% [markdown]
# **Exercise 4.** For each row, take its last `n - 1` tokens; every earlier place where the same
# `n - 1` tokens occur names a token that followed them, and that token is banned now.


# %%
def no_repeat_ngram(n: int):
    def processor(tokens: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        logits = logits.clone()
        for b, row in enumerate(tokens.tolist()):
            prefix = row[len(row) - (n - 1) :] if n > 1 else []
            banned = {
                row[i + n - 1] for i in range(len(row) - n + 1) if row[i : i + n - 1] == prefix
            }
            logits[b, sorted(banned)] = float("-inf")
        return logits

    return processor


# %%
def has_repeated_ngram(seq, n):
    grams = [tuple(seq[i : i + n]) for i in range(len(seq) - n + 1)]
    return len(grams) != len(set(grams))


try:
    start = [7, 8, 9, 7, 8]
    fixed = generate(model, start, 30, temperature=0, logits_processor=no_repeat_ngram(3))[0]
except NotImplementedError:
    print("Exercise 4: not attempted yet")
except NameError as err:  # a name from the chapter is missing: run it first
    print(f"Exercise 4: run the chapter's cells above first ({err})")
else:
    plain = generate(model, start, 30, temperature=0)[0]
    assert len(fixed) == 30 and not has_repeated_ngram(start + fixed, 3), (
        f"Exercise 4: a 3-gram repeats in {start + fixed}. Hint: for each row, look up the last "
        "n - 1 tokens among all earlier (n - 1)-grams and forbid each token that followed one"
    )
    print("repeats without the processor:", has_repeated_ngram(start + plain, 3))
    print("Exercise 4: correct")
