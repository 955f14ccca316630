# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 01 · The tokenizer: solutions to the exercises
#
# Each solution fills the stub of [the chapter](../01_tokenizer.ipynb) and runs the same check.
# The setup rebuilds what the checks use: the toy string, the course tokenizer, and the held-out
# split of the world's pretraining lines.

# %%
import re
from collections import Counter

from spongebob.tokenizer import iter_jsonl_texts, train_bpe
from spongebob.world import course_tokenizer, sample_dir

toy = "krabby patty, krabby patties, crabby patrons pat the patty"
tok = course_tokenizer()
lines = list(iter_jsonl_texts(sample_dir() / "pretrain.jsonl"))


def language(text: str) -> str:
    """'zh' if the text has a CJK character, 'en' if it has English words, else 'other'."""
    if re.search("[\u4e00-\u9fff]", text):
        return "zh"
    return "en" if re.search("[A-Za-z]{2}", text) else "other"


held = set(range(0, len(lines), 10))
train_lines = [t for k, t in enumerate(lines) if k not in held]
test_zh = [t for k, t in enumerate(lines) if k in held and language(t) == "zh"]


def chars_per_token(tokenizer, texts) -> float:
    return sum(map(len, texts)) / sum(map(len, tokenizer.encode_batch(texts)))


# %% [markdown]
# ## Exercise 1: UTF-8 length by hand
#
# The code point's range decides the length: below U+0080 one byte, below U+0800 two, below
# U+10000 three, else four.

# %%
def utf8_length(ch: str) -> int:
    cp = ord(ch)
    if cp < 0x80:
        return 1
    if cp < 0x800:
        return 2
    if cp < 0x10000:
        return 3
    return 4


# %%
try:
    samples = "A~\x00\x7f\x80éΩ߿ࠀ海，\uffff𐀀🍍\U0010ffff"
    got = [utf8_length(c) for c in samples]
except NotImplementedError:
    print("Exercise 1: not attempted yet")
except NameError as err:  # a name from the chapter is missing: run it first
    print(f"Exercise 1: run the chapter's cells above first ({err})")
else:
    wrong = [(hex(ord(c)), n) for c, n in zip(samples, got) if n != len(c.encode("utf-8"))]
    assert not wrong, (
        f"Exercise 1: wrong lengths for code points {wrong}. Hint: the table's limits are "
        "0x7F (1 byte), 0x7FF (2), 0xFFFF (3), and up to 0x10FFFF (4); compare with <="
    )
    print("Exercise 1: correct")

# %% [markdown]
# ## Exercise 2: BPE inside words
#
# Count each distinct piece once, with its frequency as weight; pairs are counted and merged
# inside pieces only, so every token lies inside one piece (a run of spaces is a piece too, so
# `"  "` would be a legitimate token).

# %%
def merge(ids: list[int], pair: tuple[int, int], new_id: int) -> list[int]:
    """The chapter's draft: replace non-overlapping occurrences of `pair`, left to right."""
    out, i = [], 0
    while i < len(ids):
        if i + 1 < len(ids) and (ids[i], ids[i + 1]) == pair:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def train_bpe_words(text: str, n_merges: int) -> list[bytes]:
    pieces = re.findall(r" ?\w+| ?[^\w\s]+|\s+", text)
    words = Counter(tuple(p.encode("utf-8")) for p in pieces)  # piece (as ids) -> frequency
    vocab = {i: bytes([i]) for i in range(256)}
    learned = []
    for k in range(n_merges):
        counts = Counter()
        for word, freq in words.items():
            for pair in zip(word, word[1:]):
                counts[pair] += freq
        if not counts or counts.most_common(1)[0][1] < 2:
            break
        pair = counts.most_common(1)[0][0]
        new_id = 256 + k
        vocab[new_id] = vocab[pair[0]] + vocab[pair[1]]
        learned.append(vocab[new_id])
        words = Counter({tuple(merge(list(w), pair, new_id)): f for w, f in words.items()})
    return learned


# %%
try:
    learned = train_bpe_words(toy, 12)
except NotImplementedError:
    print("Exercise 2: not attempted yet")
except NameError as err:  # a name from the chapter is missing: run it first
    print(f"Exercise 2: run the chapter's cells above first ({err})")
else:
    print(learned)
    pieces = [p.encode() for p in re.findall(r" ?\w+| ?[^\w\s]+|\s+", toy)]
    crossing = [t for t in learned if not any(t in p for p in pieces)]
    assert not crossing, (
        f"Exercise 2: {crossing} cross a piece boundary. Hint: count pairs within each piece "
        "(weighted by Counter(pieces)), never across two pieces"
    )
    assert 8 <= len(learned) <= 12 and b" pat" in learned and b"rabby" in learned, (
        "Exercise 2: expected 8 to 12 merges including b' pat' and b'rabby'. Hint: return the "
        "bytes of each new token (the two merged parts joined), in the order learned"
    )
    print("Exercise 2: correct")

# %% [markdown]
# ## Exercise 3: who pays for the training mix?
#
# The training lines without Chinese are the English ones and the equations. Without Chinese in
# the training text, no merge ever joins the bytes of a Chinese character, so each stays 3 tokens,
# one per byte; only the digits and ASCII in the Chinese lines lift the ratio above 1/3. The mixed tokenizer spends part of its vocabulary on Chinese and gets about three times
# more Chinese per token: the languages in the training mix decide who pays in sequence length.

# %%
def chinese_cpt_english_only(vocab_size: int = 1024) -> float:
    english_only = [t for t in train_lines if language(t) != "zh"]
    return chars_per_token(train_bpe(english_only, vocab_size=vocab_size), test_zh)


# %%
try:
    only_en = chinese_cpt_english_only()
except NotImplementedError:
    print("Exercise 3: not attempted yet")
except NameError as err:  # a name from the chapter is missing: run it first
    print(f"Exercise 3: run the chapter's cells above first ({err})")
else:
    mixed_zh = chars_per_token(train_bpe(train_lines, vocab_size=1024), test_zh)
    print(f"Chinese chars/token: English-only {only_en:.2f} vs mixed {mixed_zh:.2f}")
    assert only_en < 0.6 * mixed_zh, (
        f"Exercise 3: {only_en:.2f} is not well below the mixed {mixed_zh:.2f}. Hint: train with "
        "train_bpe on the lines whose language(t) != 'zh', then measure chars_per_token on test_zh"
    )
    print("Exercise 3: correct")

# %% [markdown]
# ## Exercise 4: a stream decoder without `codecs`
#
# Keep a byte buffer; its first byte says how long the next character is; emit it once that many
# bytes have arrived.

# %%
def stream_chars(tokenizer, ids):
    buffer = b""
    for i in ids:
        buffer += tokenizer.token_bytes(i)
        while buffer:
            lead = buffer[0]
            if lead < 0x80:
                n = 1
            elif lead >> 5 == 0b110:
                n = 2
            elif lead >> 4 == 0b1110:
                n = 3
            else:
                n = 4
            if len(buffer) < n:
                break  # wait for the rest of this character
            yield buffer[:n].decode("utf-8")
            buffer = buffer[n:]


# %%
try:
    text = "SpongeBob 海绵宝宝 🍍🦀 lives at 124 Conch Street. 蟹老板：钱！"
    chars = list(stream_chars(tok, tok.encode(text)))
except NotImplementedError:
    print("Exercise 4: not attempted yet")
except NameError as err:  # a name from the chapter is missing: run it first
    print(f"Exercise 4: run the chapter's cells above first ({err})")
else:
    assert "".join(chars) == text and all(len(c) == 1 for c in chars), (
        f"Exercise 4: got {chars[:8]}... Hint: collect bytes in a buffer; while the buffer holds "
        "a whole character (its lead byte tells the length), yield it decoded and drop its bytes"
    )
    print("Exercise 4: correct")
