"""Interop (spongebob/export.py and the `export`, `chat` and `eval` commands): the original's bare
state dicts and tokenizer folders, exact exports to Hugging Face and GGUF.

The Hugging Face tests need the `hf` extra (transformers), the GGUF tests the `gguf` extra; each
skips with the reason otherwise. The llama.cpp test is opt-in: it needs `llama-cpp-python` (a C++
build, too slow for every CI run) and runs only with SPONGEBOB_LLAMA_CPP=1:

    CMAKE_ARGS="-DGGML_NATIVE=OFF" pip install llama-cpp-python
    SPONGEBOB_LLAMA_CPP=1 pytest tests/test_interop.py -k llama_cpp
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import torch

from spongebob import cli
from spongebob.checkpoint import save_checkpoint
from spongebob.config import ModelConfig
from spongebob.generate import generate
from spongebob.model import SpongeBob
from spongebob.tokenizer import SPECIAL_TOKENS, SpongeTokenizer, load_tokenizer, train_bpe
from spongebob.world import course_tokenizer

ORIGINAL_SYSTEM = "你是 MiniMind，是一个有用的人工智能助手。"  # SEED.md
# The original's template as SEED.md describes it (written here, not copied): its own default
# system prompt, <s>assistant\n after every user turn, other roles ignored.
ORIGINAL_LIKE = (
    "{% if messages[0]['role'] == 'system' %}"
    "{{ '<s>system\\n' + messages[0]['content'] + '</s>\\n' }}"
    f"{{% else %}}{{{{ '<s>system\\n{ORIGINAL_SYSTEM}</s>\\n' }}}}{{% endif %}}"
    "{% for m in messages %}{% if m['role'] == 'user' %}"
    "{{ '<s>user\\n' + m['content'] + '</s>\\n<s>assistant\\n' }}"
    "{% elif m['role'] == 'assistant' %}{{ m['content'] + '</s>\\n' }}{% endif %}{% endfor %}"
)
CHATML_LIKE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}</s>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
TEXTS = [
    "SpongeBob lives in a pineapple under the sea.",
    "海绵宝宝住在比奇堡的菠萝屋里。蟹老板喜欢钱。",
    "Patrick's  rock,\ttabs and 12345 + 678 = 13023!\n\n  end  ",
    "<think>\n3 + 4 = 7\n</think>\n<answer>\n7\n</answer>",
]


def peaky(config: ModelConfig, seed: int = 0) -> SpongeBob:
    """A random model with large weights and random norm gains: confident, well separated greedy
    choices (a tie would make token comparisons meaningless) and every tensor's mapping visible."""
    torch.manual_seed(seed)
    model = SpongeBob(config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1:
                p.uniform_(0.5, 1.5)
            else:
                p.normal_(0.0, 0.5 if "tok_embeddings" in name else 0.15)
    return model.eval()


@pytest.fixture(scope="module")
def original_folder(tmp_path_factory) -> Path:
    """A tokenizer folder shaped like the original's (vocab without reasoning tokens, its own
    template); never the original's files."""
    corpus = [t * 3 for t in TEXTS] + ["Who lives in a pineapple? SpongeBob! 派大星。"] * 5
    tok = train_bpe(corpus, vocab_size=400, special_tokens=SPECIAL_TOKENS)
    return SpongeTokenizer(tok.tokenizer, chat_template=ORIGINAL_LIKE).save(
        tmp_path_factory.mktemp("tok") / "original"
    )


@pytest.fixture(scope="module")
def bare(tmp_path_factory, original_folder) -> dict:
    """A bare state dict (the original's release format) of a GQA model with 4 heads."""
    config = ModelConfig(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=400,
                         hidden_dim=96)  # fmt: skip
    model = peaky(config, seed=2)  # its greedy replies run on (seed 1's end at once)
    path = tmp_path_factory.mktemp("ckpt") / "bare.pth"
    torch.save(model.state_dict(), path)
    return {"path": path, "model": model, "config": config}


def _greedy(model, ids: list[int], n: int, eos: int | None = None) -> list[int]:
    return generate(model, [ids], n, temperature=0.0, eos_token_id=eos)[0]


# ------------------------------------------------------------------------- bare state dicts
def test_bare_state_dict_loads_with_the_inferred_config_and_says_so(bare):
    logged = []
    model, extras = cli.load_model_checkpoint(bare["path"], 4, log=logged.append)
    assert extras == {} and model.config == ModelConfig(**{**bare["config"].__dict__})
    for k, v in bare["model"].state_dict().items():
        assert torch.equal(model.state_dict()[k], v)
    assert "inferred dim=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=400" in logged[0]
    # n_heads is not in the shapes: 8 by default (the original's), so 8 heads of 8 dims, 4 kv
    model8, _ = cli.load_model_checkpoint(bare["path"], log=logged.append)
    assert (model8.config.n_heads, model8.config.n_kv_heads) == (8, 4)


def test_infer_config_refuses_a_partial_state_dict_in_one_sentence(bare):
    sd = {k: v for k, v in bare["model"].state_dict().items() if "wk" not in k}
    with pytest.raises(ValueError, match="no layers.0.attention.wk.weight"):
        cli.infer_config(sd, 4)


def test_chat_with_the_original_folder_uses_its_template_and_system_prompt(
    bare, original_folder, capsys
):
    transformers = pytest.importorskip("transformers", reason="needs the hf extra")
    q = "Who lives in a pineapple?"
    rc = cli.main(["chat", "--checkpoint", str(bare["path"]), "--tokenizer", str(original_folder),
                   "--n-heads", "4", "--prompt", q, "--temperature", "0",
                   "--repetition-penalty", "1", "--max-new-tokens", "12"])  # fmt: skip
    out = capsys.readouterr()
    assert rc == 0 and "inferred dim=64" in out.err
    hf_tok = transformers.AutoTokenizer.from_pretrained(str(original_folder))
    chat = [{"role": "user", "content": q}]
    ids = hf_tok.apply_chat_template(chat, tokenize=True, return_dict=False)
    assert hf_tok.decode(ids).startswith(f"<s>system\n{ORIGINAL_SYSTEM}</s>")
    new = _greedy(bare["model"], ids, 12, eos=hf_tok.eos_token_id)
    want = hf_tok.decode(new[:-1] if new and new[-1] == hf_tok.eos_token_id else new)
    assert out.out == want.strip() + "\n" and len(want.strip()) >= 5


def test_chat_with_a_template_in_another_format_renders_it(bare, original_folder, tmp_path, capsys):
    transformers = pytest.importorskip("transformers", reason="needs the hf extra")
    folder = SpongeTokenizer(load_tokenizer(original_folder).tokenizer,
                             chat_template=CHATML_LIKE).save(tmp_path / "chatml")  # fmt: skip
    enc = cli.prompt_encoder(load_tokenizer(folder), "Be brief.")
    assert isinstance(enc, cli.TemplatePrompts)
    hf_tok = transformers.AutoTokenizer.from_pretrained(str(folder))
    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    want = hf_tok.apply_chat_template(chat, tokenize=True, add_generation_prompt=True,
                                      return_dict=False)  # fmt: skip
    assert enc.encode(chat[1:])[0] == want
    rc = cli.main(["chat", "--checkpoint", str(bare["path"]), "--tokenizer", str(folder),
                   "--n-heads", "4", "--prompt", "Hi", "--system", "Be brief.",
                   "--temperature", "0", "--max-new-tokens", "6",
                   "--repetition-penalty", "1"])  # fmt: skip
    new = _greedy(bare["model"], want, 6, eos=hf_tok.eos_token_id)
    text = hf_tok.decode(new[:-1] if new and new[-1] == hf_tok.eos_token_id else new)
    assert rc == 0 and capsys.readouterr().out == text.strip() + "\n" and text.strip()
    # eval renders prompts in the course format only: refused in one line, naming the folder
    rc = cli.main(["eval", "--checkpoint", str(bare["path"]), "--tokenizer", str(folder),
                   "--n-heads", "4", "--sets", "facts"])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("spongebob: error:") and "chatml" in err


def test_eval_with_the_original_folder_prompts_as_transformers_renders(
    bare, original_folder, tmp_path, capsys
):
    transformers = pytest.importorskip("transformers", reason="needs the hf extra")
    qs = ["Who lives in a pineapple?", "派大星住在哪里？"]
    data = tmp_path / "mine.jsonl"
    data.write_text("".join(json.dumps({"messages": [{"role": "user", "content": q}],
                                        "expected": "x"}, ensure_ascii=False) + "\n"
                            for q in qs), encoding="utf-8")  # fmt: skip
    out = tmp_path / "report.json"
    rc = cli.main(["eval", "--checkpoint", str(bare["path"]), "--tokenizer", str(original_folder),
                   "--file", str(data), "--grader", "fact", "--max-new-tokens", "8",
                   "--out", str(out), "--n-heads", "4"])  # fmt: skip
    assert rc == 0 and "inferred dim=64" in capsys.readouterr().out
    answers = [r["answer"] for r in json.loads(out.read_text("utf-8"))["sets"]["mine"]["records"]]
    hf_tok = transformers.AutoTokenizer.from_pretrained(str(original_folder))
    for q, answer in zip(qs, answers):
        ids = hf_tok.apply_chat_template([{"role": "user", "content": q}], tokenize=True,
                                         return_dict=False)  # fmt: skip
        new = _greedy(bare["model"], ids, 8, eos=hf_tok.eos_token_id)
        assert answer == hf_tok.decode(new[:-1] if new and new[-1] == 2 else new) and answer


@pytest.mark.parametrize("which", ["missing", "junk"])
def test_export_of_a_bad_checkpoint_is_a_one_line_error(tmp_path, which, capsys):
    path = tmp_path / "x.pt"
    if which == "junk":
        path.write_text("not a checkpoint", encoding="utf-8")
    rc = cli.main(["export", "hf", "--checkpoint", str(path), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("spongebob: error:") and "x.pt" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "o").exists()


# ------------------------------------------------------------------------- Hugging Face
def _hf_logits(folder: Path, ids: torch.Tensor) -> torch.Tensor:
    transformers = pytest.importorskip("transformers", reason="needs the hf extra")
    hf = transformers.AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
    assert type(hf).__name__ == "LlamaForCausalLM"
    with torch.no_grad():
        return hf(ids).logits


@pytest.mark.parametrize("n_heads, n_kv_heads, theta", [(4, 4, 1e6), (4, 2, 1e4), (8, 2, 1e6)])
def test_hf_export_logits_equal_ours(tmp_path, n_heads, n_kv_heads, theta):
    pytest.importorskip("transformers", reason="needs the hf extra")
    from spongebob.export import export_hf

    tok = course_tokenizer()
    config = ModelConfig(dim=64, n_layers=3, n_heads=n_heads, n_kv_heads=n_kv_heads,
                         vocab_size=tok.vocab_size, hidden_dim=80, max_seq_len=96,
                         rope_theta=theta, norm_eps=1e-6)  # fmt: skip
    model = peaky(config)
    folder = export_hf(model, tok, tmp_path / "hf")
    assert sorted(p.name for p in folder.iterdir()) == [
        "config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
        "tokenizer_config.json"]  # fmt: skip
    ids = torch.randint(0, tok.vocab_size, (2, 96), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = model(ids).logits
    torch.testing.assert_close(_hf_logits(folder, ids), ours, atol=1e-4, rtol=0)


def test_hf_export_without_the_permutation_would_differ(tmp_path):
    # The check above can fail: the same export with wq/wk rows left interleaved disagrees.
    pytest.importorskip("transformers", reason="needs the hf extra")
    from spongebob import export

    tok = course_tokenizer()
    config = ModelConfig(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=tok.vocab_size)
    model = peaky(config)
    folder = export.export_hf(model, tok, tmp_path / "hf")
    real = export.interleaved_to_half_rows
    try:
        export.interleaved_to_half_rows = lambda w, n: w
        export.export_hf(model, tok, tmp_path / "wrong")
    finally:
        export.interleaved_to_half_rows = real
    ids = torch.arange(1, 40)[None]
    with torch.no_grad():
        ours = model(ids).logits
    torch.testing.assert_close(_hf_logits(folder, ids), ours, atol=1e-4, rtol=0)
    assert (_hf_logits(tmp_path / "wrong", ids) - ours).abs().max() > 0.1


def test_cli_export_hf_of_a_bare_state_dict_loads_generates_and_chats_as_ours(
    bare, original_folder, tmp_path, capsys
):
    transformers = pytest.importorskip("transformers", reason="needs the hf extra")
    out = tmp_path / "hf"
    rc = cli.main(["export", "hf", "--checkpoint", str(bare["path"]), "--tokenizer",
                   str(original_folder), "--n-heads", "4", "--out", str(out)])  # fmt: skip
    printed = capsys.readouterr().out
    assert rc == 0 and "inferred dim=64" in printed and "(hf, float32)" in printed
    conf = json.loads((out / "config.json").read_text("utf-8"))
    assert (conf["num_attention_heads"], conf["num_key_value_heads"], conf["head_dim"]) == (
        4,
        2,
        16,
    )
    assert (conf["intermediate_size"], conf["rope_theta"], conf["max_position_embeddings"]) == (
        96, 1e6, 1024)  # fmt: skip
    hf = transformers.AutoModelForCausalLM.from_pretrained(str(out), dtype=torch.float32)
    hf_tok = transformers.AutoTokenizer.from_pretrained(str(out))
    chat = [{"role": "user", "content": "Who lives in a pineapple?"}]
    # the folder keeps the original's own template (its Chinese default system prompt)
    src = transformers.AutoTokenizer.from_pretrained(str(original_folder))
    assert hf_tok.apply_chat_template(chat, tokenize=False) == src.apply_chat_template(
        chat, tokenize=False)  # fmt: skip
    ids = hf_tok.apply_chat_template(chat, tokenize=True, return_dict=False)
    got = hf.generate(torch.tensor([ids]), max_new_tokens=24, do_sample=False,
                      repetition_penalty=1.0, eos_token_id=2, pad_token_id=0)  # fmt: skip
    got = got[0, len(ids) :].tolist()
    assert got == _greedy(bare["model"], ids, 24, eos=2) and len(got) >= 5
    # the generation defaults are spongebob chat's sampling
    gen = json.loads((out / "generation_config.json").read_text("utf-8"))
    assert (gen["temperature"], gen["top_p"], gen["repetition_penalty"]) == (0.85, 0.85, 1.3)


def test_cli_export_hf_of_our_checkpoint_in_bf16(tmp_path, capsys):
    transformers = pytest.importorskip("transformers", reason="needs the hf extra")
    tok = course_tokenizer()
    config = ModelConfig(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=tok.vocab_size)
    model = peaky(config)
    ckpt = save_checkpoint(tmp_path / "ours.pt", {"model": model.state_dict(),
                                                  "config": config.to_dict()})  # fmt: skip
    out = tmp_path / "hf"
    (out).mkdir()
    (out / "chat_template.jinja").write_text("stale", encoding="utf-8")  # would shadow ours
    rc = cli.main(["export", "hf", "--checkpoint", str(ckpt), "--out", str(out), "--dtype",
                   "bfloat16"])  # fmt: skip
    assert rc == 0 and "inferred" not in capsys.readouterr().out
    hf = transformers.AutoModelForCausalLM.from_pretrained(str(out))
    assert hf.dtype == torch.bfloat16
    w = hf.model.layers[0].mlp.gate_proj.weight
    assert torch.equal(w, model.layers[0].feed_forward.w1.weight.to(torch.bfloat16))
    hf_tok = transformers.AutoTokenizer.from_pretrained(str(out))
    chat = [{"role": "user", "content": "Hi"}]
    assert hf_tok.apply_chat_template(chat, tokenize=False) == tok.apply_chat_template(chat)


# ------------------------------------------------------------------------- GGUF
def test_gguf_file_holds_our_weights_and_a_byte_level_bpe_tokenizer(tmp_path):
    gguf = pytest.importorskip("gguf", reason="needs the gguf extra")
    from spongebob.export import export_gguf

    tok = course_tokenizer()
    config = ModelConfig.preset("tiny")
    model = peaky(config)
    path = export_gguf(model, tok, tmp_path / "tiny.gguf")
    r = gguf.GGUFReader(str(path))

    def field(name):
        f = r.fields[name]
        return f.contents()

    assert field("general.architecture") == "llama"
    assert (field("llama.embedding_length"), field("llama.block_count")) == (128, 4)
    assert (field("llama.attention.head_count"), field("llama.attention.head_count_kv")) == (4, 2)
    assert field("llama.feed_forward_length") == config.ffn_hidden_dim
    assert field("llama.rope.freq_base") == 1e6 and field("llama.rope.dimension_count") == 32
    assert field("llama.context_length") == 1024
    assert (field("tokenizer.ggml.model"), field("tokenizer.ggml.pre")) == ("gpt2", "gpt-2")
    tokens = field("tokenizer.ggml.tokens")
    assert len(tokens) == 2048 and tokens[:7] == ["<unk>", "<s>", "</s>", "<think>", "</think>",
                                                  "<answer>", "</answer>"]  # fmt: skip
    assert all(tokens[i] == tok.id_to_token(i) for i in range(2048))
    merges = json.loads(tok.tokenizer.to_str())["model"]["merges"]
    assert len(field("tokenizer.ggml.merges")) == len(merges)
    assert (field("tokenizer.ggml.bos_token_id"), field("tokenizer.ggml.eos_token_id")) == (1, 2)
    assert field("tokenizer.ggml.add_bos_token") is False
    assert field("tokenizer.chat_template") == tok.chat_template
    # weights: our rows as they are (llama.cpp rotates interleaved pairs), output tied (absent)
    got = {t.name: torch.from_numpy(t.data.copy()) for t in r.tensors}
    assert "output.weight" not in got and len(got) == 2 + 9 * config.n_layers
    sd = model.state_dict()
    assert torch.equal(got["blk.2.attn_q.weight"].view_as(sd["layers.2.attention.wq.weight"]),
                       sd["layers.2.attention.wq.weight"])  # fmt: skip
    assert torch.equal(got["blk.0.ffn_gate.weight"].view_as(sd["layers.0.feed_forward.w1.weight"]),
                       sd["layers.0.feed_forward.w1.weight"])  # fmt: skip
    assert torch.equal(got["token_embd.weight"].view(2048, 128), sd["tok_embeddings.weight"])


def test_cli_export_gguf_f16_keeps_norms_in_f32(bare, original_folder, tmp_path, capsys):
    gguf = pytest.importorskip("gguf", reason="needs the gguf extra")
    out = tmp_path / "m.gguf"
    rc = cli.main(["export", "gguf", "--checkpoint", str(bare["path"]), "--tokenizer",
                   str(original_folder), "--n-heads", "4", "--out", str(out),
                   "--dtype", "f16"])  # fmt: skip
    assert rc == 0 and "(gguf, f16)" in capsys.readouterr().out
    types = {t.name: t.tensor_type.name for t in gguf.GGUFReader(str(out)).tensors}
    assert types["blk.0.attn_norm.weight"] == "F32" and types["blk.0.attn_k.weight"] == "F16"
    assert not list(tmp_path.glob(".*partial"))


@pytest.mark.parametrize("fmt, module, extra", [("hf", "safetensors.torch", "spongebob[hf]"),
                                                ("gguf", "gguf", "spongebob[gguf]")])  # fmt: skip
def test_export_without_its_extra_names_the_extra(bare, original_folder, tmp_path, monkeypatch,
                                                  capsys, fmt, module, extra):  # fmt: skip
    monkeypatch.setitem(sys.modules, module, None)  # as if not installed: import fails
    rc = cli.main(["export", fmt, "--checkpoint", str(bare["path"]), "--tokenizer",
                   str(original_folder), "--n-heads", "4",
                   "--out", str(tmp_path / "x")])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("spongebob: error:") and extra in err
    assert not (tmp_path / "x").exists()


# ------------------------------------------------------------------------- llama.cpp (opt-in)
@pytest.mark.skipif(os.environ.get("SPONGEBOB_LLAMA_CPP") != "1",
                    reason="opt-in: set SPONGEBOB_LLAMA_CPP=1 (needs llama-cpp-python, a C++ "
                           "build; see the module docstring)")  # fmt: skip
def test_llama_cpp_runs_the_gguf_export_with_our_tokens(tmp_path):
    pytest.importorskip("gguf", reason="needs the gguf extra")
    llama_cpp = pytest.importorskip("llama_cpp", reason="needs llama-cpp-python")
    from spongebob.export import export_gguf

    tok = course_tokenizer()
    model = peaky(ModelConfig.preset("tiny"))
    path = export_gguf(model, tok, tmp_path / "tiny.gguf")
    llm = llama_cpp.Llama(str(path), n_ctx=256, n_threads=1, logits_all=True, verbose=False)
    # llama.cpp's tokenizer (byte-level BPE from the file's metadata) gives our ids
    for text in TEXTS:
        assert llm.tokenize(text.encode(), add_bos=False, special=True) == tok.encode(text)
        assert llm.detokenize(tok.encode(text), special=True).decode() == text
    chat = [{"role": "user", "content": "Who lives in a pineapple?"}]
    prompt = tok.encode(tok.apply_chat_template(chat))
    # greedy tokens: llama.cpp equals ours
    ours = _greedy(model, prompt, 32, eos=tok.eos_id)
    theirs = []
    for t in llm.generate(prompt, top_k=1, top_p=1.0, temp=0.0, repeat_penalty=1.0):
        theirs.append(t)
        if t == tok.eos_id or len(theirs) == 32:
            break
    assert theirs == ours and len(ours) >= 5
    # its logits on the prompt equal ours in fp32 once its KV cache is fp32 too (the default f16
    # cache rounds keys and values: 0.07 off on logits up to 24 here, the greedy tokens unchanged)
    f32 = llama_cpp.GGML_TYPE_F32
    exact = llama_cpp.Llama(str(path), n_ctx=256, n_threads=1, logits_all=True, verbose=False,
                            type_k=f32, type_v=f32)  # fmt: skip
    exact.eval(prompt)
    with torch.no_grad():
        want = model(torch.tensor([prompt])).logits[0]
    got = torch.tensor(exact.scores[: len(prompt)])
    assert (got - want).abs().max() < 2e-4
    # as a chat model: its chat template from the file, greedy, gives our answer text
    reply = llm.create_chat_completion(chat, temperature=0.0, top_k=1, repeat_penalty=1.0,
                                       max_tokens=32)  # fmt: skip
    text = reply["choices"][0]["message"]["content"]
    answer = b"".join(tok.token_bytes(i) for i in ours if i != tok.eos_id)
    # a random model writes broken UTF-8 pieces: llama-cpp-python drops them (errors="ignore")
    assert text == answer.decode("utf-8", errors="ignore") and len(text) >= 5
