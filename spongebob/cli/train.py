# Hand-written module (not generated from a notebook).
"""``spongebob train pretrain|sft|distill|rl``: one training loop for three stages, and GRPO.

``pretrain``, ``sft`` and ``distill`` share the training loop of ``spongebob.train``; it is also
what ``torchrun --nproc_per_node=N -m spongebob train ...`` runs: every rank parses the same
command, joins the process group and leaves it at the end (``destroy_process_group``). ``rl``
(reinforcement learning with GRPO, ``spongebob.rl``, chapter 09) samples answers and runs in one
process: it refuses torchrun.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from spongebob.cli.common import (
    SEED_VOCAB,
    CliError,
    add_bad_lines_args,
    add_device_arg,
    bad_lines_kwargs,
    device_arg,
    finish_distributed,
    input_file,
    input_path,
    is_seed,
    output_dir,
    resolve_tokenizer,
)

# Flags of `train` commands that override a field of TrainConfig (default: the preset's value).
TRAIN_FLAGS = {
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


def _overrides(args: argparse.Namespace) -> dict:
    """The TrainConfig fields the command line sets (the preset gives every other one)."""
    overrides = {k: getattr(args, k) for k in TRAIN_FLAGS if getattr(args, k) is not None}
    for k in ("max_steps", "batch_size", "seq_len", "grad_accum", "log_every"):
        if k in overrides and overrides[k] < 1:
            raise CliError(f"--{k.replace('_', '-')} must be >= 1, got {overrides[k]}")
    if args.compile is not None:
        overrides["compile"] = args.compile
    if args.max_minutes is not None and args.max_steps is None:
        overrides["max_steps"] = None  # the time budget decides the length
    return overrides


def _stage_kwargs(args: argparse.Namespace) -> dict:
    """Options every stage function takes (`pretrain`, `sft`, `distill`): the device of
    ``--device`` and the bad-line options."""
    return {"device": device_arg(args), **bad_lines_kwargs(args)}


def _out(args: argparse.Namespace, default: Path) -> Path:
    out = args.out or default
    output_dir(out, "--out: the run folder")
    if args.resume and not (out / "last.pt").is_file():
        raise CliError(f"{out / 'last.pt'}: no such file (--resume continues a run's last.pt)")
    return out


def _train_pretrain(args: argparse.Namespace) -> int:
    from spongebob.config import PRESETS, ModelConfig
    from spongebob.pretrain import pretrain
    from spongebob.train import TrainConfig, setup_distributed

    data = input_path(args.data, "DATA: a pretraining JSONL file or a prepared folder")
    cfg = TrainConfig.preset(args.preset, **_overrides(args))
    model_preset = args.model_preset or args.preset
    if model_preset not in PRESETS:
        raise CliError(f"--model-preset {model_preset}: unknown; choose one of {sorted(PRESETS)}")
    vocab = ModelConfig.preset(model_preset).vocab_size if is_seed(model_preset) else None
    tok, _ = resolve_tokenizer(args.tokenizer, model_preset if vocab else args.preset, vocab)
    if args.init is not None:
        _check_init(args.init, tok)
    out = _out(args, Path("runs") / f"pretrain-{args.preset}")
    kw = _stage_kwargs(args)
    rank, world, _ = setup_distributed(kw["device"])
    try:
        if rank == 0:
            print(f"pretraining ({args.preset} preset, {world} process(es), {kw['device'].type})"
                  f" -> {out}", flush=True)  # fmt: skip
        result = pretrain(data, tok, out, cfg, model_preset=model_preset, resume=args.resume,
                          init=args.init, **kw)  # fmt: skip
        if rank == 0:
            last = result.history[-1] if result.history else {}
            val = result.val_history[-1]["val_loss"] if result.val_history else float("nan")
            print(f"done: {result.step} steps, loss {last.get('loss', float('nan')):.3f}, "
                  f"validation loss {val:.3f}, checkpoint {result.checkpoint}")  # fmt: skip
    finally:
        finish_distributed()
    return 0


def _data_arg(args: argparse.Namespace, what: str = "a chat JSONL file or a prepared folder",
              check=input_path) -> Path:  # fmt: skip
    """DATA (positional, like `train pretrain`) or ``--data``: exactly one, and it must exist
    (``check``: `input_path`, or `input_file` where a folder will not do)."""
    if (args.data is None) == (args.data_opt is None):
        raise CliError("give the training data once: DATA or --data FILE_OR_PREPARED_DIR")
    data = args.data if args.data is not None else args.data_opt
    return check(data, what)


def _check_init(init: Path, tok) -> None:
    """One-line errors, before any data is prepared, for an --init that cannot start this run."""
    from spongebob.checkpoint import CheckpointError, read_checkpoint
    from spongebob.data import tokenizer_fingerprint

    if init.is_dir():
        raise CliError(f"{init}: is a folder; --init takes a checkpoint file (e.g. RUN/last.pt)")
    state, extras = read_checkpoint(init)
    if not extras.get("config"):
        raise CheckpointError(f"{init}: a bare state dict carries no configuration; --init needs "
                              "one of our checkpoints (e.g. a pretrain run's last.pt)")  # fmt: skip
    vocab = extras["config"].get("vocab_size")
    if vocab != tok.vocab_size:
        raise CliError(f"{init} was built for {vocab} tokens but the tokenizer has "
                       f"{tok.vocab_size}; pass the matching --tokenizer")  # fmt: skip
    want = extras.get("tokenizer")
    if want and want != tokenizer_fingerprint(tok):
        raise CliError(f"{init} was trained with another tokenizer (fingerprint differs); pass "
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
    cfg = make_config(args.preset, **_overrides(args))
    opts = options(args.preset)
    if args.replay is not None:
        opts["replay"] = args.replay
    if kind == "distill" and args.tag_weight is not None:
        opts["tag_weight"] = args.tag_weight
    if kind == "distill" and args.mix_chats is not None:
        opts["mix_chats"] = args.mix_chats
    if kind == "distill" and opts.get("mix_chats", 0) > 0:
        if args.mix_data is None:
            raise CliError(f"the {args.preset} preset mixes {opts['mix_chats']} SFT chats into "
                           "the reasoning chats: pass --mix-data SFT_CHATS.jsonl, or "
                           "--mix-chats 0")  # fmt: skip
        opts["mix_source"] = input_path(args.mix_data, "--mix-data: a chat JSONL file")
    if opts.get("replay", 0) > 0 and args.replay_data is None:
        raise CliError(f"the {args.preset} preset replays pretraining text (replay "
                       f"{opts['replay']}): pass --replay-data FILE_OR_PREPARED_DIR, or "
                       "--replay 0")  # fmt: skip
    if args.replay_data is not None:
        input_path(args.replay_data, "--replay-data: pretraining JSONL or a prepared folder")
    vocab = SEED_VOCAB if is_seed(args.preset) else None
    tok, _ = resolve_tokenizer(args.tokenizer, args.preset, vocab)
    _check_init(args.init, tok)
    if kind == "sft":
        opts["stage"] = "sft_long" if args.preset.endswith("-long") else "sft"
    out = _out(args, Path("runs") / f"{kind}-{args.preset}")
    kw = _stage_kwargs(args)
    rank, world, _ = setup_distributed(kw["device"])
    try:
        if rank == 0:
            print(f"{kind} ({args.preset} preset, {world} process(es), {kw['device'].type}) "
                  f"from {args.init} -> {out}", flush=True)  # fmt: skip
        result = run(data, tok, out, cfg, init=args.init, replay_source=args.replay_data,
                     resume=args.resume, **opts, **kw)  # fmt: skip
        if rank == 0:
            last = result.history[-1] if result.history else {}
            print(f"done: {result.step} steps, loss {last.get('loss', float('nan')):.3f}, "
                  f"checkpoint {result.checkpoint}")  # fmt: skip
    finally:
        finish_distributed()
    return 0


def _train_sft(args: argparse.Namespace) -> int:
    return _train_chat_stage(args, "sft")


def _train_distill(args: argparse.Namespace) -> int:
    return _train_chat_stage(args, "distill")


# Flags of `train rl` that override a field of RLConfig (default: the preset's value).
RL_FLAGS = {
    "steps": (int, "GRPO steps"),
    "problems": (int, "problems drawn per step"),
    "group": (int, "answers sampled per problem (>= 2)"),
    "lr": (float, "learning rate (constant, AdamW)"),
    "beta": (float, "weight of the KL penalty to the init model"),
    "clip": (float, "clipping of the probability ratio"),
    "updates": (int, "gradient steps per batch of answers"),
    "temperature": (float, "sampling temperature"),
    "max_new_tokens": (int, "longest sampled answer, in tokens"),
    "format_bonus": (float, "reward of a well-formed think/answer reply"),
    "seed": (int, "random seed"),
}


def _train_rl(args: argparse.Namespace) -> int:
    """`train rl`: GRPO (`spongebob.rl.grpo`) from a distilled checkpoint, in one process."""
    import os

    from spongebob.rl import grpo, rl_config

    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world > 1:
        raise CliError(f"train rl runs in one process (WORLD_SIZE={world} under torchrun): run "
                       "it with plain `spongebob train rl`")  # fmt: skip
    data = _data_arg(args, "DATA: a JSONL file of reasoning chats or eval lines", input_file)
    cfg = rl_config(args.preset, **{k: getattr(args, k) for k in RL_FLAGS
                                    if getattr(args, k) is not None})  # fmt: skip
    vocab = SEED_VOCAB if is_seed(args.preset) else None
    tok, _ = resolve_tokenizer(args.tokenizer, args.preset, vocab)
    _check_init(args.init, tok)
    out = args.out or Path("runs") / f"rl-{args.preset}"
    output_dir(out, "--out: the run folder")
    device = device_arg(args)
    print(f"rl ({args.preset} preset, 1 process, {device.type}) from {args.init} -> {out}: "
          f"{cfg.steps} steps of {cfg.problems} problems x {cfg.group} answers", flush=True)  # fmt: skip
    last: dict = {}  # grpo reads DATA before it loads a model: a bad line fails as FILE:LINE
    ckpt = grpo(args.init, data, tok, out, cfg, device=device, on_log=last.update)
    nan = float("nan")
    print(f"done: {last.get('step', cfg.steps)} steps, reward {last.get('reward', nan):.3f}, "
          f"accuracy {last.get('accuracy', nan):.1%}, checkpoint {ckpt}")  # fmt: skip
    return 0


def _common_train_args(c: argparse.ArgumentParser, kind: str) -> None:
    c.add_argument("--tokenizer", type=Path, default=None,
                   help="tokenizer folder (the original's works; required by the seed presets; "
                        "default for the others: the course tokenizer of the embedded data)")  # fmt: skip
    c.add_argument("--out", type=Path, default=None,
                   help=f"run folder for last.pt and metrics.jsonl (default runs/{kind}-PRESET)")  # fmt: skip
    c.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="torch.compile the model (default: the preset's)")  # fmt: skip
    add_device_arg(c)
    add_bad_lines_args(c)
    for name, (typ, text) in TRAIN_FLAGS.items():
        c.add_argument("--" + name.replace("_", "-"), type=typ, default=None,
                       help=text + " (default: the preset's)")  # fmt: skip


def add_parsers(groups) -> None:
    tr = groups.add_parser("train", help="train a model (one loop: pretrain, SFT, distill; "
                           "then GRPO: rl)")  # fmt: skip
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
    start = pt.add_mutually_exclusive_group()
    start.add_argument("--resume", action="store_true", help="continue OUT/last.pt exactly")
    start.add_argument(
        "--init",
        type=Path,
        default=None,
        help="start from another checkpoint's weights (loaded strictly)",
    )
    _common_train_args(pt, "pretrain")
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
        c.add_argument("--replay-data", type=Path, default=None,
                       help="pretraining JSONL or prepared folder replayed among the chats "
                            "(needed when the preset's replay share is > 0; the tiny distill "
                            "preset takes the JSONL and repeats its equation lines)")  # fmt: skip
        c.add_argument("--replay", type=float, default=None,
                       help="share of replay batches (default: the preset's; 0 = none)")  # fmt: skip
        if kind == "distill":
            c.add_argument("--tag-weight", type=float, default=None,
                           help="loss weight of the reasoning-tag targets (default: the preset's)")  # fmt: skip
            c.add_argument("--mix-data", type=Path, default=None,
                           help="SFT chat JSONL whose chats are shuffled into the reasoning "
                                "chats (needed when the preset mixes some in)")  # fmt: skip
            c.add_argument("--mix-chats", type=int, default=None,
                           help="how many SFT chats to mix in (default: the preset's; 0 = none)")  # fmt: skip
        c.add_argument("--resume", action="store_true", help="continue OUT/last.pt exactly")
        _common_train_args(c, kind)
        c.set_defaults(func=_train_sft if kind == "sft" else _train_distill)

    rl = tr_cmds.add_parser("rl", help="reinforcement learning (GRPO) of a distilled checkpoint "
                            "on problems with checkable answers")  # fmt: skip
    rl.add_argument("data", type=Path, nargs="?", default=None,
                    help="JSONL of problems: reasoning chats (r1_1024.jsonl, the answer taken "
                         "from <answer>) or eval lines with 'expected' (or --data)")  # fmt: skip
    rl.add_argument("--data", dest="data_opt", metavar="DATA", type=Path, default=None,
                    help="the same as DATA")  # fmt: skip
    rl.add_argument("--init", type=Path, required=True,
                    help="checkpoint to start from, also the frozen reference (a distill run's)")  # fmt: skip
    rl.add_argument("--preset", choices=("tiny",), default="tiny",
                    help="recipe (tiny: CPU minutes on the embedded world)")  # fmt: skip
    rl.add_argument("--tokenizer", type=Path, default=None,
                    help="tokenizer folder (default: the course tokenizer of the embedded data)")  # fmt: skip
    rl.add_argument("--out", type=Path, default=None,
                    help="run folder for last.pt and metrics.jsonl (default runs/rl-PRESET)")  # fmt: skip
    add_device_arg(rl)
    for name, (typ, text) in RL_FLAGS.items():
        rl.add_argument("--" + name.replace("_", "-"), type=typ, default=None,
                        help=text + " (default: the preset's)")  # fmt: skip
    rl.set_defaults(func=_train_rl)
