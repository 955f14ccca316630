# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 05 · Data: solutions to the exercises
#
# Each solution fills a stub of [the chapter](../05_data.ipynb) and runs the same self-check. The
# setup rebuilds what the checks use: the course tokenizer and the lengths of the world's SFT
# conversations (`chat_lens`).

# %%
import numpy as np
import torch

from spongebob.data import ChatEncoder, PreparedData, grouped_order, prepare
from spongebob.runtime import artifacts_dir
from spongebob.world import course_tokenizer, sample_dir

tok = course_tokenizer()
folder = artifacts_dir("prepared", "world0-bpe2048", "sft_512")
prepare(sample_dir() / "sft_512.jsonl", tok, folder, max_seq_len=256)
chat_lens = np.diff(PreparedData(folder).offsets.astype(np.int64))

# %% [markdown]
# **Exercise 1.** Ours trains each reply and its `</s>`: $(6 + 1) + (9 + 1) = 17$. The original
# skips each reply's first token but trains the two tokens after the reply's `</s>`: the `\n` and,
# except after the last reply where the chat ends, the next turn's `<s>`: $(5 + 3) + (8 + 2) = 18$.
# Verified on a real chat built with replies of exactly 6 and 9 tokens:


# %%
def trained_counts(answer_token_counts: list[int]) -> tuple[int, int]:
    ours = sum(n + 1 for n in answer_token_counts)
    original = sum(n - 1 + 3 for n in answer_token_counts) - 1  # no <s> after the last reply
    return ours, original


def original_style_kinds(ids, tok):
    start_pat, end_pat = tok.encode("<s>assistant\n"), tok.encode("</s>\n")
    kinds, i = [0] * len(ids), 0
    while i < len(ids):
        if ids[i : i + len(start_pat)] == start_pat:
            start = end = i + len(start_pat)
            while end < len(ids) and ids[end : end + len(end_pat)] != end_pat:
                end += 1
            for j in range(start + 1, min(end + len(end_pat) + 1, len(ids))):
                kinds[j] = 1
            i = end + len(end_pat)
        else:
            i += 1
    return kinds


def reply_of(n_tokens: int) -> str:
    """A reply of exactly n tokens: repeat a word until the encoder agrees."""
    text = ""
    while len(tok.encode(text)) < n_tokens:
        text += " Gary"
    assert len(tok.encode(text)) == n_tokens
    return text


chat = [
    {"role": "user", "content": "Who?"},
    {"role": "assistant", "content": reply_of(6)},
    {"role": "user", "content": "And?"},
    {"role": "assistant", "content": reply_of(9)},
]
ids, kinds = ChatEncoder(tok).encode(chat)
measured = (sum(k > 0 for k in kinds[1:]), sum(original_style_kinds(ids, tok)[1:]))
print("measured (ours, original):", measured)
assert measured == trained_counts([6, 9])

# %%
try:
    got = trained_counts([6, 9])
except NotImplementedError:
    print("Exercise 1: not attempted yet")
except NameError as err:  # a name from the chapter is missing: run it first
    print(f"Exercise 1: run the chapter's cells above first ({err})")
else:
    assert got == (17, 18), (
        f"Exercise 1: {got}. Hint: ours trains each reply and its </s>; the original skips "
        "each reply's first token but trains the '\\n' after </s> and, mid-chat, the next <s>"
    )
    print("Exercise 1: correct")

# %% [markdown]
# **Exercise 2.** Cut into full batches, pad each to its longest row, count.


# %%
def padding_waste(lengths: list[int], batch_size: int) -> float:
    n = len(lengths) // batch_size * batch_size
    batches = [lengths[i : i + batch_size] for i in range(0, n, batch_size)]
    padded = sum(batch_size * max(b) for b in batches)
    return 1 - sum(sum(b) for b in batches) / padded


# %%
try:
    got = padding_waste([2, 4, 3, 3, 5], 2)
except NotImplementedError:
    print("Exercise 2: not attempted yet")
except NameError as err:  # a name from the chapter is missing: run it first
    print(f"Exercise 2: run the chapter's cells above first ({err})")
else:
    assert abs(got - 2 / 14) < 1e-9, (
        f"Exercise 2: {got:.4f} != {2 / 14:.4f}. Hint: batches [2, 4] and [3, 3] hold 2 pads "
        "in 4 * 2 + 3 * 2 = 14 slots; the last batch [5] is incomplete and dropped"
    )
    assert padding_waste([7, 7, 7], 3) == 0.0, "Exercise 2: equal lengths need no padding"
    print("Exercise 2: correct")

# %% [markdown]
# **Exercise 3.** Draw the permutation, regroup it with `grouped_order` (one rank: a global batch is
# one batch), cut it into batches, and divide the real tokens by the positions. The prediction to
# make first: a window of one batch only sorts rows *inside* each batch, which changes no batch's
# longest row, so it gives exactly the plain shuffle's share. Larger windows put rows of similar
# length together; the gain flattens once a window holds enough batches that neighbours in the
# sorted order differ by a token or two. The expected outcome, printed below: the share climbs
# steeply from window 1 to 10 and hardly moves after 100, the window `ChatLoader` is given in the
# chapter.


# %%
def share_for_window(lengths: np.ndarray, batch_size: int, window: int, seed: int) -> float:
    rng = np.random.default_rng(seed)
    order = grouped_order(rng.permutation(len(lengths)), lengths, batch_size, window, rng)
    n = len(order) // batch_size * batch_size
    batches = lengths[order[:n]].reshape(-1, batch_size)
    return batches.sum() / (batch_size * batches.max(1).sum())


# %%
def plain_share_of(lengths, batch_size, seed):  # plain shuffling, the same permutation
    order = np.random.default_rng(seed).permutation(len(lengths))
    b = lengths[order[: len(order) // batch_size * batch_size]].reshape(-1, batch_size)
    return b.sum() / (batch_size * b.max(1).sum())


try:
    shares = {w: share_for_window(chat_lens, 16, w, seed=0) for w in (1, 10, 100, 10_000)}
except NotImplementedError:
    print("Exercise 3: not attempted yet")
except NameError as err:  # a name from the chapter is missing: run it first
    print(f"Exercise 3: run the chapter's cells above first ({err})")
else:
    plain = plain_share_of(chat_lens, 16, seed=0)
    assert abs(shares[1] - plain) < 1e-9, (
        f"Exercise 3: window 1 gives {shares[1]:.4f}, plain shuffling {plain:.4f}. Hint: a window "
        "of one batch sorts inside each batch, which changes no batch's longest row"
    )
    assert shares[1] < shares[10] <= shares[100] <= shares[10_000] + 1e-9, (
        f"Exercise 3: {shares}. Hint: cut the grouped order into consecutive batches of "
        "batch_size and divide the real tokens by batch_size times each batch's longest row"
    )
    print("Exercise 3: correct;", {w: round(float(v), 3) for w, v in shares.items()})
print(
    f"Useful share: plain shuffling {plain:.1%}; windows of 1, 10, 100 and 10,000 batches: "
    + ", ".join(f"{v:.1%}" for v in shares.values())
)

# %% [markdown]
# **Exercise 4.** Number the documents in each row with a running count of `<s>` tokens; query $i$
# may attend key $j$ when $j \le i$ and both lie in the same document.


# %%
def document_mask(x: torch.Tensor, bos_id: int) -> torch.Tensor:
    doc = (x == bos_id).long().cumsum(dim=1)  # (B, T): document number of each position
    T = x.shape[1]
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    same = doc[:, :, None] == doc[:, None, :]  # (B, T, T)
    return (same & causal)[:, None]  # (B, 1, T, T)


# %%
try:
    xs = torch.tensor([[5, 1, 7, 8, 1, 9]])
    m = document_mask(xs, bos_id=1)[0, 0]
except NotImplementedError:
    print("Exercise 4: not attempted yet")
except NameError as err:  # a name from the chapter is missing: run it first
    print(f"Exercise 4: run the chapter's cells above first ({err})")
else:
    hint = (
        "Hint: number the documents with a cumulative sum of (x == bos_id); query i may see key "
        "j when j <= i and both carry the same number"
    )
    assert m.shape == (6, 6), f"Exercise 4: shape {tuple(m.shape)}, want (B, 1, T, T). {hint}"
    assert m[3].tolist() == [False, True, True, True, False, False], f"Exercise 4: row 3. {hint}"
    assert m[5].tolist() == [False] * 4 + [True, True] and m[0, 0], f"Exercise 4: row 5. {hint}"
    print("Exercise 4: correct")
