# Hand-written module (not generated from a notebook): conversion code for the appendix page
# book/hf_export.md. No chapter teaches file formats; the one idea in it, the RoPE row permutation,
# is taught and exported by 02_rope (`spongebob.rope.interleaved_to_half_rows`) and used from there.
"""Export a SpongeBob model to a Hugging Face Llama folder and to a GGUF file (llama.cpp, ollama).

    spongebob export hf   --checkpoint CKPT [--tokenizer DIR] --out DIR
    spongebob export gguf --checkpoint CKPT [--tokenizer DIR] --out FILE.gguf

A SpongeBob is a Llama (SEED.md): the same blocks, norms, SwiGLU and tied embeddings, with one
difference in convention. Its RoPE rotates **interleaved** pairs (dims 2i, 2i+1), as Meta's Llama
and llama.cpp do; Hugging Face's ``LlamaForCausalLM`` rotates **halves** (i, i + head_dim/2). So
`hf_state_dict` permutes the rows of ``wq`` (per head) and ``wk`` (per KV head) and maps every other
tensor one to one, while `gguf_tensors` keeps the rows as they are (llama.cpp's ``llama``
architecture rotates interleaved pairs itself). ``output.weight`` is the embedding (tied), so
neither file stores it twice.

`export_hf` writes ``config.json``, ``generation_config.json``, ``model.safetensors`` and the
tokenizer folder (its chat template included: ours, or a foreign folder's own). It needs the
``safetensors`` package (the ``hf`` extra); loading the folder needs ``transformers``.
`export_gguf` needs the ``gguf`` package (the ``gguf`` extra). Every file is written atomically.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import torch
from torch import Tensor

from spongebob.config import ModelConfig
from spongebob.files import atomic_path, atomic_write_bytes, atomic_write_text
from spongebob.rope import interleaved_to_half_rows

# Per-layer tensors: SpongeBob name -> (Hugging Face Llama name, GGUF name).
LAYER_NAMES = {
    "attention.wq.weight": ("self_attn.q_proj.weight", "attn_q.weight"),
    "attention.wk.weight": ("self_attn.k_proj.weight", "attn_k.weight"),
    "attention.wv.weight": ("self_attn.v_proj.weight", "attn_v.weight"),
    "attention.wo.weight": ("self_attn.o_proj.weight", "attn_output.weight"),
    "feed_forward.w1.weight": ("mlp.gate_proj.weight", "ffn_gate.weight"),
    "feed_forward.w3.weight": ("mlp.up_proj.weight", "ffn_up.weight"),
    "feed_forward.w2.weight": ("mlp.down_proj.weight", "ffn_down.weight"),
    "attention_norm.weight": ("input_layernorm.weight", "attn_norm.weight"),
    "ffn_norm.weight": ("post_attention_layernorm.weight", "ffn_norm.weight"),
}
GLOBAL_NAMES = {
    "tok_embeddings.weight": ("model.embed_tokens.weight", "token_embd.weight"),
    "norm.weight": ("model.norm.weight", "output_norm.weight"),
}
_LAYER_KEY = re.compile(r"layers\.(\d+)\.(.+)")
HF_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _rename(state: dict[str, Tensor], which: int) -> dict[str, tuple[str, str, Tensor]]:
    """``{our key: (layer suffix or "", new name, tensor)}``; ``which`` 0 = HF, 1 = GGUF."""
    out = {}
    for key, t in state.items():
        if key == "output.weight":
            if not torch.equal(t, state["tok_embeddings.weight"]):
                raise ValueError("output.weight differs from tok_embeddings.weight: not tied")
            continue  # tied: both formats read the embedding
        if key in GLOBAL_NAMES:
            out[key] = ("", GLOBAL_NAMES[key][which], t)
            continue
        m = _LAYER_KEY.fullmatch(key)
        if m is None or m.group(2) not in LAYER_NAMES:
            raise ValueError(f"unexpected tensor {key!r}: not a SpongeBob/MiniMind state dict")
        i, rest = m.groups()
        name = LAYER_NAMES[rest][which]
        out[key] = (rest, f"model.layers.{i}.{name}" if which == 0 else f"blk.{i}.{name}", t)
    return out


def hf_state_dict(state: dict[str, Tensor], config: ModelConfig) -> dict[str, Tensor]:
    """Our state dict (SEED.md keys) -> ``LlamaForCausalLM``'s, ``lm_head`` left tied.

    ``wq`` rows are permuted per head and ``wk`` rows per KV head from interleaved to rotate-half
    pairs (`interleaved_to_half_rows`); the other tensors are renamed only.
    """
    out = {}
    for rest, name, t in _rename(state, 0).values():
        if rest == "attention.wq.weight":
            t = interleaved_to_half_rows(t, config.n_heads)
        elif rest == "attention.wk.weight":
            t = interleaved_to_half_rows(t, config.n_kv_heads)
        out[name] = t
    return out


def llama_config(config: ModelConfig, tokenizer=None, dtype: str = "float32") -> dict:
    """``config.json`` of the equivalent ``LlamaForCausalLM`` (read by transformers 4 and 5).

    ``rope_theta`` is written both flat (transformers 4, llama.cpp's converter) and as
    ``rope_parameters`` (transformers 5). The head size is ``dim // n_heads``; the MLP width is
    ``ffn_hidden_dim``; no biases; SiLU; tied embeddings; ``max_seq_len`` positions.
    """
    c = config
    ids = {}
    if tokenizer is not None:
        ids = {"bos_token_id": tokenizer.bos_id, "eos_token_id": tokenizer.eos_id,
               "pad_token_id": tokenizer.pad_id}  # fmt: skip
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": c.vocab_size,
        "hidden_size": c.dim,
        "intermediate_size": c.ffn_hidden_dim,
        "num_hidden_layers": c.n_layers,
        "num_attention_heads": c.n_heads,
        "num_key_value_heads": c.n_kv_heads,
        "head_dim": c.head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": c.max_seq_len,
        "rms_norm_eps": c.norm_eps,
        "rope_theta": float(c.rope_theta),
        "rope_parameters": {"rope_type": "default", "rope_theta": float(c.rope_theta)},
        "rope_scaling": None,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "mlp_bias": False,
        "tie_word_embeddings": True,
        "initializer_range": 0.02,
        "pretraining_tp": 1,
        "use_cache": True,
        "torch_dtype": dtype,
        **ids,
    }


def generation_config(tokenizer) -> dict:
    """``generation_config.json``: the special ids and `spongebob chat`'s sampling defaults (the
    original's: temperature 0.85, top-p 0.85, repetition penalty 1.3)."""
    return {"bos_token_id": tokenizer.bos_id, "eos_token_id": tokenizer.eos_id,
            "pad_token_id": tokenizer.pad_id, "do_sample": True, "temperature": 0.85,
            "top_p": 0.85, "repetition_penalty": 1.3}  # fmt: skip


def _model_state(model) -> tuple[dict[str, Tensor], ModelConfig]:
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return state, model.config


def export_hf(model, tokenizer, out_dir: str | os.PathLike, dtype: str = "float32") -> Path:
    """Write a folder that ``AutoModelForCausalLM.from_pretrained`` loads as ``LlamaForCausalLM``.

    ``model``: a ``SpongeBob``; ``tokenizer``: its ``SpongeTokenizer`` (saved into the folder with
    its chat template); ``dtype``: ``float32`` (exact), ``bfloat16`` or ``float16``. A stale
    ``chat_template.jinja`` (it would override the config's template) is removed.
    """
    try:
        from safetensors.torch import save as safetensors_bytes
    except ImportError as e:
        raise ImportError(
            "spongebob export hf needs safetensors: pip install 'spongebob[hf]'"
        ) from e
    if dtype not in HF_DTYPES:
        raise ValueError(f"dtype must be one of {sorted(HF_DTYPES)}, got {dtype!r}")
    if tokenizer.vocab_size != model.config.vocab_size:
        raise ValueError(f"the tokenizer has {tokenizer.vocab_size} tokens, the model "
                         f"{model.config.vocab_size}")  # fmt: skip
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out}: exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    state, config = _model_state(model)
    tensors = {
        k: v.to(HF_DTYPES[dtype]).contiguous() for k, v in hf_state_dict(state, config).items()
    }
    atomic_write_bytes(out / "model.safetensors",
                       safetensors_bytes(tensors, metadata={"format": "pt"}))  # fmt: skip
    conf = llama_config(config, tokenizer, dtype)
    atomic_write_text(out / "config.json", json.dumps(conf, indent=2) + "\n")
    gen = generation_config(tokenizer)
    atomic_write_text(out / "generation_config.json", json.dumps(gen, indent=2) + "\n")
    (out / "chat_template.jinja").unlink(missing_ok=True)
    tokenizer.save(out)
    return out


def gguf_tensors(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Our state dict -> llama.cpp's tensor names (``blk.{i}.attn_q.weight``, ...), rows as they
    are: llama.cpp's ``llama`` architecture rotates interleaved pairs, like SpongeBob."""
    return {name: t for _, name, t in _rename(state, 1).values()}


def _token_type(tokenizer, token_id: int, gguf) -> int:
    if token_id == tokenizer.unk_id:
        return gguf.TokenType.UNKNOWN
    if token_id in (tokenizer.bos_id, tokenizer.eos_id):
        return gguf.TokenType.CONTROL
    if token_id in tokenizer.reasoning_ids.values():  # printed as text, matched in any input
        return gguf.TokenType.USER_DEFINED
    return gguf.TokenType.NORMAL


def export_gguf(model, tokenizer, out_file: str | os.PathLike, dtype: str = "f32") -> Path:
    """Write a GGUF file (``llama`` architecture) that llama.cpp runs as a chat model.

    Weights in ``f32`` (exact) or ``f16`` (matrices only; norms stay f32, as llama.cpp wants).
    The tokenizer is stored as llama.cpp's byte-level BPE (``gpt2`` model, ``gpt-2``
    pre-tokenizer: the GPT-2 regex of `tokenizers`' ``ByteLevel``): tokens, merges, special ids,
    ``add_bos_token`` false (the chat format writes ``<s>`` itself), and the chat template.
    Written to a temporary file next to ``out_file``, then renamed over it (`files.atomic_path`).
    """
    try:
        import gguf
    except ImportError as e:
        raise ImportError("spongebob export gguf needs gguf: pip install 'spongebob[gguf]'") from e
    if dtype not in ("f32", "f16"):
        raise ValueError(f"dtype must be f32 or f16, got {dtype!r}")
    out = Path(out_file)
    state, c = _model_state(model)
    with atomic_path(out) as tmp:
        _write_gguf(gguf, tmp, state, c, tokenizer, dtype)
    return out


def _write_gguf(gguf, path: Path, state: dict, c: ModelConfig, tokenizer, dtype: str) -> None:
    """Write the GGUF file at ``path`` (a temporary path: `export_gguf` renames it)."""
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("SpongeBob")
    w.add_context_length(c.max_seq_len)
    w.add_embedding_length(c.dim)
    w.add_block_count(c.n_layers)
    w.add_feed_forward_length(c.ffn_hidden_dim)
    w.add_head_count(c.n_heads)
    w.add_head_count_kv(c.n_kv_heads)
    w.add_rope_dimension_count(c.head_dim)
    w.add_rope_freq_base(float(c.rope_theta))
    w.add_layer_norm_rms_eps(c.norm_eps)
    w.add_vocab_size(c.vocab_size)
    w.add_file_type(gguf.LlamaFileType.ALL_F32 if dtype == "f32" else gguf.LlamaFileType.MOSTLY_F16)
    _add_tokenizer(w, tokenizer, gguf)
    for name, t in gguf_tensors(state).items():
        half = dtype == "f16" and t.dim() == 2
        w.add_tensor(name, t.to(torch.float16 if half else torch.float32).numpy())
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def _add_tokenizer(w, tokenizer, gguf) -> None:
    """llama.cpp's byte-level BPE metadata for a `SpongeTokenizer`."""
    n = tokenizer.vocab_size
    model = json.loads(tokenizer.tokenizer.to_str())["model"]
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("gpt-2")
    w.add_token_list([tokenizer.id_to_token(i) for i in range(n)])
    w.add_token_types([_token_type(tokenizer, i, gguf) for i in range(n)])
    w.add_token_merges(merges)
    w.add_bos_token_id(tokenizer.bos_id)
    w.add_eos_token_id(tokenizer.eos_id)
    w.add_unk_token_id(tokenizer.unk_id)
    w.add_pad_token_id(tokenizer.pad_id)
    w.add_add_bos_token(False)
    w.add_add_eos_token(False)
    w.add_chat_template(tokenizer.chat_template)
