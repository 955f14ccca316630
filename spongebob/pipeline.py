# Hand-written module (not generated from a notebook): it orchestrates the stages that the chapters
# define (tokenizer 01, pretraining 06, SFT and long SFT 07, distillation 08, reinforcement
# learning 09, evaluation 07) into one resumable run with a report; chaining stages is plumbing,
# not a concept a chapter teaches.
"""``spongebob pipeline``: every stage of the course in one command, resumable, with a report.

    plan = build_plan("tiny")                 # the stages, their data, presets and folders
    print(describe_plan(plan))                # what `spongebob pipeline --dry-run` prints
    report = run_pipeline(plan)               # trains what is missing, evaluates, writes reports

The stages, each in its own folder under ``plan.out``: ``tokenizer``, ``pretrain``, ``sft``,
``sft-long``, ``distill``, ``rl`` (GRPO on ``r1_1024.jsonl``'s problems from the distilled model,
the tiny preset only), then ``eval`` (the held-out sets of the embedded world, per stage) and the
report (``report.md`` with loss-curve PNGs under ``figures/``, and ``report.json``).

Every training stage goes through the chapter's own "find or re-create" function
(``pretrained_checkpoint``, ``sft_checkpoint``, ``distill_checkpoint``, ``rl_checkpoint``): a
folder that holds a finished run of the same recipe (data, tokenizer, configuration, init
checkpoint) is reused and the stage says ``finished run found, skipped``; anything else trains
again from the stage's start. The ``rl`` stage's configuration is an ``RLConfig`` (a fixed number
of ``steps``), the others' a ``TrainConfig``.
Those functions need a fixed ``max_steps``; a one-epoch stage (the seed presets) is tracked by the
pipeline's own ``stage.json`` instead, which also lets an interrupted stage resume from its last
periodic checkpoint (hours of GPU time are not thrown away).
Evaluations are cached in ``eval/NAME.json`` under the sha256 of the checkpoint they graded.

``--preset seed`` is the original's GPU recipe on the real data: the four ModelScope files are
downloaded first (``spongebob.download``, which fails fast offline), a 6400-token tokenizer is
trained on ``pretrain.jsonl``, the model is the original's size. The embedded world's eval sets
do not apply to the real data, so the seed report holds the losses only; nor is there an ``rl``
stage (its reward needs answers the course's number grader can check, which the real reasoning
data's are not).

``max_steps`` (the CLI's ``--max-steps``) caps every training stage and ``eval_limit`` every eval
set: a smoke test of the whole chain in seconds (the tests use it); the numbers then mean nothing.
The smoke cap also shrinks the ``rl`` stage's steps to ``RL_SMOKE`` (2 problems x 2 answers of at
most 16 tokens); ``batch_size``, ``grad_accum`` and ``compile`` do not apply to it.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DATA_FILES = ("pretrain.jsonl", "sft_512.jsonl", "sft_1024.jsonl", "r1_1024.jsonl")
EVAL_FILES = ("eval_completion.jsonl", "eval_facts.jsonl", "eval_long.jsonl", "eval_arith.jsonl")

# What each pipeline preset runs: the data, the tokenizer size, the model size and the training
# presets of each stage (TrainConfig.preset, SFT_PRESETS, DISTILL_PRESETS, RL_PRESETS; rl None: no
# rl stage), and whether the embedded world's eval sets apply.
PIPELINE_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(data="embedded", vocab_size=2048, model="tiny", tokenizer_lines=None,
                 skip_bad_lines=False, pretrain=("tiny", dict(eval_every=150)), sft="tiny",
                 sft_long="tiny-long", distill="tiny", distill_init="sft", rl="tiny",
                 evaluate=True),
    "seed": dict(data="download", vocab_size=6400, model="seed", tokenizer_lines=200_000,
                 skip_bad_lines=True, pretrain=("seed", {}), sft="seed", sft_long="seed-long",
                 distill="seed", distill_init="sft-long", rl=None, evaluate=False),
}  # fmt: skip
# tokenizer_lines: the tokenizer of the seed preset is trained on the first 200,000 lines of
# pretrain.jsonl (about a seventh of its 1.4 M lines, ~230 MB: BPE's memory grows with the text,
# about 75 MB per MB of Chinese in bench/bench_tokenizer_sample.py, so all 1.6 GB would need over
# 100 GB); skip_bad_lines: real data is skipped and
# counted (stopping above max_bad_fraction), the embedded world is strict; distill_init: the
# original distils its long-SFT model (SFT_1024), chapter 08 the SFT model of the embedded world;
# rl: the seed preset has no rl stage, because GRPO's reward grades each sampled answer with the
# course's number grader and the real r1_1024.jsonl's answers are free text, not numbers to check.

# What --max-steps (a smoke test) does to the rl stage besides capping its steps: a step of a few
# short answers, whatever the preset's (min of the two).
RL_SMOKE: dict[str, int] = {"problems": 2, "group": 2, "max_new_tokens": 16}

# The course's quality targets (COURSE.md), keyed by (stage, measure).
TARGETS: dict[tuple[str, str], float] = {
    ("pretrain", "completion"): 0.80,
    ("sft", "facts"): 0.60,
    ("sft", "facts_stopped"): 1.0,
    ("sft-long", "long"): 0.70,
    ("distill", "arith"): 0.90,
    ("distill", "well_formed"): 0.95,
    ("distill", "facts"): 0.40,  # what distillation keeps of SFT's facts (issue 15)
    ("rl", "arith"): 0.90,  # reinforcement learning must keep (at least) distillation's marks
    ("rl", "well_formed"): 0.95,
}

# The eval jobs of the tiny pipeline: (job name, stage whose checkpoint is graded, what).
EVAL_JOBS: tuple[tuple[str, str, str], ...] = (
    ("completion", "pretrain", "held-out fact prompts completed (eval_completion, chapter 06)"),
    ("facts", "sft", "held-out fact questions (eval_facts)"),
    ("long_before", "sft", "long-context retrieval before long SFT (eval_long)"),
    ("long", "sft-long", "long-context retrieval after long SFT (eval_long)"),
    ("arith", "distill", "unseen arithmetic and think/answer format (eval_arith)"),
    ("distill_facts", "distill", "held-out fact questions after distillation (eval_facts)"),
    ("rl_arith", "rl", "unseen arithmetic after reinforcement learning (eval_arith)"),
)


@dataclass
class Stage:
    """One training stage of a plan: its name (also its folder), data file, training preset,
    configuration (a ``TrainConfig``; the ``rl`` stage's an ``RLConfig``), data options, and the
    stage whose checkpoint it starts from."""

    name: str
    data: str
    preset: str
    cfg: Any  # TrainConfig, or RLConfig (stage "rl")
    options: dict[str, Any] = field(default_factory=dict)
    init: str | None = None


@dataclass
class Plan:
    """What `run_pipeline` does: the preset, output and data folders, the training stages in
    order, whether the data is downloaded first, and the eval jobs."""

    preset: str
    out: Path
    data_dir: Path
    download: bool
    vocab_size: int
    model: str
    stages: list[Stage]
    evals: tuple[tuple[str, str, str], ...]
    max_steps: int | None = None
    eval_limit: int | None = None
    tokenizer: Any = None  # a given tokenizer (--tokenizer), else one is trained
    tokenizer_dir: Path | None = None
    tokenizer_lines: int | None = None
    skip_bad_lines: bool = False
    max_bad_fraction: float = 0.001
    device: Any = None  # torch.device of every stage (None: the stage functions' default)


def build_plan(
    preset: str,
    out: str | Path | None = None,
    *,
    data_dir: str | Path | None = None,
    max_steps: int | None = None,
    eval_limit: int | None = None,
    tokenizer: Any = None,
    tokenizer_dir: str | Path | None = None,
    skip_bad_lines: bool | None = None,
    max_bad_fraction: float = 0.001,
    compile: bool | None = None,
    device: Any = None,
    batch_size: int | None = None,
    grad_accum: int | None = None,
) -> Plan:
    """The stage plan of a pipeline preset (``tiny`` or ``seed``); nothing runs.

    ``out`` defaults to ``artifacts_dir("pipeline", preset)``; ``data_dir`` to the embedded world
    (tiny) or ``out/data`` (seed, downloaded there). ``max_steps`` caps every training stage
    (the rl stage's ``steps``, and its problems, group and answer length to ``RL_SMOKE``).
    ``tokenizer`` (loaded from ``tokenizer_dir``, e.g. the original's folder) replaces the
    trained one and must have the preset's vocabulary size. ``skip_bad_lines`` (default: the
    preset's, seed skips) and ``max_bad_fraction`` go to every stage that reads JSONL but rl
    (strict); ``compile`` (None: the presets') to every stage but rl, ``device`` to every
    training stage; ``batch_size`` and ``grad_accum`` replace every stage's but rl's (a smaller
    GPU, or a smoke test on a CPU).
    """
    from spongebob.distill import distill_config, distill_options
    from spongebob.rl import rl_config
    from spongebob.runtime import artifacts_dir
    from spongebob.sft import sft_config, sft_options
    from spongebob.train import TrainConfig

    if preset not in PIPELINE_PRESETS:
        raise ValueError(f"unknown pipeline preset {preset!r}; choose one of "
                         f"{sorted(PIPELINE_PRESETS)}")  # fmt: skip
    if max_steps is not None and max_steps < 1:
        raise ValueError(f"--max-steps must be >= 1, got {max_steps}")
    if eval_limit is not None and eval_limit < 1:
        raise ValueError(f"--eval-limit must be >= 1, got {eval_limit}")
    p = PIPELINE_PRESETS[preset]
    if tokenizer is not None and tokenizer.vocab_size != p["vocab_size"]:
        raise ValueError(f"{tokenizer_dir or 'the tokenizer'} has {tokenizer.vocab_size} tokens "
                         f"but the {preset} pipeline's model is built for {p['vocab_size']}; "
                         f"pass a {p['vocab_size']}-token --tokenizer")  # fmt: skip
    out = Path(out) if out is not None else artifacts_dir("pipeline", preset)
    if data_dir is None:
        if p["data"] == "embedded":
            from spongebob.world import sample_dir

            data_dir = sample_dir(0)
        else:
            data_dir = out / "data"
    cap = {} if max_steps is None else {"max_steps": max_steps}
    if compile is not None:
        cap["compile"] = compile
    for name, value in (("batch_size", batch_size), ("grad_accum", grad_accum)):
        if value is not None:
            if value < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
            cap[name] = value
    name, overrides = p["pretrain"]
    stages = [
        Stage("pretrain", "pretrain.jsonl", name, TrainConfig.preset(name, **overrides, **cap)),
        Stage("sft", "sft_512.jsonl", p["sft"], sft_config(p["sft"], **cap),
              sft_options(p["sft"]), init="pretrain"),
        Stage("sft-long", "sft_1024.jsonl", p["sft_long"], sft_config(p["sft_long"], **cap),
              sft_options(p["sft_long"]), init="sft"),
        Stage("distill", "r1_1024.jsonl", p["distill"], distill_config(p["distill"], **cap),
              distill_options(p["distill"]), init=p["distill_init"]),
    ]  # fmt: skip
    if p["rl"] is not None:
        rl_cap: dict[str, int] = {}
        if max_steps is not None:
            full = rl_config(p["rl"])
            rl_cap = {k: min(v, getattr(full, k)) for k, v in RL_SMOKE.items()}
            rl_cap["steps"] = max_steps
        stages.append(Stage("rl", "r1_1024.jsonl", p["rl"], rl_config(p["rl"], **rl_cap),
                            init="distill"))  # fmt: skip
    skip = p["skip_bad_lines"] if skip_bad_lines is None else skip_bad_lines
    return Plan(preset, out, Path(data_dir), p["data"] == "download", p["vocab_size"], p["model"],
                stages, EVAL_JOBS if p["evaluate"] else (), max_steps, eval_limit, tokenizer,
                None if tokenizer_dir is None else Path(tokenizer_dir), p["tokenizer_lines"],
                skip, max_bad_fraction, device)  # fmt: skip


def _is_rl(cfg) -> bool:
    """Whether ``cfg`` is the rl stage's ``RLConfig`` (not a ``TrainConfig``)."""
    from spongebob.rl import RLConfig

    return isinstance(cfg, RLConfig)


def _max_steps(cfg) -> int | None:
    """The stage's fixed number of steps (None: one epoch)."""
    return cfg.steps if _is_rl(cfg) else cfg.max_steps


def _length(cfg) -> str:
    if _is_rl(cfg):
        return (f"{cfg.steps} steps of {cfg.problems} problems x {cfg.group} answers of at most "
                f"{cfg.max_new_tokens} tokens, lr {cfg.lr:g}")  # fmt: skip
    steps = f"{cfg.max_steps} steps" if cfg.max_steps is not None else "one epoch"
    return f"{steps} of {cfg.batch_size} x {cfg.grad_accum} x {cfg.seq_len} tokens, lr {cfg.lr:g}"


def describe_plan(plan: Plan) -> str:
    """The plan as text, one numbered line per stage (what ``--dry-run`` prints)."""
    src = "downloaded from ModelScope into" if plan.download else "from"
    if plan.tokenizer is not None:
        tok = f"given: {plan.tokenizer_dir or 'a tokenizer'} ({plan.tokenizer.vocab_size} tokens)"
    else:
        sample = f"the first {plan.tokenizer_lines:,} lines of " if plan.tokenizer_lines else ""
        tok = (f"byte-level BPE, {plan.vocab_size} tokens, trained on {sample}pretrain.jsonl "
               "(cached)")  # fmt: skip
    bad = (f"skipped and counted (stop above {plan.max_bad_fraction:.1%})"
           if plan.skip_bad_lines else "stop the run (strict)")  # fmt: skip
    device = f"device {plan.device}" if plan.device is not None else "the default device"
    lines = [f"pipeline, preset {plan.preset}: data {src} {plan.data_dir}, output {plan.out}",
             f"  bad JSONL lines: {bad}; {device}", f"  1. tokenizer  {tok}"]  # fmt: skip
    for i, s in enumerate(plan.stages, 2):
        start = f"from {s.init}" if s.init else f"fresh {plan.model} model"
        opts = ", ".join(f"{k} {v}" for k, v in s.options.items())
        if s.options.get("replay", 0) > 0:  # what is replayed (distill: equation lines repeated)
            copies = s.options.get("drill_copies", 0)
            more = f", its equation lines {copies} more times" if copies else ""
            opts += f" (of pretrain.jsonl{more})"
        if getattr(s.cfg, "compile", False):
            opts += (", " if opts else "") + "compiled"
        lines.append(f"  {i}. {s.name:<10} {s.data}, {start}, preset {s.preset}: "
                     f"{_length(s.cfg)}{'; ' + opts if opts else ''} -> {s.name}/")  # fmt: skip
    n = len(plan.stages) + 2
    if plan.evals:
        jobs = "; ".join(f"{job} ({stage})" for job, stage, _ in plan.evals)
        lines.append(f"  {n}. eval       {jobs} -> eval/")
    else:
        lines.append(f"  {n}. eval       none: the embedded world's held-out sets do not apply "
                     "to the real data (losses only)")  # fmt: skip
    lines.append("  then report.md (loss curves in figures/) and report.json")
    if plan.max_steps is not None or plan.eval_limit is not None:
        lines.append(f"  capped: --max-steps {plan.max_steps}, --eval-limit {plan.eval_limit} "
                     "(a smoke test: the numbers mean nothing)")  # fmt: skip
    return "\n".join(lines)


# ------------------------------------------------------------------------------ running
def _mtime(path: Path) -> int | None:
    return path.stat().st_mtime_ns if path.exists() else None


def read_metrics(path: str | Path) -> tuple[list[dict], list[dict]]:
    """``(train records, validation records)`` of a run's ``metrics.jsonl``."""
    from spongebob.files import iter_jsonl

    records = [r for _, r in iter_jsonl(path)] if Path(path).is_file() else []
    return [r for r in records if "loss" in r], [r for r in records if "val_loss" in r]


def _progress(name: str, total: int | None, log: Callable[[str], None]):
    """An ``on_log`` callback: a header on the first record, then about ten progress lines."""
    state = {"next": 0}

    def on_log(record: dict) -> None:
        if "loss" not in record:
            return
        if state["next"] == 0:
            log(f"{name}: training ({total or '?'} steps)")
        step = record["step"]
        if step >= state["next"] or step == total:
            log(f"{name}:   step {step}/{total or '?'}  loss {record['loss']:.3f}  "
                f"{record['elapsed'] / 60:.1f} min")  # fmt: skip
            state["next"] = step + max(1, (total or 100) // 10)

    return on_log


def _tokenizer(plan: Plan, log: Callable[[str], None]):
    from spongebob.runtime import artifacts_dir
    from spongebob.tokenizer import cached_tokenizer

    if plan.tokenizer is not None:
        log(f"tokenizer: given ({plan.tokenizer.vocab_size} tokens, {plan.tokenizer_dir})")
        return plan.tokenizer, {"skipped": True, "wall_s": 0.0, "given": True,
                                "vocab_size": plan.tokenizer.vocab_size,
                                "folder": str(plan.tokenizer_dir)}  # fmt: skip
    data = plan.data_dir / "pretrain.jsonl"
    if plan.data_dir == _embedded_dir() and plan.vocab_size == 2048:
        name = "world0-bpe2048"  # the course tokenizer (spongebob.world.course_tokenizer)
    else:
        from spongebob.files import sha256_file

        name = f"pipeline-{sha256_file(data)[:12]}-bpe{plan.vocab_size}"
    folder = artifacts_dir("tokenizer", name)
    stamp = folder / "fingerprint.txt"
    before, t0 = _mtime(stamp), time.perf_counter()
    tok = cached_tokenizer(data, plan.vocab_size, name=name, max_lines=plan.tokenizer_lines,
                           **_bad_kw(plan))  # fmt: skip
    if plan.model != "tiny" and tok.vocab_size != plan.vocab_size:
        raise ValueError(f"the tokenizer trained on {data} has {tok.vocab_size} tokens (too few "
                         f"distinct pieces in the data) but the {plan.model} model is built for "
                         f"{plan.vocab_size}; pass a {plan.vocab_size}-token --tokenizer")  # fmt: skip
    skipped = before is not None and _mtime(stamp) == before
    wall = time.perf_counter() - t0
    log(f"tokenizer: {'cached tokenizer found, skipped' if skipped else 'trained'} "
        f"({tok.vocab_size} tokens)")  # fmt: skip
    info = {"skipped": skipped, "wall_s": wall, "vocab_size": tok.vocab_size,
            "folder": str(folder)}  # fmt: skip
    try:
        stats = json.loads((folder / "training.json").read_text("utf-8"))
    except (OSError, ValueError):
        stats = {}
    if stats:
        info["lines"], info["bad_lines"] = stats.get("lines"), stats.get("bad", 0)
    return tok, info


def _bad_kw(plan: Plan) -> dict[str, Any]:
    """The bad-line options of every function that reads JSONL (none when strict: the
    functions' defaults)."""
    if not plan.skip_bad_lines:
        return {}
    return {"skip_bad_lines": True, "max_bad_fraction": plan.max_bad_fraction}


def _stage_kw(plan: Plan) -> dict[str, Any]:
    """What every training stage function gets from the plan: bad-line options and device."""
    kw = _bad_kw(plan)
    if plan.device is not None:
        kw["device"] = plan.device
    return kw


def _bad_line_counts(folder: Path) -> dict[str, Any]:
    """``{source: {"bad_lines", "extra_keys"}}`` of every prepared folder under a stage's run
    folder (its ``meta.json`` files, written by ``spongebob.data.prepare``)."""
    counts: dict[str, Any] = {}
    for meta_file in sorted(folder.glob("**/meta.json")):
        try:
            meta = json.loads(meta_file.read_text("utf-8"))
        except (OSError, ValueError):
            continue
        if not isinstance(meta, dict) or "bad_lines" not in meta:
            continue
        counts[meta.get("source", meta_file.parent.name)] = {
            "bad_lines": meta["bad_lines"].get("count", 0),
            "extra_keys": meta.get("extra_keys") or {},
        }
    return counts


def _embedded_dir() -> Path:
    from spongebob.runtime import artifacts_dir

    return artifacts_dir("data", "world-seed0")  # where spongebob.world.sample_dir(0) lives


def _run_stage(stage: Stage, plan: Plan, tok, ckpts: dict[str, Path], **kw: Any) -> Path:
    """Train ``stage`` with the chapter's own stage function (``pretrain``, ``sft``,
    ``distill``, ``grpo``) or, by default, its find-or-re-create wrapper; ``kw`` go to it."""
    out = plan.out / stage.name
    data, replay = plan.data_dir / stage.data, plan.data_dir / "pretrain.jsonl"
    find = kw.pop("find", True)
    if stage.name == "rl":  # GRPO: no bad-line options (every problem line must be good)
        from spongebob.rl import grpo, rl_checkpoint

        if plan.device is not None:
            kw["device"] = plan.device
        if find:
            return rl_checkpoint(data, tok, out, stage.cfg, init=ckpts[stage.init], **kw)
        return grpo(ckpts[stage.init], data, tok, out, stage.cfg, **kw)
    kw.update(_stage_kw(plan))
    if stage.name == "pretrain":
        from spongebob.pretrain import pretrain, pretrained_checkpoint

        if find:
            return pretrained_checkpoint(data, tok, out, stage.cfg, model_preset=plan.model, **kw)
        return pretrain(data, tok, out, stage.cfg, model_preset=plan.model, **kw).checkpoint
    chat = dict(init=ckpts[stage.init], replay_source=replay, **stage.options, **kw)
    if stage.name == "distill":
        from spongebob.distill import distill, distill_checkpoint

        if stage.options.get("mix_chats", 0) > 0:  # SFT chats shuffled in (the tiny recipe)
            chat["mix_source"] = plan.data_dir / "sft_512.jsonl"
        fn = distill_checkpoint if find else distill
        result = fn(data, tok, out, stage.cfg, **chat)
    else:
        from spongebob.sft import sft, sft_checkpoint

        chat["stage"] = "sft_long" if stage.name == "sft-long" else "sft"
        fn = sft_checkpoint if find else sft
        result = fn(data, tok, out, stage.cfg, **chat)
    return result if find else result.checkpoint


def _stage_key(stage: Stage, plan: Plan, tok, ckpts: dict[str, Path]) -> dict:
    """What makes a run of ``stage`` the same run: recipe, data file (by size and time; the real
    files are gigabytes), tokenizer and the very init checkpoint."""
    from spongebob.data import tokenizer_fingerprint
    from spongebob.files import sha256_file

    data = (plan.data_dir / stage.data).stat()
    key = {"stage": stage.name, "preset": stage.preset, "train_config": stage.cfg.to_dict(),
            "options": stage.options, "model": plan.model,
            "data": [str(plan.data_dir / stage.data), data.st_size, data.st_mtime_ns],
            "tokenizer": tokenizer_fingerprint(tok),
            "init_sha256": sha256_file(ckpts[stage.init]) if stage.init else None}  # fmt: skip
    return json.loads(json.dumps(key))  # as read back from stage.json (tuples become lists)


def _train_until_done(stage: Stage, plan: Plan, tok, ckpts: dict[str, Path], log, **kw) -> Path:
    """A stage whose length is one epoch (``max_steps`` None: the seed presets), which the
    find-or-re-create functions cannot tell finished from interrupted. ``stage.json`` records the
    run's key (`_stage_key`) when it starts and the checkpoint's hash when it ends: a finished run
    of the same key is skipped, an unfinished one resumes from its ``last.pt`` (saved every
    ``save_every`` steps), anything else trains from the start."""
    from spongebob.files import atomic_write_text, sha256_file

    out = plan.out / stage.name
    last, marker = out / "last.pt", out / "stage.json"
    key = _stage_key(stage, plan, tok, ckpts)
    try:
        mark = json.loads(marker.read_text("utf-8")) if marker.is_file() else {}
    except ValueError:
        mark = {}
    same = mark.get("key") == key and last.is_file()
    if same and mark.get("sha256") and mark["sha256"] == sha256_file(last):
        return last
    resume = same and not mark.get("sha256")
    if resume:
        log(f"{stage.name}: an interrupted run of this recipe found, resuming it")
    else:
        last.unlink(missing_ok=True)  # another run's: never to be resumed by mistake
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(marker, json.dumps({"key": key, "sha256": None}) + "\n")
    ckpt = Path(_run_stage(stage, plan, tok, ckpts, find=False, resume=resume, **kw))
    atomic_write_text(marker, json.dumps({"key": key, "sha256": sha256_file(ckpt)}) + "\n")
    return ckpt


def _train_stage(stage: Stage, plan: Plan, tok, ckpts: dict[str, Path], log) -> dict:
    out = plan.out / stage.name
    before, t0 = _mtime(out / "last.pt"), time.perf_counter()
    kw = dict(progress=False, on_log=_progress(stage.name, _max_steps(stage.cfg), log))
    if _max_steps(stage.cfg) is not None:
        ckpt = _run_stage(stage, plan, tok, ckpts, **kw)
    else:
        ckpt = _train_until_done(stage, plan, tok, ckpts, log, **kw)
    ckpts[stage.name] = Path(ckpt)
    wall = time.perf_counter() - t0
    skipped = before is not None and _mtime(Path(ckpt)) == before
    history, val = read_metrics(out / "metrics.jsonl")
    info = {
        "skipped": skipped,
        "wall_s": wall,
        "train_s": history[-1]["elapsed"] if history else None,
        "steps": history[-1]["step"] if history else None,
        "final_loss": history[-1]["loss"] if history else None,
        "val_loss": val[-1]["val_loss"] if val else None,
        "checkpoint": f"{stage.name}/last.pt",
        "preset": stage.preset,
        "data": _bad_line_counts(out),
    }
    if history and "reward" in history[-1]:  # rl: the sampled answers' mean reward and accuracy
        info["final_reward"] = history[-1]["reward"]
        info["final_accuracy"] = history[-1].get("accuracy")
    if skipped:
        log(f"{stage.name}: finished run found, skipped")
    else:
        v = f", validation loss {info['val_loss']:.3f}" if info["val_loss"] is not None else ""
        if "final_reward" in info:
            v += f", reward {info['final_reward']:.3f}"
        log(f"{stage.name}: done in {wall / 60:.1f} min, {info['steps']} steps, "
            f"loss {info['final_loss']:.3f}{v}")  # fmt: skip
    return info


def completion_accuracy(model, tok, path: str | Path, limit: int | None = None) -> dict:
    """Chapter 06's measurement: ``spongebob.pretrain.complete`` (greedy, 12 tokens after ``<s>``)
    of each ``{"prompt", "expected"}`` line, graded by ``grade_fact``; ``{"accuracy", "n",
    "records"}``."""
    from spongebob.data import read_jsonl
    from spongebob.evaluate import grade_fact
    from spongebob.pretrain import complete

    rows = list(read_jsonl(path))[:limit]
    records = []
    for r, answer in zip(rows, complete(model, tok, [r["prompt"] for r in rows])):
        records.append({"id": r.get("id"), "expected": r["expected"], "answer": answer,
                        "correct": grade_fact(answer, r["expected"])})  # fmt: skip
    acc = sum(r["correct"] for r in records) / max(1, len(records))
    return {"accuracy": acc, "n": len(records), "records": records}


def _eval_job(job: str, ckpt: Path, plan: Plan, tok, log) -> tuple[dict, bool]:
    """Run (or read back) one eval job on ``ckpt``: ``(summary, skipped)``."""
    from spongebob.checkpoint import load_model
    from spongebob.evaluate import evaluate_sets, is_well_formed_r1
    from spongebob.files import atomic_write_text, sha256_file

    cache = plan.out / "eval" / f"{job}.json"
    key = {"checkpoint_sha256": sha256_file(ckpt), "limit": plan.eval_limit,
           "data": str(plan.data_dir)}  # fmt: skip
    if cache.is_file():
        try:
            doc = json.loads(cache.read_text("utf-8"))
        except ValueError:
            doc = {}
        if doc.get("key") == key:
            return doc["summary"], True
    model = load_model(ckpt).eval()
    if plan.device is not None:
        model.to(plan.device)
    if job == "completion":
        r = completion_accuracy(model, tok, plan.data_dir / "eval_completion.jsonl",
                                plan.eval_limit)  # fmt: skip
        summary, records = {"completion": r["accuracy"], "n": r["n"]}, r["records"]
    else:
        name = {"long_before": "long", "distill_facts": "facts", "rl_arith": "arith"}.get(job, job)
        rep = evaluate_sets(model, tok, plan.data_dir, [name], limit=plan.eval_limit)[name]
        records = rep.records
        summary = {job: rep.accuracy, "n": len(records), "stopped": rep.stopped}
        if name == "arith":
            summary["well_formed"] = sum(is_well_formed_r1(r["answer"]) for r in records) / max(
                1, len(records)
            )
    cache.parent.mkdir(parents=True, exist_ok=True)
    doc = {"key": key, "summary": summary, "records": records}
    atomic_write_text(cache, json.dumps(doc, ensure_ascii=False, indent=1) + "\n")
    return summary, False


def _measure(value: float | None, target: float | None, n: int | None = None) -> dict:
    m: dict[str, Any] = {"value": value}
    if n is not None:
        m["n"] = n
    if target is not None:
        m["target"] = target
        m["met"] = value is not None and value >= target
    return m


def _evaluate(plan: Plan, tok, ckpts: dict[str, Path], stages: dict[str, dict], log) -> dict:
    info = {"skipped": True, "wall_s": 0.0}
    t0 = time.perf_counter()
    for job, stage, _ in plan.evals:
        summary, skipped = _eval_job(job, ckpts[stage], plan, tok, log)
        info["skipped"] &= skipped
        metrics = stages[stage].setdefault("metrics", {})
        n = summary["n"]
        if job == "facts":
            metrics["facts"] = _measure(summary["facts"], TARGETS["sft", "facts"], n)
            stopped = TARGETS["sft", "facts_stopped"]
            metrics["facts_stopped"] = _measure(summary["stopped"], stopped, n)
        elif job == "long_before":
            stages["sft-long"].setdefault("metrics", {})["long_before"] = _measure(
                summary["long_before"], None, n
            )
        elif job == "distill_facts":
            metrics["facts"] = _measure(summary[job], TARGETS["distill", "facts"], n)
        elif job in ("arith", "rl_arith"):  # the distill stage's, the rl stage's
            metrics["arith"] = _measure(summary[job], TARGETS[stage, "arith"], n)
            metrics["well_formed"] = _measure(summary["well_formed"],
                                              TARGETS[stage, "well_formed"], n)  # fmt: skip
        else:
            metrics[job] = _measure(summary[job], TARGETS.get((stage, job)), n)
        shown = ", ".join(f"{k} {v:.1%}" for k, v in summary.items() if k != "n")
        log(f"eval {job} ({stage}): {shown}{' (cached result, skipped)' if skipped else ''}")
    info["wall_s"] = time.perf_counter() - t0
    return info


def plot_losses(metrics_file: str | Path, title: str, path: str | Path) -> Path:
    """A PNG of the training loss (and validation loss, if any) of a run's ``metrics.jsonl``,
    written atomically; drawn without pyplot (no global backend is touched). An rl run's (records
    with a ``reward``) also shows the mean reward and accuracy of the sampled answers, on a linear
    scale (GRPO's loss is a surrogate, often negative)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from spongebob.files import atomic_write_bytes

    history, val = read_metrics(metrics_file)
    fig = Figure(figsize=(6, 3), dpi=90)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    marker = "." if len(history) < 20 else None
    if history:
        ax.plot([r["step"] for r in history], [r["loss"] for r in history], lw=1,
                marker=marker, label="training loss")  # fmt: skip
    if val:
        ax.plot([r["step"] for r in val], [r["val_loss"] for r in val], "o-",
                label="validation loss")  # fmt: skip
    rl = [r for r in history if "reward" in r]
    for key in ("reward", "accuracy") if rl else ():
        ax.plot([r["step"] for r in rl], [r.get(key, float("nan")) for r in rl], lw=1,
                marker=marker, label=f"mean {key}" if key == "reward" else key)  # fmt: skip
    values = [r["loss"] for r in history] + [r["val_loss"] for r in val]
    log_scale = not rl and all(v > 0 for v in values)
    ax.set(xlabel="optimizer step", ylabel="loss (nats per token)" if not rl else
           "GRPO loss, reward, accuracy", yscale="log" if log_scale else "linear", title=title)  # fmt: skip
    if history or val:
        ax.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)


_LABELS = {
    "completion": "held-out fact prompts completed",
    "facts": "held-out fact questions correct",
    "facts_stopped": "fact answers ending with </s>",
    "long_before": "long-context retrieval before (the SFT model)",
    "long": "long-context retrieval after",
    "arith": "unseen arithmetic correct",
    "well_formed": "well-formed think/answer blocks",
}


def _fmt(v: Any, digits: int = 3) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    return f"{seconds:.1f} s" if seconds < 60 else f"{seconds / 60:.1f} min"


def _target(m: dict) -> str:
    if "target" not in m:
        return ""
    return "every answer" if m["target"] >= 1 else f">= {m['target']:.0%}"


def write_report(plan: Plan, report: dict) -> tuple[Path, Path]:
    """``report.json`` and ``report.md`` (with the loss PNGs of each stage) in ``plan.out``."""
    from spongebob.files import atomic_write_text

    lines = [f"# Pipeline report: preset `{report['preset']}`", "",
             f"This run took {_duration(report['wall_s'])} of wall time (stages found finished "
             "were skipped; *training time* is the stage's own, from its `metrics.jsonl`)."]  # fmt: skip
    if plan.max_steps is not None or plan.eval_limit is not None:
        lines += ["", f"**Capped run** (max steps {plan.max_steps}, eval limit "
                      f"{plan.eval_limit}): a smoke test, the numbers say nothing."]  # fmt: skip
    tk = report["stages"]["tokenizer"]
    if tk.get("given"):
        lines += ["", "## tokenizer", "", f"Given: `{tk['folder']}`, {tk['vocab_size']} tokens."]
    else:
        lines += ["", "## tokenizer", "", f"Byte-level BPE, {tk['vocab_size']} tokens "
                  f"({'cached, skipped' if tk['skipped'] else 'trained'}, "
                  f"{_duration(tk['wall_s'])})."]  # fmt: skip
        if tk.get("lines") is not None:
            lines[-1] += (f" Trained on {tk['lines']:,} lines of pretrain.jsonl; "
                          f"{tk['bad_lines']:,} bad line(s) skipped.")  # fmt: skip
    skipping = report.get("skip_bad_lines")
    lines += ["", "Bad JSONL lines: " + ("skipped and counted (per stage below)." if skipping
                                         else "none allowed (strict).")]  # fmt: skip
    for s in plan.stages:
        info = report["stages"][s.name]
        train_s = info["train_s"]
        done = "finished run found, skipped" if info["skipped"] else "trained in this run"
        lines += ["", f"## {s.name}", "",
                  f"Preset `{info['preset']}`; {done} ({_duration(info['wall_s'])} in this run).",
                  "", "| measure | value | target | met |", "|---|---|---|---|",
                  f"| training time | {_duration(train_s)} | | |",
                  f"| optimizer steps | {info['steps']} | | |",
                  f"| final training loss | {_fmt(info['final_loss'])} | | |",
                  f"| validation loss | {_fmt(info['val_loss'])} | | |"]  # fmt: skip
        if "final_reward" in info:  # rl: the last step's sampled answers
            acc = info.get("final_accuracy")
            lines += [f"| final mean reward | {_fmt(info['final_reward'])} | | |",
                      f"| final accuracy of the sampled answers | "
                      f"{'–' if acc is None else f'{acc:.1%}'} | | |"]  # fmt: skip
        for source, c in info.get("data", {}).items():
            extra = ", ".join(f"{k} ({n:,})" for k, n in sorted(c["extra_keys"].items()))
            lines.append(f"| bad lines skipped in {source} | {c['bad_lines']:,} | | |")
            if extra:
                lines.append(f"| extra keys ignored in {source} | {extra} | | |")
        for key, m in info.get("metrics", {}).items():
            target = _target(m)
            met = ("yes" if m["met"] else "**no**") if "target" in m else ""
            lines.append(f"| {_LABELS.get(key, key)} (n={m.get('n')}) | {m['value']:.1%} | "
                         f"{target} | {met} |")  # fmt: skip
        if info.get("figure"):
            lines += ["", f"![{s.name} loss]({info['figure']})"]
    if "eval" in report["stages"]:
        ev = report["stages"]["eval"]
        lines += ["", "## eval", "", f"Greedy answers to the held-out sets, graded in "
                  f"{_duration(ev['wall_s'])}{' (cached results reused)' if ev['skipped'] else ''}; "
                  "every graded answer is in `eval/NAME.json`."]  # fmt: skip
    if not plan.evals:
        lines += ["", "No accuracies: the embedded world's held-out sets do not apply to the "
                  "real data."]  # fmt: skip
    md = "\n".join(lines) + "\n"
    jpath, mpath = plan.out / "report.json", plan.out / "report.md"
    atomic_write_text(jpath, json.dumps(report, ensure_ascii=False, indent=1) + "\n")
    atomic_write_text(mpath, md)
    return mpath, jpath


def run_pipeline(plan: Plan, log: Callable[[str], None] = print) -> dict:
    """Run every stage of ``plan`` (skipping finished ones), evaluate, write the reports.

    Returns the content of ``report.json``. A missing data file raises ``FileNotFoundError``
    before anything trains; an offline download raises ``spongebob.download.DownloadError``.
    """
    import os

    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world > 1:
        raise ValueError(f"run_pipeline runs in one process, not under torchrun (WORLD_SIZE="
                         f"{world}); run each stage with `torchrun ... -m spongebob train`")  # fmt: skip
    t0 = time.perf_counter()
    plan.out.mkdir(parents=True, exist_ok=True)
    if plan.download:
        from spongebob.download import FILES, download

        download(list(FILES), plan.data_dir, log=log)
    needed = DATA_FILES + (EVAL_FILES if plan.evals else ())
    missing = [f for f in needed if not (plan.data_dir / f).is_file()]
    if missing:
        raise FileNotFoundError(f"{plan.data_dir}: missing {', '.join(missing)} (the pipeline "
                                f"needs {', '.join(needed)})")  # fmt: skip
    tok, tok_info = _tokenizer(plan, log)
    stages: dict[str, dict] = {"tokenizer": tok_info}
    ckpts: dict[str, Path] = {}
    for stage in plan.stages:
        stages[stage.name] = _train_stage(stage, plan, tok, ckpts, log)
    if plan.evals:
        stages["eval"] = _evaluate(plan, tok, ckpts, stages, log)
    figures = plan.out / "figures"
    figures.mkdir(exist_ok=True)
    for stage in plan.stages:
        png = figures / f"{stage.name}_loss.png"
        plot_losses(plan.out / stage.name / "metrics.jsonl", f"{stage.name} ({stage.preset})", png)
        stages[stage.name]["figure"] = f"figures/{png.name}"
    report = {"preset": plan.preset, "data_dir": str(plan.data_dir), "max_steps": plan.max_steps,
              "eval_limit": plan.eval_limit, "skip_bad_lines": plan.skip_bad_lines,
              "max_bad_fraction": plan.max_bad_fraction, "wall_s": time.perf_counter() - t0,
              "stages": stages}  # fmt: skip
    report["bad_lines"] = {"tokenizer": stages["tokenizer"].get("bad_lines", 0),
                           **{f"{st}/{src}": c["bad_lines"] for st, info in stages.items()
                              for src, c in info.get("data", {}).items()}}  # fmt: skip
    report["targets_met"] = {f"{st}.{k}": m["met"] for st, info in stages.items()
                             for k, m in info.get("metrics", {}).items() if "met" in m}  # fmt: skip
    mpath, _ = write_report(plan, report)
    log(f"report: {mpath} and report.json")
    return report
