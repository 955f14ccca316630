# Hand-written module (not generated from a notebook).
"""The `spongebob` command line: thin wrappers around the package's functions.

    spongebob data sample --out DIR [--seed N]
    spongebob data download NAME... --out DIR [--force]     (the real data, from ModelScope)
    spongebob data prepare --input FILE.jsonl [--tokenizer DIR] [--out DIR] [--max-seq-len N]
    spongebob tokenizer train --input FILE.jsonl --vocab-size N --out DIR
    spongebob train pretrain DATA --preset tiny|seed [--out DIR] [--resume | --init CKPT] [...]
        (DATA: a pretraining JSONL file or a prepared folder; every other flag defaults to the
        preset's value; also under `torchrun --nproc_per_node=N -m spongebob train pretrain ...`)
    spongebob train sft DATA --init CKPT --preset tiny|tiny-long|seed|seed-long [--replay-data F]
    spongebob train distill DATA --init CKPT --preset tiny|seed [--tag-weight W] [--replay-data F]
        (DATA: a chat JSONL file or a prepared folder, or --data; the same flags as pretrain)
    spongebob pipeline --preset tiny|seed [--out DIR] [--dry-run]
        (tokenizer, pretrain, SFT, long SFT, distill, eval and a report; finished stages skipped)
    spongebob chat --checkpoint CKPT [--tokenizer DIR] [--prompt TEXT] [--temperature 0 ...]
        (interactive with history, /clear and /quit; --prompt answers once and prints the answer)
    spongebob eval --checkpoint CKPT [--sets facts long ...] [--out FILE.json]
    spongebob eval --checkpoint CKPT --file MY.jsonl --grader fact|number
    spongebob export hf|gguf --checkpoint CKPT [--tokenizer DIR] --out DIR|FILE.gguf [--dtype ...]
        (a Hugging Face LlamaForCausalLM folder, or a GGUF file for llama.cpp; book/hf_export.md)
    Every --checkpoint takes our checkpoints and bare state dicts (the original's releases: the
    config is inferred from the shapes, --n-heads defaults to 8, the inferred config is printed).

Heavy imports happen inside each command, so `spongebob --help` is instant.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _data_sample(args: argparse.Namespace) -> int:
    from spongebob.world import write_sample

    files = write_sample(args.out, seed=args.seed)
    for name, path in files.items():
        print(f"{name}: {path}")
    return 0


def _data_download(args: argparse.Namespace) -> int:
    from spongebob.download import FILES, DownloadError, download

    names = list(FILES) if "all" in args.names else args.names
    try:
        for path in download(names, args.out, force=args.force):
            print(f"{path.name}: {path.stat().st_size / 1e9:.2f} GB in {args.out}")
    except DownloadError as e:
        print(f"spongebob: error: {e}", file=sys.stderr)
        return 2
    return 0


def _data_prepare(args: argparse.Namespace) -> int:
    import time

    from spongebob.data import prepare
    from spongebob.runtime import artifacts_dir
    from spongebob.tokenizer import load_tokenizer

    if args.tokenizer is None:
        from spongebob.world import course_tokenizer

        tok, tok_name = course_tokenizer(), "course tokenizer"
    else:
        tok, tok_name = load_tokenizer(args.tokenizer), str(args.tokenizer)
    out = args.out or artifacts_dir("prepared", args.input.stem)
    meta_file = Path(out) / "meta.json"
    before = meta_file.stat().st_mtime_ns if meta_file.exists() else None
    start = time.perf_counter()
    meta = prepare(
        args.input, tok, out, max_seq_len=args.max_seq_len, skip_bad_lines=args.skip_bad_lines
    )
    secs = time.perf_counter() - start
    mb = args.input.stat().st_size / 1e6
    print(f"{args.input.name} ({mb:.1f} MB, {meta['kind']}) with the {tok_name} -> {out}")
    print(
        f"  {meta['documents']:,} documents, {meta['tokens']:,} tokens, "
        f"{meta['trained_tokens']:,} trained; truncated {meta['truncated']}, "
        f"dropped (nothing trained left) {meta['dropped_untrained']}"
    )
    reused = before is not None and meta_file.stat().st_mtime_ns == before
    print("  already prepared: reused" if reused else f"  {secs:.1f} s, {mb / secs:.1f} MB/s")
    bad = meta["bad_lines"]
    if bad["count"]:
        shown = "; ".join(f"line {n}: {p}" for n, p in bad["lines"][:10])
        print(f"  skipped {bad['count']} bad line(s) (all listed in {out}/meta.json): {shown}")
    return 0


def _tokenizer_train(args: argparse.Namespace) -> int:
    from spongebob.tokenizer import train_tokenizer

    tok = train_tokenizer(args.input, vocab_size=args.vocab_size, out_dir=args.out)
    print(f"trained a {tok.vocab_size}-token byte-level BPE tokenizer -> {args.out}")
    return 0


# Flags of `train` commands that override a field of TrainConfig (default: the preset's value).
_TRAIN_FLAGS = {
    "lr": (float, "peak learning rate"),
    "warmup_steps": (int, "linear warmup steps from lr 0"),
    "max_steps": (int, "optimizer steps (default: the preset's; the seed preset runs one epoch)"),
    "max_minutes": (float, "time budget in minutes (the schedule is fitted to it)"),
    "epochs": (float, "passes over the data when neither max_steps nor max_minutes is set"),
    "batch_size": (int, "sequences per micro-batch and rank"),
    "seq_len": (int, "tokens per sequence"),
    "grad_accum": (int, "micro-batches per optimizer step"),
    "clip": (float, "gradient-norm clipping (0 = off)"),
    "weight_decay": (float, "AdamW weight decay of the weight matrices"),
    "seed": (int, "random seed"),
    "dtype": (str, "auto | bf16 | fp16 | fp32"),
    "log_every": (int, "steps between log records"),
    "eval_every": (int, "steps between validation losses (0 = at the end)"),
    "save_every": (int, "steps between checkpoints (0 = at the end)"),
    "tracker": (str, "none | wandb | swanlab"),
}


def _train_pretrain(args: argparse.Namespace) -> int:
    from spongebob.pretrain import pretrain
    from spongebob.train import TrainConfig, setup_distributed

    overrides = {k: getattr(args, k) for k in _TRAIN_FLAGS if getattr(args, k) is not None}
    if args.compile:
        overrides["compile"] = True
    if args.max_minutes is not None and args.max_steps is None:
        overrides["max_steps"] = None  # the time budget decides the length
    cfg = TrainConfig.preset(args.preset, **overrides)
    if args.tokenizer is not None:
        from spongebob.tokenizer import load_tokenizer

        tok = load_tokenizer(args.tokenizer)
    else:
        from spongebob.world import course_tokenizer

        tok = course_tokenizer()
    out = args.out or Path("runs") / f"pretrain-{args.preset}"
    rank, world, _ = setup_distributed()
    if rank == 0:
        print(f"pretraining ({args.preset} preset, {world} process(es)) -> {out}", flush=True)
    result = pretrain(
        args.data, tok, out, cfg, model_preset=args.model_preset or args.preset,
        resume=args.resume, init=args.init,
    )  # fmt: skip
    if rank == 0:
        last = result.history[-1] if result.history else {}
        val = result.val_history[-1]["val_loss"] if result.val_history else float("nan")
        print(f"done: {result.step} steps, loss {last.get('loss', float('nan')):.3f}, "
              f"validation loss {val:.3f}, checkpoint {result.checkpoint}")  # fmt: skip
    return 0


def _train_tokenizer(args: argparse.Namespace):
    """The tokenizer of ``--tokenizer``, else the course tokenizer of the embedded data."""
    if args.tokenizer is not None:
        from spongebob.tokenizer import load_tokenizer

        return load_tokenizer(args.tokenizer)
    from spongebob.world import course_tokenizer

    return course_tokenizer()


def _data_arg(args: argparse.Namespace) -> Path:
    """DATA (positional, like `train pretrain`) or ``--data``: exactly one, and it must exist."""
    if (args.data is None) == (args.data_opt is None):
        raise ValueError("give the training data once: DATA or --data FILE_OR_PREPARED_DIR")
    data = args.data if args.data is not None else args.data_opt
    if not data.exists():
        raise FileNotFoundError(f"{data}: no such file or folder (a chat JSONL file or a "
                                "prepared folder)")  # fmt: skip
    return data


def _check_init(init: Path, tok) -> None:
    """One-line errors, before any data is prepared, for an --init that cannot start this run."""
    from spongebob.checkpoint import CheckpointError, read_checkpoint
    from spongebob.data import tokenizer_fingerprint

    state, extras = read_checkpoint(init)
    if not extras.get("config"):
        raise CheckpointError(f"{init}: a bare state dict carries no configuration; --init needs "
                              "one of our checkpoints (e.g. a pretrain run's last.pt)")  # fmt: skip
    vocab = extras["config"].get("vocab_size")
    if vocab != tok.vocab_size:
        raise ValueError(f"{init} was built for {vocab} tokens but the tokenizer has "
                         f"{tok.vocab_size}; pass the matching --tokenizer")  # fmt: skip
    want = extras.get("tokenizer")
    if want and want != tokenizer_fingerprint(tok):
        raise ValueError(f"{init} was trained with another tokenizer (fingerprint differs); pass "
                         "the one it was trained with as --tokenizer")  # fmt: skip


def _train_chat_stage(args: argparse.Namespace, kind: str) -> int:
    """`train sft` and `train distill`: the same flags, another stage function and preset table."""
    from spongebob.train import setup_distributed

    if kind == "sft":
        from spongebob.sft import sft as run
        from spongebob.sft import sft_config as make_config
        from spongebob.sft import sft_options as options
    else:
        from spongebob.distill import distill as run
        from spongebob.distill import distill_config as make_config
        from spongebob.distill import distill_options as options

    data = _data_arg(args)
    overrides = {k: getattr(args, k) for k in _TRAIN_FLAGS if getattr(args, k) is not None}
    if args.compile:
        overrides["compile"] = True
    if args.max_minutes is not None and args.max_steps is None:
        overrides["max_steps"] = None  # the time budget decides the length
    cfg = make_config(args.preset, **overrides)
    opts = options(args.preset)
    if args.replay is not None:
        opts["replay"] = args.replay
    if kind == "distill" and args.tag_weight is not None:
        opts["tag_weight"] = args.tag_weight
    if opts.get("replay", 0) > 0 and args.replay_data is None:
        raise ValueError(f"the {args.preset} preset replays pretraining text (replay "
                         f"{opts['replay']}): pass --replay-data FILE_OR_PREPARED_DIR, or "
                         "--replay 0")  # fmt: skip
    if args.replay_data is not None and not args.replay_data.exists():
        raise FileNotFoundError(f"{args.replay_data}: no such file or folder (--replay-data: "
                                "pretraining JSONL or a prepared folder)")  # fmt: skip
    tok = _train_tokenizer(args)
    _check_init(args.init, tok)
    if kind == "sft":
        opts["stage"] = "sft_long" if args.preset.endswith("-long") else "sft"
    out = args.out or Path("runs") / f"{kind}-{args.preset}"
    rank, world, _ = setup_distributed()
    if rank == 0:
        print(f"{kind} ({args.preset} preset, {world} process(es)) from {args.init} -> {out}",
              flush=True)  # fmt: skip
    result = run(data, tok, out, cfg, init=args.init, replay_source=args.replay_data,
                 resume=args.resume, **opts)  # fmt: skip
    if rank == 0:
        last = result.history[-1] if result.history else {}
        print(f"done: {result.step} steps, loss {last.get('loss', float('nan')):.3f}, "
              f"checkpoint {result.checkpoint}")  # fmt: skip
    return 0


def _train_sft(args: argparse.Namespace) -> int:
    return _train_chat_stage(args, "sft")


def _train_distill(args: argparse.Namespace) -> int:
    return _train_chat_stage(args, "distill")


def _pipeline(args: argparse.Namespace) -> int:
    from spongebob.pipeline import build_plan, describe_plan, run_pipeline

    plan = build_plan(args.preset, args.out, data_dir=args.data, max_steps=args.max_steps,
                      eval_limit=args.eval_limit)  # fmt: skip
    print(describe_plan(plan), flush=True)
    if args.dry_run:
        return 0
    from spongebob.download import DownloadError

    try:
        run_pipeline(plan, log=lambda m: print(m, flush=True))
    except DownloadError as e:
        print(f"spongebob: error: {e}", file=sys.stderr)
        return 2
    return 0


# ------------------------------------------------ checkpoints (every command's --checkpoint)
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


def _chat_tokenizer(args: argparse.Namespace, model, extras: dict):
    """The tokenizer of ``--tokenizer`` (else the course's), checked against the checkpoint."""
    from spongebob.data import tokenizer_fingerprint
    from spongebob.tokenizer import load_tokenizer

    if args.tokenizer is not None:
        try:
            tok = load_tokenizer(args.tokenizer)
        except (FileNotFoundError, ValueError):
            raise
        except Exception as e:  # the tokenizers library raises a bare Exception on a bad file
            raise ValueError(f"{args.tokenizer}: not a readable tokenizer ({e})") from e
    elif model.config.vocab_size == 2048 or extras.get("tokenizer"):
        from spongebob.world import course_tokenizer

        tok = course_tokenizer()
    else:
        raise ValueError(f"{args.checkpoint}: vocab_size {model.config.vocab_size} is not the "
                         "course tokenizer's; pass --tokenizer DIR (e.g. the original's folder)")  # fmt: skip
    if tok.vocab_size != model.config.vocab_size:
        raise ValueError(f"the tokenizer has {tok.vocab_size} tokens but {args.checkpoint} was "
                         f"built for {model.config.vocab_size}; pass the matching --tokenizer")  # fmt: skip
    want = extras.get("tokenizer")
    if want and want != tokenizer_fingerprint(tok):
        raise ValueError(f"{args.checkpoint} was trained with another tokenizer (fingerprint "
                         "differs); pass the one it was trained with as --tokenizer")  # fmt: skip
    return tok


class TemplatePrompts:
    """Prompts rendered by a foreign tokenizer folder's own chat template, tokenized as
    `transformers` does (special tokens parsed); ``encode`` returns ``(ids, None)`` like
    `ChatEncoder`'s. For templates in another format than the course's (``course_format`` False);
    ``system_prompt`` becomes a leading system message."""

    def __init__(self, tokenizer, system_prompt: str | None = None) -> None:
        self.tokenizer, self.system_prompt = tokenizer, system_prompt

    def encode(self, messages: list[dict]) -> tuple[list[int], None]:
        msgs = list(messages)
        if self.system_prompt is not None:
            msgs = [{"role": "system", "content": self.system_prompt}, *msgs]
        text = self.tokenizer.apply_chat_template(msgs, add_generation_prompt=True)
        return self.tokenizer.encode(text), None


def prompt_encoder(tokenizer, system_prompt: str | None = None):
    """`ChatEncoder` for the course format (our folders, and foreign templates that render it, with
    their own default system prompt); `TemplatePrompts` for a template in another format."""
    from spongebob.data import ChatEncoder

    if tokenizer.course_format:
        return ChatEncoder(tokenizer, system_prompt)
    return TemplatePrompts(tokenizer, system_prompt)


def fit_history(encoder, history: list[dict], budget: int) -> tuple[list[dict], list[int], int]:
    """Drop the oldest whole exchanges until the prompt fits ``budget`` tokens.

    Returns ``(kept messages, prompt ids, exchanges dropped)``; the last user turn is always
    kept, and raises ``ValueError`` when it alone does not fit. Turns are dropped in pairs (a
    user turn with its reply), never cut, so no token is split.
    """
    msgs, dropped = list(history), 0
    while True:
        ids, _ = encoder.encode(msgs)
        if len(ids) <= budget:
            return msgs, ids, dropped
        if len(msgs) <= 1:
            raise ValueError(f"this message alone is {len(ids)} tokens; the context leaves "
                             f"{budget} for the prompt (shorten it or lower --max-new-tokens)")  # fmt: skip
        msgs, dropped = msgs[2:], dropped + 1


class ReasoningSplitter:
    """Split streamed text into ``("think", text)`` and ``("answer", text)`` parts, tags removed.

    Works on text pieces, so a tag split over several pieces (the original's tokenizer spells
    ``<think>`` with several tokens) is still found: a tail that could start a tag is held back.
    """

    TAGS = {"<think>": "think", "</think>": "answer", "<answer>": None, "</answer>": None}

    def __init__(self) -> None:
        self.mode, self.buf = "answer", ""

    def feed(self, piece: str) -> list[tuple[str, str]]:
        self.buf += piece
        out: list[tuple[str, str]] = []
        while self.buf:
            i = self.buf.find("<")
            if i < 0:
                out.append((self.mode, self.buf))
                self.buf = ""
                break
            if i:
                out.append((self.mode, self.buf[:i]))
                self.buf = self.buf[i:]
            tag = next((t for t in self.TAGS if self.buf.startswith(t)), None)
            if tag is not None:
                self.mode = self.TAGS[tag] or self.mode
                self.buf = self.buf[len(tag) :]
            elif any(t.startswith(self.buf) for t in self.TAGS):
                break  # maybe the start of a tag: wait for more text
            else:
                out.append((self.mode, "<"))
                self.buf = self.buf[1:]
        return [(k, t) for k, t in out if t]

    def flush(self) -> list[tuple[str, str]]:
        rest, self.buf = self.buf, ""
        return [(self.mode, rest)] if rest else []


def _sampling(args: argparse.Namespace) -> dict:
    kw = {"temperature": args.temperature, "top_p": args.top_p, "top_k": args.top_k,
          "repetition_penalty": args.repetition_penalty}  # fmt: skip
    if args.seed is not None:
        kw["seed"] = args.seed
    return kw


def _reply(model, tok, encoder, history, args, show) -> str:
    """Generate one reply to ``history``, passing ``(kind, text)`` parts to ``show`` as they come;
    returns the answer text (reasoning removed)."""
    from spongebob.generate import stream_generate
    from spongebob.tokenizer import StreamDecoder

    budget = model.config.max_seq_len - args.max_new_tokens
    kept, ids, dropped = fit_history(encoder, history, budget)
    if dropped:
        del history[: len(history) - len(kept)]  # the context forgets the oldest exchanges
        show("note", f"[{dropped} oldest exchange(s) dropped to fit the context]\n")
    decoder, splitter, answer = StreamDecoder(tok), ReasoningSplitter(), []
    kw = dict(eos_token_id=tok.eos_id, pad_token_id=tok.pad_id, **_sampling(args))
    for token in stream_generate(model, ids, args.max_new_tokens, **kw):
        if token == tok.eos_id:
            break
        for kind, text in splitter.feed(decoder.put(token)):
            answer += [text] if kind == "answer" else []
            show(kind, text)
    for kind, text in splitter.feed(decoder.flush()) + splitter.flush():
        answer += [text] if kind == "answer" else []
        show(kind, text)
    return "".join(answer).strip()


def _chat(args: argparse.Namespace) -> int:
    if args.max_new_tokens < 1:
        raise ValueError(f"--max-new-tokens must be >= 1, got {args.max_new_tokens}")
    model, extras = load_model_checkpoint(args.checkpoint, args.n_heads,
                                          log=lambda m: print(m, file=sys.stderr))  # fmt: skip
    tok = _chat_tokenizer(args, model, extras)
    encoder = prompt_encoder(tok, args.system)
    if args.prompt is not None:
        reply = _reply(model, tok, encoder, [{"role": "user", "content": args.prompt}], args,
                       show=lambda kind, text: None)  # fmt: skip
        print(reply)
        return 0
    tty = sys.stdout.isatty()
    grey = (lambda s: f"\033[2m{s}\033[0m") if tty else (lambda s: s)
    stage = extras.get("stage", "a bare state dict")
    print(f"chatting with {args.checkpoint.name} ({stage}); /clear forgets, /quit leaves")
    state = {"kind": None}

    def show(kind: str, piece: str) -> None:
        if kind != state["kind"]:
            print("\n" if state["kind"] else "", end="")
            print({"think": grey("thinking> "), "answer": "bot> ", "note": ""}[kind], end="")
            state["kind"] = kind
        print(grey(piece) if kind in ("think", "note") else piece, end="", flush=True)

    history: list[dict] = []
    while True:
        try:
            line = input("you> ")
        except (EOFError, KeyboardInterrupt):
            print()
            return 0
        text = line.strip()
        if text in ("/quit", "/exit"):
            return 0
        if text == "/clear":
            history.clear()
            print("(history cleared)")
            continue
        if not text:
            continue
        history.append({"role": "user", "content": text})
        state["kind"] = None
        try:
            reply = _reply(model, tok, encoder, history, args, show)
        except ValueError as e:
            history.pop()
            print(f"(not sent: {e})")
            continue
        except KeyboardInterrupt:
            reply = "(interrupted)"
        print("bot> " if state["kind"] is None else "")
        history.append({"role": "assistant", "content": reply})


def _eval(args: argparse.Namespace) -> int:
    import json

    from spongebob.data import ChatEncoder  # noqa: F401  (fails early without torch)
    from spongebob.evaluate import EVAL_SETS, evaluate_file
    from spongebob.files import atomic_write_text

    if (args.file is None) != (args.grader is None):
        raise ValueError("--file and --grader go together (a file is never graded by guessing)")
    model, extras = load_model_checkpoint(args.checkpoint, args.n_heads)
    tok = _chat_tokenizer(args, model, extras)
    if not tok.course_format:  # answer_chats (07) renders prompts with chat_segments
        raise ValueError(
            f"{args.tokenizer}: its chat template renders another format than the course's; "
            "eval prompts need the course format (chat takes any template)"
        )
    kw = {"batch_size": args.batch_size, "limit": args.limit}
    if args.file is not None:
        budget = args.max_new_tokens or 64
        jobs = [(args.file.stem, args.file, args.grader, budget)]
    else:
        if args.data is None:
            from spongebob.world import sample_dir

            args.data = sample_dir()
        unknown = [s for s in args.sets if s not in EVAL_SETS]
        if unknown:
            raise ValueError(f"--sets: unknown {unknown}; choose from {sorted(EVAL_SETS)}")
        jobs = [(s, args.data / EVAL_SETS[s][0], EVAL_SETS[s][1],
                 args.max_new_tokens or EVAL_SETS[s][2]) for s in args.sets]  # fmt: skip
    print(f"{'set':<14}{'grader':<8}{'n':>5}{'accuracy':>10}{'ends </s>':>11}")
    results = {}
    for name, path, grader, budget in jobs:
        r = evaluate_file(model, tok, path, grader, name=name, max_new_tokens=budget, **kw)
        results[name] = r.to_dict()
        print(f"{name:<14}{grader:<8}{len(r.records):>5}{r.accuracy:>10.1%}{r.stopped:>11.1%}")
    if args.out is not None:
        doc = {"checkpoint": str(args.checkpoint), "stage": extras.get("stage"), "sets": results}
        atomic_write_text(args.out, json.dumps(doc, ensure_ascii=False, indent=1) + "\n")
        print(f"wrote {args.out}")
    return 0


# ------------------------------------------------------------------------------ export
def _export(args: argparse.Namespace) -> int:
    from spongebob import export

    model, extras = load_model_checkpoint(args.checkpoint, args.n_heads)
    tok = _chat_tokenizer(args, model, extras)
    fn = export.export_hf if args.format == "hf" else export.export_gguf
    try:
        out = fn(model, tok, args.out, dtype=args.dtype)
    except ImportError as e:  # the hf or gguf extra is not installed
        print(f"spongebob: error: {e}", file=sys.stderr)
        return 2
    c = model.config
    shape = f"{c.n_layers} layers, dim {c.dim}, {c.n_heads}/{c.n_kv_heads} heads/kv heads"
    print(f"{args.checkpoint.name} ({shape}, vocab {c.vocab_size}) -> {out} "
          f"({args.format}, {args.dtype})")  # fmt: skip
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="spongebob", description="Build a small chat LLM from scratch."
    )
    groups = p.add_subparsers(dest="group", required=True)

    data = groups.add_parser("data", help="embedded sample data and the real datasets")
    data_cmds = data.add_subparsers(dest="cmd", required=True)
    s = data_cmds.add_parser("sample", help="generate the embedded Bikini Bottom data set")
    s.add_argument("--out", type=Path, required=True, help="output folder")
    s.add_argument("--seed", type=int, default=0, help="world seed (default 0)")
    s.set_defaults(func=_data_sample)

    dl = data_cmds.add_parser(
        "download", help="download the original's real data from ModelScope (needs internet)"
    )
    dl.add_argument(
        "names",
        nargs="+",
        choices=["pretrain", "sft_512", "sft_1024", "r1_1024", "all"],
        help="files to fetch: pretrain (~1.6 GB), sft_512 (~7 GB), sft_1024 (~5.2 GB), r1_1024",
    )
    dl.add_argument("--out", type=Path, required=True, help="folder for the JSONL files")
    dl.add_argument("--force", action="store_true", help="download files that are already there")
    dl.set_defaults(func=_data_download)

    pr = data_cmds.add_parser(
        "prepare", help="pre-tokenise a pretraining or chat JSONL file into uint16 memmaps"
    )
    pr.add_argument("--input", type=Path, required=True, help="pretrain/sft/r1 JSONL file")
    pr.add_argument(
        "--tokenizer", type=Path, default=None, help="tokenizer folder (default: the course's)"
    )
    pr.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output folder (default: $SPONGEBOB_HOME/prepared/NAME)",
    )
    pr.add_argument(
        "--max-seq-len", type=int, default=512, help="chats longer than this + 1 are truncated"
    )
    pr.add_argument(
        "--skip-bad-lines",
        action="store_true",
        help="skip malformed lines (counted and listed in meta.json) instead of stopping",
    )
    pr.set_defaults(func=_data_prepare)

    tok = groups.add_parser("tokenizer", help="train a byte-level BPE tokenizer")
    tok_cmds = tok.add_subparsers(dest="cmd", required=True)
    t = tok_cmds.add_parser("train", help="train on the 'text' field of a JSONL file")
    t.add_argument("--input", type=Path, required=True, help="pretraining JSONL ({'text': ...})")
    t.add_argument("--vocab-size", type=int, default=6400)
    t.add_argument("--out", type=Path, required=True, help="output tokenizer folder")
    t.set_defaults(func=_tokenizer_train)

    tr = groups.add_parser("train", help="train a model (one loop: pretrain, SFT, distill)")
    tr_cmds = tr.add_subparsers(dest="cmd", required=True)
    pt = tr_cmds.add_parser("pretrain", help="pretrain a fresh model on packed text")
    pt.add_argument("data", type=Path, help="pretraining JSONL file or a prepared folder")
    pt.add_argument(
        "--preset",
        choices=("tiny", "seed"),
        default="tiny",
        help="training recipe and model size (tiny: CPU minutes; seed: the original)",
    )
    pt.add_argument(
        "--model-preset",
        default=None,
        help="model size if not the training preset's (tiny, seed, seed-gqa)",
    )
    pt.add_argument(
        "--out",
        type=Path,
        default=None,
        help="run folder for last.pt and metrics.jsonl (default runs/pretrain-PRESET)",
    )
    pt.add_argument(
        "--tokenizer",
        type=Path,
        default=None,
        help="tokenizer folder (default: the course tokenizer of the embedded data)",
    )
    start = pt.add_mutually_exclusive_group()
    start.add_argument("--resume", action="store_true", help="continue OUT/last.pt exactly")
    start.add_argument(
        "--init",
        type=Path,
        default=None,
        help="start from another checkpoint's weights (loaded strictly)",
    )
    pt.add_argument("--compile", action="store_true", help="torch.compile the model")
    for name, (kind, text) in _TRAIN_FLAGS.items():
        pt.add_argument(
            "--" + name.replace("_", "-"),
            type=kind,
            default=None,
            help=text + " (default: the preset's)",
        )
    pt.set_defaults(func=_train_pretrain)

    for kind, presets, what in (
        ("sft", ("tiny", "tiny-long", "seed", "seed-long"),
         "supervised fine-tuning of a checkpoint on chats (SFT or long SFT)"),
        ("distill", ("tiny", "seed"), "reasoning distillation of an SFT checkpoint (R1 chats)"),
    ):  # fmt: skip
        c = tr_cmds.add_parser(kind, help=what)
        c.add_argument("data", type=Path, nargs="?", default=None,
                       help="chat JSONL file or a prepared folder (or --data)")  # fmt: skip
        c.add_argument("--data", dest="data_opt", metavar="DATA", type=Path, default=None,
                       help="the same as DATA")  # fmt: skip
        c.add_argument("--init", type=Path, required=True,
                       help="checkpoint to start from (pretrain for SFT, SFT for distill)")  # fmt: skip
        c.add_argument("--preset", choices=presets, default="tiny",
                       help=f"recipe ({', '.join(presets)}; *-long: 1024-token chats, the long "
                            "stage)" if kind == "sft" else "recipe (tiny: CPU minutes; seed: "
                            "the original's)")  # fmt: skip
        c.add_argument("--out", type=Path, default=None,
                       help=f"run folder for last.pt and metrics.jsonl (default runs/{kind}-PRESET)")  # fmt: skip
        c.add_argument("--tokenizer", type=Path, default=None,
                       help="tokenizer folder (default: the course tokenizer of the embedded data)")  # fmt: skip
        c.add_argument("--replay-data", type=Path, default=None,
                       help="pretraining JSONL or prepared folder replayed among the chats "
                            "(needed when the preset's replay share is > 0)")  # fmt: skip
        c.add_argument("--replay", type=float, default=None,
                       help="share of replay batches (default: the preset's; 0 = none)")  # fmt: skip
        if kind == "distill":
            c.add_argument("--tag-weight", type=float, default=None,
                           help="loss weight of the reasoning-tag targets (default: the preset's)")  # fmt: skip
        c.add_argument("--resume", action="store_true", help="continue OUT/last.pt exactly")
        c.add_argument("--compile", action="store_true", help="torch.compile the model")
        for name, (typ, text) in _TRAIN_FLAGS.items():
            c.add_argument("--" + name.replace("_", "-"), type=typ, default=None,
                           help=text + " (default: the preset's)")  # fmt: skip
        c.set_defaults(func=_train_sft if kind == "sft" else _train_distill)

    def model_args(c: argparse.ArgumentParser) -> None:
        c.add_argument("--checkpoint", type=Path, required=True,
                       help="a checkpoint of any stage, or a bare state dict (the original's)")  # fmt: skip
        c.add_argument("--tokenizer", type=Path, default=None,
                       help="tokenizer folder (default: the course tokenizer)")  # fmt: skip
        c.add_argument("--n-heads", type=int, default=None,
                       help="attention heads of a bare state dict (not in its shapes; default 8)")  # fmt: skip

    ch = groups.add_parser("chat", help="chat with a checkpoint (multi-turn, streaming)")
    model_args(ch)
    ch.add_argument("--prompt", default=None, help="answer this once, print only the answer")
    ch.add_argument("--system", default=None, help="system prompt (default: the tokenizer's)")
    ch.add_argument("--temperature", type=float, default=0.85, help="0 = greedy (default 0.85)")
    ch.add_argument("--top-p", type=float, default=0.85, help="nucleus sampling (default 0.85)")
    ch.add_argument("--top-k", type=int, default=None, help="keep the k likeliest tokens")
    ch.add_argument("--repetition-penalty", type=float, default=1.3, help="default 1.3")
    ch.add_argument("--max-new-tokens", type=int, default=256, help="reply length cap")
    ch.add_argument("--seed", type=int, default=None, help="seed for reproducible sampling")
    ch.set_defaults(func=_chat)

    ev = groups.add_parser("eval", help="grade a checkpoint on held-out sets or your JSONL")
    model_args(ev)
    ev.add_argument("--sets", nargs="+", default=["facts", "facts_train", "single_facts", "long"],
                    help="eval sets of the embedded world (facts facts_train single_facts long "
                         "arith; default all but arith)")  # fmt: skip
    ev.add_argument("--data", type=Path, default=None,
                    help="folder holding the eval files (default: the embedded sample)")  # fmt: skip
    ev.add_argument("--file", type=Path, default=None,
                    help='your own JSONL of {"messages", "expected"} lines (needs --grader)')  # fmt: skip
    ev.add_argument("--grader", choices=("fact", "number"), default=None, help="for --file")
    ev.add_argument("--out", type=Path, default=None, help="write every graded answer as JSON")
    ev.add_argument("--limit", type=int, default=None, help="first N questions of each set")
    ev.add_argument("--batch-size", type=int, default=32, help="questions answered together")
    ev.add_argument("--max-new-tokens", type=int, default=None,
                    help="answer budget (default: per set; 64 for --file)")  # fmt: skip
    ev.set_defaults(func=_eval)

    pl = groups.add_parser("pipeline", help="every stage in one resumable run, with a report")
    pl.add_argument("--preset", choices=("tiny", "seed"), default="tiny",
                    help="tiny: the embedded data on a CPU (minutes); seed: the original's recipe "
                         "on the real data (GPU; downloads it first)")  # fmt: skip
    pl.add_argument("--out", type=Path, default=None,
                    help="output folder (default: $SPONGEBOB_HOME/pipeline/PRESET)")  # fmt: skip
    pl.add_argument("--data", type=Path, default=None,
                    help="folder with the JSONL files (default: the embedded world for tiny, "
                         "OUT/data, downloaded, for seed)")  # fmt: skip
    pl.add_argument("--dry-run", action="store_true", help="print the stage plan, run nothing")
    pl.add_argument("--max-steps", type=int, default=None,
                    help="cap every training stage at N steps (a smoke test)")  # fmt: skip
    pl.add_argument("--eval-limit", type=int, default=None,
                    help="grade only the first N questions of each eval set (a smoke test)")  # fmt: skip
    pl.set_defaults(func=_pipeline)

    ex = groups.add_parser("export", help="export a checkpoint to Hugging Face or GGUF (llama.cpp)")
    ex_cmds = ex.add_subparsers(dest="format", required=True)
    for fmt, what, out_help, dtypes in (
        ("hf", "a Hugging Face LlamaForCausalLM folder (transformers)", "output folder",
         ("float32", "bfloat16", "float16")),
        ("gguf", "a GGUF file (llama.cpp, ollama)", "output .gguf file", ("f32", "f16")),
    ):  # fmt: skip
        e = ex_cmds.add_parser(fmt, help=f"write {what}")
        model_args(e)
        e.add_argument("--out", type=Path, required=True, help=out_help)
        e.add_argument("--dtype", choices=dtypes, default=dtypes[0],
                       help=f"weight type (default {dtypes[0]}: exact)")  # fmt: skip
        e.set_defaults(func=_export)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (FileNotFoundError, ValueError) as e:
        print(f"spongebob: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
