# Hand-written module (not generated from a notebook).
"""Every command's ``--checkpoint`` (chat, eval, export): our checkpoints and bare state dicts (the
original's releases), and the tokenizer that goes with them."""

from __future__ import annotations

import argparse
from pathlib import Path

from spongebob.cli.common import CliError, load_tokenizer_arg


def infer_config(state: dict, n_heads: int = 8, max_seq_len: int = 1024):
    """A ``ModelConfig`` read from a bare state dict's tensor shapes (the original's releases).

    ``dim`` and ``vocab_size`` from ``tok_embeddings.weight``, ``n_layers`` from the layer keys,
    ``hidden_dim`` from ``w1``, ``n_kv_heads`` from ``wk`` and the head size ``dim / n_heads``;
    ``n_heads`` is not in the shapes (8 in the original), so it is an argument. ``max_seq_len``,
    ``rope_theta`` and ``norm_eps`` are not in the shapes either: the original's values.
    """
    from spongebob.checkpoint import CheckpointError
    from spongebob.config import ModelConfig

    state = {k.removeprefix("_orig_mod.").removeprefix("module."): v for k, v in state.items()}
    emb = state.get("tok_embeddings.weight")
    if emb is None or emb.dim() != 2:
        raise CheckpointError("not a SpongeBob/MiniMind state dict: no tok_embeddings.weight")
    vocab_size, dim = emb.shape
    layers = {int(k.split(".")[1]) for k in state if k.startswith("layers.")}
    if not layers or dim % n_heads:
        raise CheckpointError(f"cannot infer the model: {len(layers)} layers, dim {dim}, "
                              f"n_heads {n_heads} (dim must divide by --n-heads)")  # fmt: skip
    head_dim = dim // n_heads
    wk, w1 = state.get("layers.0.attention.wk.weight"), state.get("layers.0.feed_forward.w1.weight")
    if wk is None or w1 is None:
        raise CheckpointError(
            "not a SpongeBob/MiniMind state dict: no layers.0.attention.wk.weight "
            "or layers.0.feed_forward.w1.weight"
        )
    hidden = w1.shape[0]
    return ModelConfig(dim=dim, n_layers=max(layers) + 1, n_heads=n_heads,
                       n_kv_heads=wk.shape[0] // head_dim, vocab_size=vocab_size,
                       hidden_dim=hidden, max_seq_len=max_seq_len)  # fmt: skip


def load_model_checkpoint(path: Path, n_heads: int | None = None, log=print):
    """``(model, extras)`` from one of our checkpoints (config inside) or a bare state dict.

    The one loader of ``--checkpoint`` (chat, eval, export): a bare state dict's config is
    inferred from its shapes (`infer_config`, ``n_heads`` 8 unless given) and printed via ``log``.
    """
    from spongebob.checkpoint import CheckpointError, load_state_dict_checked, read_checkpoint
    from spongebob.config import ModelConfig
    from spongebob.model import SpongeBob

    state, extras = read_checkpoint(path)
    if extras.get("config"):
        try:
            config = ModelConfig.from_dict(extras["config"])
        except (TypeError, ValueError) as e:
            raise CheckpointError(f"{path}: its 'config' entry is not a valid config: {e}") from e
        if n_heads is not None and n_heads != config.n_heads:
            raise ValueError(f"--n-heads {n_heads}: {path} says n_heads={config.n_heads}")
    else:
        config = infer_config(state, n_heads or 8)
        shown = ", ".join(f"{k}={getattr(config, k)}" for k in
                          ("dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "hidden_dim"))  # fmt: skip
        log(
            f"{path.name}: a bare state dict; inferred {shown} (n_heads: --n-heads, default 8; "
            f"max_seq_len={config.max_seq_len}, rope_theta={config.rope_theta:g} assumed)"
        )
    model = SpongeBob(config)
    load_state_dict_checked(model, state, source=str(path))
    return model.eval(), extras


def chat_tokenizer(args: argparse.Namespace, model, extras: dict):
    """The tokenizer of ``--tokenizer`` (else the course's), checked against the checkpoint."""
    from spongebob.data import tokenizer_fingerprint

    if args.tokenizer is not None:
        tok = load_tokenizer_arg(args.tokenizer)
    elif model.config.vocab_size == 2048 or extras.get("tokenizer"):
        from spongebob.world import course_tokenizer

        tok = course_tokenizer()
    else:
        raise CliError(f"{args.checkpoint}: vocab_size {model.config.vocab_size} is not the "
                       "course tokenizer's; pass --tokenizer DIR (e.g. the original's folder)")  # fmt: skip
    if tok.vocab_size != model.config.vocab_size:
        raise CliError(f"the tokenizer has {tok.vocab_size} tokens but {args.checkpoint} was "
                       f"built for {model.config.vocab_size}; pass the matching --tokenizer")  # fmt: skip
    want = extras.get("tokenizer")
    if want and want != tokenizer_fingerprint(tok):
        raise CliError(f"{args.checkpoint} was trained with another tokenizer (fingerprint "
                       "differs); pass the one it was trained with as --tokenizer")  # fmt: skip
    return tok


def model_args(c: argparse.ArgumentParser) -> None:
    """``--checkpoint``, ``--tokenizer`` and ``--n-heads`` of chat, eval and export."""
    c.add_argument("--checkpoint", type=Path, required=True,
                   help="a checkpoint of any stage, or a bare state dict (the original's)")  # fmt: skip
    c.add_argument("--tokenizer", type=Path, default=None,
                   help="tokenizer folder (default: the course tokenizer)")  # fmt: skip
    c.add_argument("--n-heads", type=int, default=None,
                   help="attention heads of a bare state dict (not in its shapes; default 8)")  # fmt: skip
