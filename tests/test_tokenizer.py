"""spongebob.tokenizer: special ids, exact round trips, streaming, and agreement with Hugging Face.

Tokenizers here are trained on a small generated corpus (a second or less each); the Hugging Face
checks load our saved folder with `tokenizers` and `transformers` and compare ids and chat renderings.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer, pre_tokenizers

from spongebob import tokenizer as T
from spongebob.tokenizer import (
    DEFAULT_SYSTEM_PROMPT,
    REASONING_TOKENS,
    SPECIAL_TOKENS,
    StreamDecoder,
    byte_to_unicode,
    iter_jsonl_texts,
    load_tokenizer,
    render_chat,
    train_bpe,
    train_tokenizer,
)

ROOT = Path(__file__).resolve().parents[1]
EN = ["SpongeBob", "Patrick", "Squidward", "Sandy", "Mr. Krabs", "Plankton", "Gary"]
ZH = ["海绵宝宝", "派大星", "章鱼哥", "珊迪", "蟹老板", "痞老板", "小蜗"]
FOOD = [("krabby patties", "蟹黄堡"), ("kelp shakes", "海带奶昔"), ("coral bits", "珊瑚脆片")]
MIXED = [
    "SpongeBob lives in a pineapple 🍍 under the sea.",
    "海绵宝宝住在比奇堡的菠萝屋里。",
    "<s>user\nHow old is Gary?</s>\n<s>assistant\n<think>\n3 + 4 = 7\n</think>\n<answer>\n7\n</answer></s>\n",
    "tabs\tand  double  spaces, \x00 nul, \r\n crlf, é, Ω, 𝔘, 👩‍👩‍👧",
    "I think <thinking> is not a tag, but <think> is.",
]


def make_corpus(n: int, seed: int = 0) -> list[str]:
    """Bilingual one-line facts and a few reasoning answers, deterministic."""
    rng = random.Random(seed)
    lines = []
    for i in range(n):
        j, k = rng.randrange(len(EN)), rng.randrange(len(FOOD))
        age = rng.randint(1, 99)
        if i % 3 == 0:
            lines.append(f"{ZH[j]}住在比奇堡，最喜欢吃{FOOD[k][1]}。{ZH[j]}今年{age}岁。")
        elif i % 3 == 1:
            lines.append(f"{EN[j]} lives in Bikini Bottom, loves {FOOD[k][0]} and is {age}.")
        else:
            lines.append(
                f"<think>\n{age} + {j} = {age + j}\n</think>\n<answer>\n{age + j}\n</answer>"
            )
    return lines


def write_jsonl(path: Path, lines: list[str]) -> Path:
    with path.open("w", encoding="utf-8") as f:
        for line in lines:
            f.write(json.dumps({"text": line}, ensure_ascii=False) + "\n")
    return path


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory) -> Path:
    return write_jsonl(tmp_path_factory.mktemp("corpus") / "pretrain.jsonl", make_corpus(1500))


@pytest.fixture(scope="module")
def tok(corpus_file):
    return train_tokenizer(corpus_file, vocab_size=600)


@pytest.fixture(scope="module")
def saved(tok, tmp_path_factory) -> Path:
    return tok.save(tmp_path_factory.mktemp("tok"))


@pytest.fixture(scope="module")
def hf(saved):
    transformers = pytest.importorskip("transformers")
    return transformers.AutoTokenizer.from_pretrained(str(saved))


# ---- vocabulary and special tokens -------------------------------------------------------------


def test_special_token_ids_are_0_to_6(tok):
    for i, name in enumerate(SPECIAL_TOKENS + REASONING_TOKENS):
        assert tok.token_to_id(name) == i and tok.id_to_token(i) == name
    assert (tok.unk_id, tok.bos_id, tok.eos_id, tok.pad_id) == (0, 1, 2, 0)
    assert tok.vocab_size == 600 == len(tok)
    assert tok.reasoning_ids == {"<think>": 3, "</think>": 4, "<answer>": 5, "</answer>": 6}


def test_reasoning_tags_encode_as_single_ids(tok):
    text = "<think>\n2 + 2 = 4\n</think>\n<answer>\n4\n</answer>"
    ids = tok.encode(text)
    assert [i for i in ids if i < 7] == [3, 4, 5, 6]
    for i, tag in enumerate(REASONING_TOKENS, start=3):
        assert tok.encode(tag) == [i]
        assert tok.encode(f"x{tag}y")[1] == i  # matched whole even when glued to other text


def test_without_reasoning_specials_the_tags_split_into_pieces(corpus_file):
    plain = train_tokenizer(corpus_file, vocab_size=600, special_tokens=SPECIAL_TOKENS)
    assert plain.token_to_id("<think>") is None and plain.reasoning_ids == {}
    ids = plain.encode("<think>")
    assert len(ids) >= 2 and plain.decode(ids) == "<think>"
    # the first piece is the plain "<", the same id as in "x<y" (SEED.md defect 5)
    assert plain.encode("<") == ids[:1] and ids[0] in plain.encode("x<y")


def test_byte_to_unicode_is_the_bytelevel_alphabet():
    table = byte_to_unicode()
    # the full mapping, against GPT-2's table as transformers ships it (in transformers 5 it lives
    # in convert_slow_tokenizer, the slow GPT-2 tokenizer module having gone)
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    assert table == bytes_to_unicode()
    assert sorted(table) == list(range(256))
    assert set(table.values()) == set(pre_tokenizers.ByteLevel.alphabet())
    assert len(set(table.values())) == 256
    assert table[ord(" ")] == "Ġ" and table[ord("\n")] == "Ċ" and table[ord("A")] == "A"
    assert all(c.isprintable() and not c.isspace() for c in table.values())


def test_vocab_size_below_the_byte_alphabet_is_an_error():
    with pytest.raises(ValueError, match="vocab_size"):
        train_bpe(["abc"], vocab_size=256)


def test_training_is_deterministic(corpus_file, tok):
    again = train_tokenizer(corpus_file, vocab_size=600)
    assert again.tokenizer.to_str() == tok.tokenizer.to_str()


# ---- round trips and streaming -----------------------------------------------------------------

cjk_emoji = st.sampled_from(
    list("海绵宝宝派大星。，！ 🍍😀👩‍👧\n\t\x00\x7féΩ𝔘") + SPECIAL_TOKENS + REASONING_TOKENS
)
any_text = st.one_of(st.text(), st.lists(st.one_of(cjk_emoji, st.text(max_size=3))).map("".join))


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(text=any_text)
def test_encode_decode_round_trips_any_unicode(tok, text):
    assert tok.decode(tok.encode(text)) == text


@pytest.mark.parametrize("text", MIXED)
def test_round_trip_mixed_examples(tok, text):
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert all(0 <= i < tok.vocab_size for i in ids)


@settings(max_examples=200, deadline=None)
@given(text=any_text)
def test_stream_decoder_emits_whole_characters_only(tok, text):
    ids = tok.encode(text)
    dec = StreamDecoder(tok)
    out = ""
    for i in ids:
        piece = dec.put(i)
        out += piece
        assert text.startswith(out)  # never half a character, never ahead of the text
        assert "\ufffd" not in piece or "\ufffd" in text
    out += dec.flush()
    assert out == text == tok.decode(ids)


@settings(max_examples=200, deadline=None)
@given(ids=st.lists(st.integers(0, 599), max_size=40))
def test_stream_decoder_matches_decode_on_arbitrary_ids(tok, ids):
    # arbitrary ids may form invalid UTF-8: both paths must replace it the same way (U+FFFD)
    dec = StreamDecoder(tok)
    assert "".join(dec.put(i) for i in ids) + dec.flush() == tok.decode(ids)
    skip = StreamDecoder(tok, skip_special_tokens=True)
    text = "".join(skip.put(i) for i in ids) + skip.flush()
    assert text == tok.decode(ids, skip_special_tokens=True)


def test_stream_decoder_holds_back_a_split_character(tok):
    text = "🍍"  # 4 bytes; rare in the corpus, so it is split into byte tokens
    ids = tok.encode(text)
    assert len(ids) > 1
    dec = StreamDecoder(tok)
    assert [dec.put(i) for i in ids] == [""] * (len(ids) - 1) + ["🍍"]
    dec.put(ids[0])  # an incomplete character at the end of the stream
    assert dec.flush() == "\ufffd"


# ---- Hugging Face folders ----------------------------------------------------------------------


def test_saved_folder_has_the_hf_layout(saved):
    assert sorted(p.name for p in saved.iterdir()) == ["tokenizer.json", "tokenizer_config.json"]
    cfg = json.loads((saved / "tokenizer_config.json").read_text(encoding="utf-8"))
    assert cfg["tokenizer_class"] == "PreTrainedTokenizerFast"
    assert (cfg["unk_token"], cfg["bos_token"], cfg["eos_token"], cfg["pad_token"]) == (
        "<unk>",
        "<s>",
        "</s>",
        "<unk>",
    )
    assert cfg["additional_special_tokens"] == REASONING_TOKENS
    assert isinstance(cfg["chat_template"], str) and "{%" in cfg["chat_template"]


@pytest.mark.parametrize("text", MIXED)
def test_saved_folder_gives_equal_ids_in_tokenizers_transformers_and_ours(tok, saved, hf, text):
    ours = tok.encode(text)
    assert Tokenizer.from_file(str(saved / "tokenizer.json")).encode(text).ids == ours
    assert load_tokenizer(saved).encode(text) == ours
    assert hf.encode(text) == ours
    assert hf.decode(ours) == text


def test_transformers_sees_the_same_special_ids(hf):
    assert (hf.unk_token_id, hf.bos_token_id, hf.eos_token_id, hf.pad_token_id) == (0, 1, 2, 0)
    assert len(hf) == 600
    assert [hf.convert_tokens_to_ids(t) for t in REASONING_TOKENS] == [3, 4, 5, 6]


SYS = {"role": "system", "content": "You are a crab."}
U1, A1 = (
    {"role": "user", "content": "Who lives in a pineapple?"},
    {"role": "assistant", "content": "SpongeBob!"},
)
U2 = {"role": "user", "content": "蟹老板喜欢什么？"}
A2 = {"role": "assistant", "content": "<think>\nmoney\n</think>\n<answer>\n钱\n</answer>"}
CONVERSATIONS = {
    "user": [U1],
    "system+user": [SYS, U1],
    "user+assistant": [U1, A1],
    "multi-turn": [U1, A1, U2, A2],
    "system+multi-turn-ending-with-user": [SYS, U1, A1, U2],
}


def test_render_chat_matches_the_seed_format():
    d = DEFAULT_SYSTEM_PROMPT
    assert render_chat([U1]) == (
        f"<s>system\n{d}</s>\n<s>user\nWho lives in a pineapple?</s>\n<s>assistant\n"
    )
    assert render_chat([SYS, U1, A1]) == (
        "<s>system\nYou are a crab.</s>\n<s>user\nWho lives in a pineapple?</s>\n"
        "<s>assistant\nSpongeBob!</s>\n"
    )
    assert render_chat([]) == f"<s>system\n{d}</s>\n"
    assert "SpongeBob" in d and "MiniMind" not in d


@pytest.mark.parametrize("name", list(CONVERSATIONS))
@pytest.mark.parametrize("gen", [True, False])
def test_transformers_renders_our_chat_template_identically(tok, hf, name, gen):
    conv = CONVERSATIONS[name]
    ours = tok.apply_chat_template(conv, add_generation_prompt=gen)
    assert hf.apply_chat_template(conv, tokenize=False, add_generation_prompt=gen) == ours
    got = hf.apply_chat_template(conv, tokenize=True, add_generation_prompt=gen)
    got = got if isinstance(got, list) else got["input_ids"]
    assert got == tok.encode(ours)


@pytest.mark.parametrize("content", [None, 7, ["a", "b"], {"text": "hi"}])
def test_render_chat_rejects_non_string_content(content):
    with pytest.raises(ValueError, match="message 1: content must be a string"):
        render_chat([U1, {"role": "assistant", "content": content}])
    with pytest.raises(ValueError, match="system prompt must be a string"):
        render_chat([{"role": "system", "content": content}, U1])


def test_unknown_roles_are_rejected(tok, hf):
    with pytest.raises(ValueError, match="role"):
        tok.apply_chat_template([{"role": "tool", "content": "x"}])
    with pytest.raises(Exception, match="role"):
        hf.apply_chat_template([{"role": "tool", "content": "x"}], tokenize=False)


def test_custom_default_system_prompt_survives_save_and_jinja(tok, tmp_path):
    transformers = pytest.importorskip("transformers")
    prompt = '你是"海绵宝宝" \\ {{ not jinja }} 🍍\nsecond line'
    custom = T.SpongeTokenizer(tok.tokenizer, default_system_prompt=prompt)
    folder = custom.save(tmp_path / "custom")
    again = load_tokenizer(folder)
    assert again.default_system_prompt == prompt
    expected = f"<s>system\n{prompt}</s>\n<s>user\nWho lives in a pineapple?</s>\n<s>assistant\n"
    assert again.apply_chat_template([U1]) == expected
    hf = transformers.AutoTokenizer.from_pretrained(str(folder))
    assert hf.apply_chat_template([U1], tokenize=False) == expected


ORIGINAL_SYSTEM = "你是 MiniMind，是一个有用的人工智能助手。"  # SEED.md


def _original_style_folder(tmp_path: Path, corpus_file: Path) -> Path:
    """A stand-in with the shape of the original's released folder (never its files): vocab
    without reasoning tokens, AddedToken-dict special tokens, its own Jinja template (written
    here from SEED.md's description) whose default system prompt is the Chinese sentence naming
    another model."""
    tok = train_tokenizer(corpus_file, vocab_size=600, special_tokens=SPECIAL_TOKENS)
    folder = tmp_path / "original"
    folder.mkdir()
    tok.tokenizer.save(str(folder / "tokenizer.json"))
    added = {
        str(i): {"content": t, "lstrip": False, "normalized": False, "rstrip": False}
        | {"single_word": False, "special": True}
        for i, t in enumerate(SPECIAL_TOKENS)
    }
    template = (
        "{% if messages[0]['role'] == 'system' %}{{ '<s>system\\n' + messages[0]['content'] + "
        f"'</s>\\n' }}}}{{% else %}}{{{{ '<s>system\\n{ORIGINAL_SYSTEM}</s>\\n' }}}}{{% endif %}}"
        "{% for message in messages %}{% if message['role'] == 'user' %}"
        "{{ '<s>user\\n' + message['content'] + '</s>\\n<s>assistant\\n' }}"
        "{% elif message['role'] == 'assistant' %}{{ message['content'] + '</s>' + '\\n' }}"
        "{% endif %}{% endfor %}"
    )
    config = {
        "add_bos_token": False,
        "add_eos_token": False,
        "added_tokens_decoder": added,
        "bos_token": {"__type": "AddedToken", "content": "<s>", "special": True},
        "eos_token": "</s>",
        "pad_token": "<unk>",
        "unk_token": "<unk>",
        "clean_up_tokenization_spaces": False,
        "legacy": True,
        "model_max_length": 32768,
        "tokenizer_class": "PreTrainedTokenizerFast",
        "chat_template": template,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    return folder


def test_original_style_folder_loads_and_renders_per_seed(tmp_path, corpus_file):
    folder = _original_style_folder(tmp_path, corpus_file)
    tok = load_tokenizer(folder)
    assert tok.vocab_size == 600 and tok.special_tokens == SPECIAL_TOKENS
    assert (tok.unk_id, tok.bos_id, tok.eos_id, tok.pad_id) == (0, 1, 2, 0)
    assert tok.reasoning_ids == {} and len(tok.encode("<think>")) > 1
    raw = Tokenizer.from_file(str(folder / "tokenizer.json"))
    for text in MIXED:
        assert tok.encode(text) == raw.encode(text).ids and tok.decode(tok.encode(text)) == text
    # its own template renders its chats: the SEED.md format with its Chinese default prompt
    assert tok.foreign_template is not None and tok.course_format
    assert tok.default_system_prompt == ORIGINAL_SYSTEM
    assert tok.apply_chat_template([U1, A1]) == (
        f"<s>system\n{ORIGINAL_SYSTEM}</s>\n<s>user\nWho lives in a pineapple?</s>\n"
        "<s>assistant\nSpongeBob!</s>\n"
    )
    # re-saving keeps its template (and loads as foreign again)
    again = load_tokenizer(tok.save(tmp_path / "resaved"))
    assert again.foreign_template == tok.foreign_template
    assert again.apply_chat_template([U1]) == tok.apply_chat_template([U1])


REASONED = {"role": "assistant", "content": "<think>\n3 + 4 = 7\n</think>\n<answer>\n7\n</answer>"}
FOREIGN_CHATS = {
    "no-system": [U1],
    "system": [SYS, U1],
    "multi-turn": [U1, A1, U2, A2, {"role": "user", "content": "海绵宝宝住在哪里？"}],
    "system-multi-turn": [SYS, U1, A1, U2],
    "reasoning": [U1, REASONED, U2],
    "reasoning-field": [U1, {"role": "assistant", "content": "7", "reasoning_content": "3+4"}, U2],
    "ends-with-reply": [U1, A1],
}
# A template in another format (ChatML-like, written here): it reads add_generation_prompt, a
# reasoning field and bos_token, loops with loop controls and uses tojson.
CHATML_LIKE = (
    "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'tool' %}{% continue %}{% endif %}"
    "<|{{ m['role'] }}|>\n{% if m.reasoning_content %}[{{ m.reasoning_content | tojson }}]"
    "{% endif %}{{ m['content'] }}<|end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


@pytest.mark.parametrize("name", list(FOREIGN_CHATS))
def test_a_foreign_folder_renders_and_tokenizes_as_in_transformers(tmp_path, corpus_file, name):
    transformers = pytest.importorskip("transformers", reason="needs the hf extra")
    from spongebob.data import ChatEncoder

    folder = _original_style_folder(tmp_path, corpus_file)
    tok, hf = load_tokenizer(folder), transformers.AutoTokenizer.from_pretrained(str(folder))
    conv = FOREIGN_CHATS[name]
    for gen in (True, False):
        text = hf.apply_chat_template(conv, tokenize=False, add_generation_prompt=gen)
        assert tok.apply_chat_template(conv, add_generation_prompt=gen) == text
    if conv[0]["role"] != "system":
        assert text.startswith(f"<s>system\n{ORIGINAL_SYSTEM}</s>\n")
    ids = hf.apply_chat_template(conv, tokenize=True, return_dict=False)
    # chapter 05's encoder (chat, eval and training masks) gives transformers' ids too
    assert ChatEncoder(tok).encode(conv)[0] == ids == tok.encode(text)


@pytest.mark.parametrize("where", ["config", "named-list", "jinja-file"])
def test_a_template_in_another_format_is_rendered_not_replaced(tmp_path, tok, where):
    transformers = pytest.importorskip("transformers", reason="needs the hf extra")
    folder = tok.save(tmp_path / "chatml")
    cfg_file = folder / "tokenizer_config.json"
    config = json.loads(cfg_file.read_text(encoding="utf-8"))
    if where == "config":
        config["chat_template"] = CHATML_LIKE
    elif where == "named-list":
        config["chat_template"] = [{"name": "default", "template": CHATML_LIKE}]
    else:  # newer transformers save it beside the config; the file wins over the config
        (folder / "chat_template.jinja").write_text(CHATML_LIKE, encoding="utf-8")
    cfg_file.write_text(json.dumps(config, ensure_ascii=False), encoding="utf-8")
    foreign, hf = load_tokenizer(folder), transformers.AutoTokenizer.from_pretrained(str(folder))
    assert foreign.foreign_template == CHATML_LIKE and not foreign.course_format
    tool = {"role": "tool", "content": "skipped"}
    for conv in [*FOREIGN_CHATS.values(), [U1, tool, A1]]:
        for gen in (True, False):
            want = hf.apply_chat_template(conv, tokenize=False, add_generation_prompt=gen)
            assert foreign.apply_chat_template(conv, add_generation_prompt=gen) == want
    assert foreign.apply_chat_template([U1], add_generation_prompt=True).endswith("<|assistant|>\n")


def test_our_own_folders_keep_our_template(tok, tmp_path):
    again = load_tokenizer(tok.save(tmp_path / "ours"))
    assert again.foreign_template is None and again.course_format
    assert again.default_system_prompt == DEFAULT_SYSTEM_PROMPT
    assert again.apply_chat_template([U1]) == render_chat([U1])
    # our Jinja template is recognised as the course format (its system prompt read back)
    assert T.template_system_prompt(T.chat_template_jinja("p q"), bos_token="<s>") == "p q"
    assert T.template_system_prompt(CHATML_LIKE, bos_token="<s>") is None


def test_a_foreign_template_error_is_a_value_error(tok):
    bad = T.SpongeTokenizer(tok.tokenizer, chat_template="{{ raise_exception('no tools here') }}")
    assert not bad.course_format
    with pytest.raises(ValueError, match="chat template: no tools here"):
        bad.apply_chat_template([U1])
    with pytest.raises(ValueError, match="chat template"):
        T.render_jinja_chat("{% for %}", [U1])


def test_declared_special_token_missing_from_vocab_is_an_error(tmp_path, corpus_file):
    # SEED.md defect 10: the original trained "<ukn>" but declared "<unk>"
    bad = train_tokenizer(corpus_file, vocab_size=300, special_tokens=["<ukn>", "<s>", "</s>"])
    assert bad.unk_id == 0  # train_bpe declares its own first special token as unk
    folder = tmp_path / "ukn"
    folder.mkdir()
    bad.tokenizer.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({"unk_token": "<unk>"}))
    with pytest.raises(ValueError, match="<unk>"):
        load_tokenizer(folder)


def test_load_tokenizer_accepts_the_json_file_and_reports_missing_folders(saved, tmp_path):
    assert load_tokenizer(saved / "tokenizer.json").encode(MIXED[1]) == load_tokenizer(
        saved
    ).encode(MIXED[1])
    with pytest.raises(FileNotFoundError):
        load_tokenizer(tmp_path)


# ---- JSONL input and the command line ----------------------------------------------------------


@pytest.mark.parametrize(
    "content, line, reason",
    [
        (b'{"text": "a"}\n{"text": "b"\n', 2, "not valid JSON"),
        (b'{"text": "a"}\n\n{"txt": "b"}\n', 3, "string 'text'"),
        (b'{"text": "a"}\n["text"]\n', 2, "string 'text'"),
        (b'{"text": 5}\n', 1, "string 'text'"),
        (b'{"text": "a"}\n{"text": "\xff"}\n', 2, "not valid UTF-8"),
    ],
)
def test_bad_jsonl_lines_name_the_file_and_line(tmp_path, content, line, reason):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=f"bad.jsonl:{line}: .*{reason}"):
        list(iter_jsonl_texts(path))
    with pytest.raises(ValueError, match=f"bad.jsonl:{line}: "):
        train_tokenizer(path, vocab_size=300)


def test_jsonl_reader_streams_and_skips_blank_lines(tmp_path):
    path = tmp_path / "ok.jsonl"
    path.write_text('{"text": "a"}\n\n  \n{"text": "海", "x": 1}\n', encoding="utf-8")
    assert list(iter_jsonl_texts(path)) == ["a", "海"]
    # blank lines still count: an error after them names the right line
    path.write_text('\n\t\n{"text": "a"}\n\n{"text": "b"\n', encoding="utf-8")
    with pytest.raises(ValueError, match="ok.jsonl:5: not valid JSON"):
        list(iter_jsonl_texts(path))


def test_jsonl_reader_reads_any_string_field(tmp_path):
    path = tmp_path / "qa.jsonl"
    rows = [{"question": "谁住在菠萝里？", "answer": "SpongeBob"}, {"question": "Gary?", "x": 1}]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    assert list(iter_jsonl_texts(path, field="question")) == ["谁住在菠萝里？", "Gary?"]
    with pytest.raises(ValueError, match="qa.jsonl:2: .*string 'answer'"):
        list(iter_jsonl_texts(path, field="answer"))


def test_jsonl_reader_is_the_world_reader(tmp_path):
    # one policy for every JSONL file: the tokenizer's reader and data.read_jsonl agree
    from spongebob.data import read_jsonl

    path = tmp_path / "same.jsonl"
    path.write_bytes(b'{"text": "a"}\n   \n{"text": "b"}\n{"text": "\xc3"}\n')
    with pytest.raises(ValueError, match="same.jsonl:4: not valid UTF-8") as ours:
        list(iter_jsonl_texts(path))
    with pytest.raises(ValueError, match="same.jsonl:4: not valid UTF-8") as world:
        list(read_jsonl(path))
    assert str(ours.value) == str(world.value)


def test_max_lines_trains_on_a_prefix(corpus_file, tmp_path):
    lines = make_corpus(1500)[:300]
    a = train_tokenizer(corpus_file, vocab_size=500, max_lines=300)
    b = train_bpe(lines, vocab_size=500)
    assert a.tokenizer.to_str() == b.tokenizer.to_str()


def test_bad_lines_are_skipped_counted_and_bounded(tmp_path):
    # 1,000 good lines and 1 of each kind of bad line: 3 bad of 1,003 read
    good = make_corpus(1000, seed=3)
    rows = [json.dumps({"text": t}, ensure_ascii=False).encode() + b"\n" for t in good]
    bad = [b'{"text": "cut\n', b"\xff\xfe\n", b'{"txt": "wrong key"}\n']
    path = tmp_path / "real.jsonl"
    path.write_bytes(b"".join(rows[:10] + bad[:1] + rows[10:500] + bad[1:] + rows[500:]))
    with pytest.raises(ValueError, match="real.jsonl:11: not valid JSON"):
        list(iter_jsonl_texts(path))  # strict by default
    stats: dict = {}
    got = list(iter_jsonl_texts(path, skip_bad_lines=True, max_bad_fraction=0.01, stats=stats))
    assert got == good  # exactly the good lines, in order
    assert stats == {"lines": 1003, "bad": 3, "first_bad": "line 11: not valid JSON "
                     "(Invalid control character at)"}  # fmt: skip
    # 3 bad of 1,003 is 0.3 %: above the default 0.1 %, the run stops after reading the file
    with pytest.raises(ValueError, match=r"real.jsonl: 3 of 1003 lines are bad, more than "
                       r"--max-bad-fraction 0.001; first line 11"):  # fmt: skip
        train_tokenizer(path, vocab_size=300, skip_bad_lines=True)
    # the same tokenizer as training on the good lines alone
    a = train_tokenizer(path, vocab_size=400, skip_bad_lines=True, max_bad_fraction=0.01)
    assert a.tokenizer.to_str() == train_bpe(good, vocab_size=400).tokenizer.to_str()


def test_max_lines_counts_bad_lines_and_checks_the_sample(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"text": "a"}\nbad\n{"text": "b"}\n{"text": "c"}\n', encoding="utf-8")
    stats: dict = {}
    texts = iter_jsonl_texts(path, max_lines=3, skip_bad_lines=True, max_bad_fraction=0.5,
                             stats=stats)  # fmt: skip
    assert list(texts) == ["a", "b"] and stats["lines"] == 3 and stats["bad"] == 1
    with pytest.raises(ValueError, match="1 of 2 lines are bad"):
        list(iter_jsonl_texts(path, max_lines=2, skip_bad_lines=True, max_bad_fraction=0.4))


def test_cached_tokenizer_keys_the_sample_size(data_file, monkeypatch):
    full = T.cached_tokenizer(data_file, 300, name="s")
    calls, real_train = [], T.train_tokenizer
    monkeypatch.setattr(
        T, "train_tokenizer", lambda *a, **k: calls.append(k["max_lines"]) or real_train(*a, **k)
    )
    part = T.cached_tokenizer(data_file, 300, name="s", max_lines=100)
    assert calls == [100]  # another sample size: retrained, not the full-file one found
    direct = real_train(data_file, 300, max_lines=100)
    assert part.tokenizer.to_str() == direct.tokenizer.to_str() != full.tokenizer.to_str()
    T.cached_tokenizer(data_file, 300, name="s", max_lines=100)
    assert calls == [100]  # then found again
    folder = Path(os.environ["SPONGEBOB_HOME"]) / "tokenizer" / "s"
    assert json.loads((folder / "training.json").read_text())["lines"] == 100


def test_cli_trains_and_saves_a_loadable_folder(tmp_path):
    data = write_jsonl(tmp_path / "small.jsonl", make_corpus(3000, seed=1))
    out = tmp_path / "tok"
    env = {**os.environ, "SPONGEBOB_HOME": str(tmp_path / "home")}
    cmd = [sys.executable, "-m", "spongebob", "tokenizer", "train", "--input", str(data)]
    cmd += ["--vocab-size", "2048", "--out", str(out)]
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    tok = load_tokenizer(out)
    assert f"{tok.vocab_size}-token" in res.stdout
    assert 600 < tok.vocab_size <= 2048
    assert tok.decode(tok.encode(MIXED[2])) == MIXED[2] and tok.encode("<answer>") == [5]


def test_cli_reports_a_bad_line(tmp_path):
    data = tmp_path / "bad.jsonl"
    data.write_text('{"text": "a"}\nnot json\n', encoding="utf-8")
    cmd = [sys.executable, "-m", "spongebob", "tokenizer", "train", "--input", str(data)]
    cmd += ["--vocab-size", "300", "--out", str(tmp_path / "o")]
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "bad.jsonl:2: not valid JSON" in res.stderr


# ---- the tokenizer cache ----------------------------------------------------------------------


@pytest.fixture
def data_file(tmp_path, monkeypatch):
    """A small pretraining file (600 generated lines) and an empty SPONGEBOB_HOME under tmp_path."""
    monkeypatch.setenv("SPONGEBOB_HOME", str(tmp_path / "home"))
    (tmp_path / "data").mkdir()
    return write_jsonl(tmp_path / "data" / "pretrain.jsonl", make_corpus(600))


def test_cached_tokenizer_trains_once_then_loads_and_retrains_when_stale(
    tmp_path, monkeypatch, data_file
):
    first = T.cached_tokenizer(data_file, 400, name="mini")
    assert first.vocab_size == 400 and first.encode("<think>") == [3]
    folder = tmp_path / "home" / "tokenizer" / "mini"
    assert sorted(p.name for p in folder.iterdir()) == [
        "fingerprint.txt",
        "tokenizer.json",
        "tokenizer_config.json",
        "training.json",
    ]
    assert json.loads((folder / "training.json").read_text()) == {
        "max_lines": None, "lines": 600, "bad": 0, "first_bad": None}  # fmt: skip
    assert first.tokenizer.to_str() == train_tokenizer(data_file, 400).tokenizer.to_str()

    calls = []
    real_train = T.train_tokenizer
    monkeypatch.setattr(
        T, "train_tokenizer", lambda *a, **k: calls.append(1) or real_train(*a, **k)
    )
    second = T.cached_tokenizer(data_file, 400, name="mini")
    assert calls == [] and second.tokenizer.to_str() == first.tokenizer.to_str()

    write_jsonl(data_file, make_corpus(600, seed=5))  # the data changed
    third = T.cached_tokenizer(data_file, 400, name="mini")
    assert calls == [1] and third.tokenizer.to_str() != first.tokenizer.to_str()

    monkeypatch.setattr(T.tokenizers, "__version__", "99.0.0")  # a new tokenizers release
    T.cached_tokenizer(data_file, 400, name="mini")
    assert calls == [1, 1]

    monkeypatch.setattr(T, "TOKENIZER_RECIPE", "bytelevel-bpe-v2")  # the recipe changed
    T.cached_tokenizer(data_file, 400, name="mini")
    assert calls == [1, 1, 1]

    (folder / "tokenizer.json").unlink()  # a damaged cache folder is retrained, not loaded
    assert T.cached_tokenizer(data_file, 400, name="mini").vocab_size == 400
    assert calls == [1, 1, 1, 1] and (folder / "tokenizer.json").is_file()

    # a folder an older version wrote (no training.json) is retrained, so its listing and the
    # pipeline's line counts are the same on a warm home as on an empty one
    (folder / "training.json").unlink()
    T.cached_tokenizer(data_file, 400, name="mini")
    assert calls == [1, 1, 1, 1, 1] and (folder / "training.json").is_file()


def test_cached_tokenizer_fingerprint_is_data_recipe_and_version(data_file):
    # written independently: sha256 over the key and the data file's own sha256
    import hashlib

    import tokenizers

    tok = T.cached_tokenizer(data_file, 300, name="fp")
    digest = hashlib.sha256(data_file.read_bytes()).hexdigest()
    key = f"{T.TOKENIZER_RECIPE}|300|tokenizers {tokenizers.__version__}|{digest}"
    stamp = Path(os.environ["SPONGEBOB_HOME"]) / "tokenizer" / "fp" / "fingerprint.txt"
    assert stamp.read_text() == hashlib.sha256(key.encode()).hexdigest() + "\n"
    assert tok.vocab_size == 300


def test_cached_tokenizer_keeps_names_and_vocab_sizes_apart(tmp_path, data_file):
    small, large = T.cached_tokenizer(data_file, 300), T.cached_tokenizer(data_file, 400)
    folder = tmp_path / "home" / "tokenizer"
    names = sorted(p.name for p in folder.iterdir())
    assert len(names) == 2 and all(n.startswith("pretrain-") for n in names)
    assert [n.rsplit("-", 1)[1] for n in names] == ["bpe300", "bpe400"]
    assert load_tokenizer(folder / names[0]).vocab_size == small.vocab_size == 300
    assert load_tokenizer(folder / names[1]).vocab_size == large.vocab_size == 400
    stamps = {(folder / n / "fingerprint.txt").read_text() for n in names}
    assert len(stamps) == 2
    assert T.cached_tokenizer(data_file, 300).vocab_size == 300  # loads its own folder again
    # another file with the same stem gets its own default folder
    (tmp_path / "other").mkdir()
    other = write_jsonl(tmp_path / "other" / "pretrain.jsonl", make_corpus(600, seed=2))
    T.cached_tokenizer(other, 300)
    assert len(list(folder.iterdir())) == 3


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "../escape"])
def test_cached_tokenizer_rejects_a_name_that_is_not_a_folder_name(data_file, name):
    with pytest.raises(ValueError, match="plain folder name"):
        T.cached_tokenizer(data_file, 300, name=name)


def test_cached_tokenizer_names_a_missing_file(tmp_path, data_file):
    with pytest.raises(FileNotFoundError, match="missing.jsonl"):
        T.cached_tokenizer(tmp_path / "missing.jsonl", 300, name="x")


def test_tokenizer_module_does_not_import_the_data_generator():
    code = "import sys, spongebob.tokenizer; print(sorted(m for m in sys.modules if 'world' in m))"
    res = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]"
    source = (ROOT / "spongebob" / "tokenizer.py").read_text("utf-8")
    assert "spongebob.world" not in source and not hasattr(T, "course_tokenizer")


# ---- the plot helpers this chapter exports (spongebob.viz) -------------------------------------


def test_tokens_html_escapes_and_colours_each_piece():
    from spongebob.viz import PALETTE, tokens_html

    out = tokens_html(["<s>", "a\nb", ""], titles=[1, 2, 3])
    assert out.count("<span") == 3
    assert "&lt;s&gt;" in out and "<s>" not in out  # special tokens are shown, not parsed
    assert "a↵\nb" in out and "∅" in out and 'title="2"' in out
    assert [PALETTE[0], PALETTE[1], PALETTE[2]] == [c for c in PALETTE[:3] if c in out]
    assert tokens_html(["x", "y"], colors=["red", "blue"]).count("background:red") == 1


def test_flow_diagram_draws_one_box_per_step():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from spongebob.viz import flow_diagram

    fig = flow_diagram(["a", "b", "c"], title="t")
    texts = [t.get_text() for t in fig.axes[0].texts]  # boxes, plus an empty text per arrow
    assert [t for t in texts if t] == ["a", "b", "c"] and len(texts) == 5
    assert fig.axes[0].get_title() == "t"
    plt.close(fig)


def test_chat_segments_join_to_render_chat_and_mark_each_reply_and_its_eos():
    from spongebob.tokenizer import BOS, EOS, chat_segments

    msgs = [
        {"role": "system", "content": "Be kind."},
        {"role": "user", "content": "Hi </s> there"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Bye"},
    ]
    segs = chat_segments(msgs)
    assert "".join(t for t, _ in segs) == render_chat(msgs)
    assert [t for t, reply in segs if reply] == ["Hello!", EOS]
    specials = [t for t, _ in segs if t in (BOS, EOS)]
    assert specials == [BOS, EOS] + [BOS, EOS, BOS] + [EOS] + [BOS, EOS, BOS]
    assert ("user\nHi </s> there", False) in segs  # typed text stays one text segment
