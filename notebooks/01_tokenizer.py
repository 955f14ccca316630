# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 01 · Tokenizer
#
# Draft: the exported component first; the chapter around it follows.

# %%
#| default_exp tokenizer

# %%
#| export
"""Byte-level BPE tokenizer, the chat format and streaming decoding.

Defined in 01_tokenizer. The tokenizer follows the original project (SEED.md): Hugging Face
`tokenizers` BPE over the 256 byte symbols, ``ByteLevel`` pre-tokenizer without a prefix space,
``<unk>``/``<s>``/``</s>`` as ids 0/1/2. New here: the reasoning tags ``<think>``, ``</think>``,
``<answer>``, ``</answer>`` are single special tokens (ids 3..6), the chat template is rendered by
plain Python (and saved as an equivalent Jinja template for `transformers`), the default system
prompt names this model, and a declared special token that is not in the vocabulary is an error.

    tok = train_tokenizer("pretrain.jsonl", vocab_size=6400, out_dir="tokenizer")
    tok = load_tokenizer("tokenizer")          # also loads the original's released folder
    ids = tok.encode(tok.apply_chat_template([{"role": "user", "content": "Hi!"}]))
"""

from __future__ import annotations

import codecs
import hashlib
import itertools
import json
import os
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

SPECIAL_TOKENS = ["<unk>", "<s>", "</s>"]  # ids 0, 1, 2: unk (also pad), bos, eos
REASONING_TOKENS = ["<think>", "</think>", "<answer>", "</answer>"]  # ids 3..6 in our tokenizers
DEFAULT_SYSTEM_PROMPT = (
    "You are SpongeBob, a small helpful assistant built in the SpongeBob course."
)
BOS, EOS = SPECIAL_TOKENS[1], SPECIAL_TOKENS[2]

# %%
#| export
def byte_to_unicode() -> dict[int, str]:
    """GPT-2's table from the 256 byte values to 256 printable characters. Defined in 01_tokenizer.

    Printable Latin-1 bytes map to themselves; the other 68 (controls, space, ...) map to
    ``chr(256 + n)`` in byte order, so the space 0x20 becomes ``'Ġ'`` and ``'\\n'`` becomes ``'Ċ'``.
    This is the alphabet of the ``ByteLevel`` pre-tokenizer: every token is a string over it.
    """
    keep = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAC + 1), *range(0xAE, 0xFF + 1)]
    table, extra = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table

# %%
#| export
def iter_jsonl_texts(path: str | os.PathLike, field: str = "text") -> Iterator[str]:
    """Stream the string ``field`` of each line of a JSONL file. Defined in 01_tokenizer.

    One line is in memory at a time (the real ``pretrain.jsonl`` is 1.6 GB). Blank lines are
    skipped. A line that is not UTF-8, not JSON, or not an object with a string ``field`` raises
    ``ValueError("FILE:LINE: ...")``.
    """
    path = Path(path)
    with path.open("rb") as f:
        for n, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8")
                obj = json.loads(line) if line.strip() else None
            except UnicodeDecodeError as e:
                raise ValueError(f"{path}:{n}: not valid UTF-8 ({e.reason})") from None
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{n}: not valid JSON ({e.msg})") from None
            if obj is None:
                continue
            if not isinstance(obj, dict) or not isinstance(obj.get(field), str):
                raise ValueError(f"{path}:{n}: expected a JSON object with a string {field!r}")
            yield obj[field]

# %%
#| export
def train_bpe(
    texts: Iterable[str], vocab_size: int = 6400, special_tokens: Sequence[str] | None = None
) -> SpongeTokenizer:
    """Train a byte-level BPE tokenizer on an iterable of strings. Defined in 01_tokenizer.

    ``special_tokens`` (default ``SPECIAL_TOKENS + REASONING_TOKENS``) get ids ``0..k-1`` in order
    and are matched whole in any input text. The vocabulary starts from the 256 byte symbols, so
    no text is ever unknown; training stops early if the corpus has no more pairs to merge.
    """
    specials = list(SPECIAL_TOKENS + REASONING_TOKENS if special_tokens is None else special_tokens)
    if vocab_size < 256 + len(specials):
        raise ValueError(f"vocab_size must be >= 256 + {len(specials)} specials, got {vocab_size}")
    tok = Tokenizer(models.BPE(unk_token=specials[0]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return SpongeTokenizer(tok, unk_token=specials[0])

# %%
#| export
def train_tokenizer(
    input_path: str | os.PathLike,
    vocab_size: int = 6400,
    out_dir: str | os.PathLike | None = None,
    *,
    special_tokens: Sequence[str] | None = None,
    max_lines: int | None = None,
) -> SpongeTokenizer:
    """Train on the ``"text"`` field of a JSONL file, streaming; save to ``out_dir`` if given.

    Defined in 01_tokenizer. ``max_lines`` trains on the first lines only (quick experiments).
    """
    texts = iter_jsonl_texts(input_path)
    if max_lines is not None:
        texts = itertools.islice(texts, max_lines)
    tok = train_bpe(texts, vocab_size, special_tokens)
    if out_dir is not None:
        tok.save(out_dir)
    return tok

# %%
#| export
def render_chat(messages: Sequence[dict], system_prompt: str = DEFAULT_SYSTEM_PROMPT) -> str:
    """Render a conversation in the original's chat format. Defined in 01_tokenizer.

    ``<s>system\\n{system}</s>\\n<s>user\\n{user}</s>\\n<s>assistant\\n{assistant}</s>\\n...``.
    A first message with role ``system`` gives the system prompt, else ``system_prompt`` is used.
    Every user turn is followed by ``<s>assistant\\n``, so a conversation that ends with a user
    turn is already a generation prompt. Other roles, or non-string contents, raise ``ValueError``.
    """
    msgs = list(messages)
    system = system_prompt
    if msgs and msgs[0].get("role") == "system":
        system, msgs = msgs[0].get("content"), msgs[1:]
    parts = [f"{BOS}system\n{system}{EOS}\n"]
    for i, m in enumerate(msgs):
        role, content = m.get("role"), m.get("content")
        if not isinstance(content, str) or not isinstance(system, str):
            raise ValueError(f"message {i}: content must be a string")
        if role == "user":
            parts.append(f"{BOS}user\n{content}{EOS}\n{BOS}assistant\n")
        elif role == "assistant":
            parts.append(f"{content}{EOS}\n")
        else:
            raise ValueError(f"message {i}: role must be 'user' or 'assistant', got {role!r}")
    return "".join(parts)

# %%
#| export
def chat_template_jinja(system_prompt: str = DEFAULT_SYSTEM_PROMPT) -> str:
    """The Jinja form of `render_chat`, for ``tokenizer_config.json``. Defined in 01_tokenizer.

    `transformers`' ``apply_chat_template`` renders exactly `render_chat`'s string with it; its
    ``add_generation_prompt`` flag changes nothing, since ``<s>assistant\\n`` follows every user turn.
    """
    default = json.dumps(system_prompt, ensure_ascii=False)  # a valid Jinja string literal
    return (
        "{%- if messages and messages[0]['role'] == 'system' -%}"
        "{%- set system = messages[0]['content'] -%}{%- set turns = messages[1:] -%}"
        f"{{%- else -%}}{{%- set system = {default} -%}}{{%- set turns = messages -%}}"
        "{%- endif -%}"
        "{{- '<s>system\\n' + system + '</s>\\n' -}}"
        "{%- for m in turns -%}"
        "{%- if m['role'] == 'user' -%}{{- '<s>user\\n' + m['content'] + '</s>\\n<s>assistant\\n' -}}"
        "{%- elif m['role'] == 'assistant' -%}{{- m['content'] + '</s>\\n' -}}"
        "{%- else -%}{{- raise_exception('role must be user or assistant, got ' + m['role']) -}}"
        "{%- endif -%}{%- endfor -%}"
    )

# %%
#| export
class SpongeTokenizer:
    """A byte-level BPE `tokenizers.Tokenizer` plus the chat format. Defined in 01_tokenizer.

    ``encode``/``decode`` round-trip any string exactly; special tokens written in the text (such
    as ``<s>`` in a rendered chat) become their single ids. ``pad_id`` is the unk id, as in the
    original. Build one with `train_tokenizer`, `train_bpe` or `load_tokenizer`.
    """

    def __init__(
        self,
        tokenizer: Tokenizer,
        *,
        unk_token: str = "<unk>",
        bos_token: str = BOS,
        eos_token: str = EOS,
        pad_token: str | None = None,
        default_system_prompt: str = DEFAULT_SYSTEM_PROMPT,
    ):
        self.tokenizer = tokenizer
        self.default_system_prompt = default_system_prompt
        self.unk_token, self.bos_token, self.eos_token = unk_token, bos_token, eos_token
        self.pad_token = pad_token or unk_token
        ids = [tokenizer.token_to_id(t) for t in (unk_token, bos_token, eos_token, self.pad_token)]
        missing = [
            t for t, i in zip((unk_token, bos_token, eos_token, self.pad_token), ids) if i is None
        ]
        if missing:  # the original declared <unk> but trained <ukn> (SEED.md defect 10)
            raise ValueError(f"declared special tokens {missing} are not in the vocabulary")
        self.unk_id, self.bos_id, self.eos_id, self.pad_id = ids
        self._bytes: list[bytes] | None = None

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size(with_added_tokens=True)

    def __len__(self) -> int:
        return self.vocab_size

    def __repr__(self) -> str:
        return f"SpongeTokenizer(vocab_size={self.vocab_size}, specials={self.special_tokens})"

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [e.ids for e in self.tokenizer.encode_batch(list(texts), add_special_tokens=False)]

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = False) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def token_to_id(self, token: str) -> int | None:
        return self.tokenizer.token_to_id(token)

    def id_to_token(self, token_id: int) -> str | None:
        return self.tokenizer.id_to_token(token_id)

    @property
    def special_tokens(self) -> list[str]:
        added = self.tokenizer.get_added_tokens_decoder()
        return [added[i].content for i in sorted(added) if added[i].special]

    @property
    def reasoning_ids(self) -> dict[str, int]:
        """Ids of the reasoning tags that are single special tokens ({} for the original's)."""
        return {t: self.token_to_id(t) for t in REASONING_TOKENS if t in self.special_tokens}

    def token_bytes(self, token_id: int) -> bytes:
        """The raw bytes a token stands for (possibly part of a UTF-8 character)."""
        if self._bytes is None:
            inverse = {c: b for b, c in byte_to_unicode().items()}
            self._bytes = []
            for i in range(self.vocab_size):
                tok = self.id_to_token(i) or ""
                if all(c in inverse for c in tok):
                    self._bytes.append(bytes(inverse[c] for c in tok))
                else:  # an added token written in plain text, as `decoders.ByteLevel` does
                    self._bytes.append(tok.encode("utf-8"))
        return self._bytes[token_id]

    def apply_chat_template(
        self, messages: Sequence[dict], add_generation_prompt: bool = True
    ) -> str:
        """`render_chat` with this tokenizer's default system prompt.

        ``add_generation_prompt`` is accepted for `transformers` compatibility and changes nothing:
        the format already ends every user turn with ``<s>assistant\\n``.
        """
        return render_chat(messages, self.default_system_prompt)

    @property
    def chat_template(self) -> str:
        return chat_template_jinja(self.default_system_prompt)

    def save(self, out_dir: str | os.PathLike) -> Path:
        return save_tokenizer(self, out_dir)

# %%
#| export
def _write_atomic(path: Path, text: str) -> None:
    """Write a file so that readers never see half of it (another process may be loading it)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def save_tokenizer(tok: SpongeTokenizer, out_dir: str | os.PathLike) -> Path:
    """Save ``tokenizer.json`` + ``tokenizer_config.json`` (Hugging Face layout). Defined in 01_tokenizer.

    The folder loads with `load_tokenizer`, ``tokenizers.Tokenizer.from_file`` and
    ``transformers.AutoTokenizer.from_pretrained``; the config carries the chat template as Jinja.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    extra = [
        t for t in tok.special_tokens if t not in {tok.unk_token, tok.bos_token, tok.eos_token}
    ]
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "unk_token": tok.unk_token,
        "bos_token": tok.bos_token,
        "eos_token": tok.eos_token,
        "pad_token": tok.pad_token,
        "additional_special_tokens": extra,
        "add_bos_token": False,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "default_system_prompt": tok.default_system_prompt,
        "chat_template": tok.chat_template,
    }
    _write_atomic(out / "tokenizer.json", tok.tokenizer.to_str(pretty=True))
    _write_atomic(out / "tokenizer_config.json", json.dumps(config, ensure_ascii=False, indent=2))
    return out

# %%
#| export
def _token_name(value) -> str | None:
    """A special token from a config: a string, or an AddedToken dict ``{"content": ...}``."""
    return value.get("content") if isinstance(value, dict) else value


def load_tokenizer(path: str | os.PathLike) -> SpongeTokenizer:
    """Load a tokenizer folder (``tokenizer.json`` + optional ``tokenizer_config.json``).

    Defined in 01_tokenizer. Works for our folders and for the original's released one (vocab
    6400, no reasoning tokens). Chats always render with `render_chat`; the system prompt comes
    from our config's ``default_system_prompt``, else `DEFAULT_SYSTEM_PROMPT` (the original's
    template would name another model: SEED.md defect 10).
    """
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    file = folder / "tokenizer.json" if path.is_dir() else path
    if not file.exists():
        raise FileNotFoundError(f"no tokenizer.json in {folder}")
    config_file = folder / "tokenizer_config.json"
    config = json.loads(config_file.read_text(encoding="utf-8")) if config_file.exists() else {}
    names = {k: _token_name(config.get(f"{k}_token")) for k in ("unk", "bos", "eos", "pad")}
    return SpongeTokenizer(
        Tokenizer.from_file(str(file)),
        unk_token=names["unk"] or SPECIAL_TOKENS[0],
        bos_token=names["bos"] or BOS,
        eos_token=names["eos"] or EOS,
        pad_token=names["pad"],
        default_system_prompt=config.get("default_system_prompt", DEFAULT_SYSTEM_PROMPT),
    )

# %%
#| export
class StreamDecoder:
    """Turn a stream of token ids into text, one whole character at a time. Defined in 01_tokenizer.

    A byte-level token may end in the middle of a UTF-8 character (a CJK character is 3 bytes, an
    emoji 4); `put` keeps those bytes until the character is complete, so it never returns half
    a character. The concatenation of every `put` and the final `flush` equals
    ``tokenizer.decode(all_ids)``.
    """

    def __init__(self, tokenizer: SpongeTokenizer, skip_special_tokens: bool = False):
        self.tokenizer = tokenizer
        self.skip = (
            set(tokenizer.tokenizer.get_added_tokens_decoder()) if skip_special_tokens else set()
        )
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def put(self, token_id: int) -> str:
        """Add one token; return the text it completes (often ``""`` inside a character)."""
        if token_id in self.skip:
            return ""
        return self._utf8.decode(self.tokenizer.token_bytes(token_id))

    def flush(self) -> str:
        """End of stream: return what is left (an incomplete character becomes U+FFFD)."""
        text = self._utf8.decode(b"", final=True)
        self._utf8.reset()
        return text

# %%
#| export
TOKENIZER_RECIPE = "bytelevel-bpe-v1"  # bump when train_bpe changes, to retrain cached tokenizers


def _fingerprint(data_file: Path, vocab_size: int) -> str:
    h = hashlib.sha256(f"{TOKENIZER_RECIPE}|{vocab_size}|".encode())
    with data_file.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def course_tokenizer(vocab_size: int = 2048, seed: int = 0) -> SpongeTokenizer:
    """The tokenizer every later chapter uses, trained on the embedded world's ``pretrain.jsonl``.

    Defined in 01_tokenizer. Cached in ``artifacts_dir("tokenizer", ...)`` next to a fingerprint
    of the data and the recipe; retrained (a few seconds) when missing or stale.
    """
    from spongebob.runtime import artifacts_dir
    from spongebob.world import sample_dir

    data = Path(sample_dir(seed)) / "pretrain.jsonl"
    folder = artifacts_dir("tokenizer", f"world{seed}-bpe{vocab_size}")
    stamp = folder / "fingerprint.txt"
    fingerprint = _fingerprint(data, vocab_size)
    if stamp.exists() and stamp.read_text().strip() == fingerprint:
        return load_tokenizer(folder)
    tok = train_tokenizer(data, vocab_size=vocab_size, out_dir=folder)
    _write_atomic(stamp, fingerprint + "\n")
    return tok
