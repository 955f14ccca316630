"""Tests of `spongebob pipeline` (hand-written: spongebob/pipeline.py and spongebob/cli/pipeline.py).

The whole chain runs for real on a cut-down world (the generated sample with its chat files
shortened) with every training stage capped at 2 steps (the rl stage's of 2 problems x 2 answers
of at most 16 tokens) and every eval set at 2 questions (``--max-steps 2 --eval-limit 2``, about
20 s): the stage plan, the chain of checkpoints, the
report's numbers against each stage's ``metrics.jsonl`` and graded answers, the figures, the skip
of finished stages on a second run (checkpoints untouched), a stage re-trained alone when its
checkpoint is gone, and bad input. The tiny preset's real length is measured by hand (README).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
from dataclasses import replace
from pathlib import Path

import pytest

from spongebob import cli
from spongebob.checkpoint import read_checkpoint
from spongebob.evaluate import is_well_formed_r1
from spongebob.files import sha256_file
from spongebob.pipeline import RL_SMOKE, TARGETS, build_plan, read_metrics, run_pipeline
from spongebob.rl import rl_config
from spongebob.sft import sft_config, sft_options
from spongebob.train import TrainConfig
from spongebob.world import write_sample

distill = pytest.importorskip("spongebob.distill")  # the distill stage (chapter 08)
distill_config, distill_options = distill.distill_config, distill.distill_options

STAGES = ("pretrain", "sft", "sft-long", "distill", "rl")
SEED_STAGES = STAGES[:4]  # no rl: the real data's answers are not numbers to grade
CKPT_STAGE = {"pretrain": "pretrain", "sft": "sft", "sft-long": "sft_long", "distill": "distill",
              "rl": "rl"}  # fmt: skip
INIT = {"sft": "pretrain", "sft-long": "sft", "distill": "sft", "rl": "distill"}
CAPS = ["--max-steps", "2", "--eval-limit", "2"]


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """An empty SPONGEBOB_HOME for the module (the tokenizer cache and default folders)."""
    old = os.environ.get("SPONGEBOB_HOME")
    os.environ["SPONGEBOB_HOME"] = str(tmp_path_factory.mktemp("home"))
    yield Path(os.environ["SPONGEBOB_HOME"])
    if old is None:
        del os.environ["SPONGEBOB_HOME"]
    else:
        os.environ["SPONGEBOB_HOME"] = old


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    """The sample world; pretrain.jsonl whole (the validation split needs a batch of windows),
    the chat files cut to a few lines."""
    out = tmp_path_factory.mktemp("world")
    write_sample(out, seed=0)
    # sft_512 keeps 600 lines: the tiny distillation recipe mixes in that many SFT chats
    for name, n in {"sft_512.jsonl": 600, "sft_1024.jsonl": 16, "r1_1024.jsonl": 64}.items():
        lines = (out / name).read_text("utf-8").splitlines(keepends=True)[:n]
        (out / name).write_text("".join(lines), "utf-8")
    return out


def run_cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = cli.main(list(argv))
    return rc, out.getvalue(), err.getvalue()


def fingerprints(out: Path) -> dict[str, tuple[int, str]]:
    return {s: ((out / s / "last.pt").stat().st_mtime_ns, sha256_file(out / s / "last.pt"))
            for s in STAGES}  # fmt: skip


@pytest.fixture(scope="module")
def first(home, world, tmp_path_factory):
    out = tmp_path_factory.mktemp("pipeline")
    rc, stdout, err = run_cli("pipeline", "--data", str(world), "--out", str(out), *CAPS)
    assert rc == 0, err
    return {"out": out, "stdout": stdout, "files": fingerprints(out),
            "report": json.loads((out / "report.json").read_text("utf-8"))}  # fmt: skip


@pytest.fixture(scope="module")
def second(first, world):
    out = first["out"]
    rc, stdout, err = run_cli("pipeline", "--data", str(world), "--out", str(out), *CAPS)
    assert rc == 0, err
    return {"stdout": stdout, "files": fingerprints(out),
            "report": json.loads((out / "report.json").read_text("utf-8"))}  # fmt: skip


# ------------------------------------------------------------------------------ the plan
def test_tiny_plan_mirrors_the_chapters(home, world):
    plan = build_plan("tiny", world / "out", data_dir=world)
    assert [s.name for s in plan.stages] == list(STAGES)
    assert [s.data for s in plan.stages] == ["pretrain.jsonl", "sft_512.jsonl", "sft_1024.jsonl",
                                             "r1_1024.jsonl", "r1_1024.jsonl"]  # fmt: skip
    assert {s.name: s.init for s in plan.stages if s.init} == INIT
    pre, sft, long, dist, rl = plan.stages
    assert pre.cfg == TrainConfig.preset("tiny", eval_every=150)  # chapter 06's run
    assert (sft.cfg, sft.options) == (sft_config("tiny"), sft_options("tiny"))
    assert (long.cfg, long.options) == (sft_config("tiny-long"), sft_options("tiny-long"))
    assert (dist.cfg, dist.options) == (distill_config("tiny"), distill_options("tiny"))
    assert (rl.cfg, rl.options, rl.preset) == (rl_config("tiny"), {}, "tiny")  # chapter 09's run
    assert plan.model == "tiny" and plan.vocab_size == 2048 and not plan.download
    assert [job for job, _, _ in plan.evals] == ["completion", "facts", "long_before", "long",
                                                 "arith", "distill_facts", "rl_arith"]  # fmt: skip


def test_the_smoke_cap_shrinks_the_rl_stage(home, tmp_path):
    capped = build_plan("tiny", tmp_path, max_steps=3, batch_size=2, grad_accum=1, compile=False)
    assert [s.name for s in capped.stages] == list(STAGES)
    assert [s.cfg.max_steps for s in capped.stages[:4]] == [3, 3, 3, 3]
    full = rl_config("tiny")
    smoke = {k: min(v, getattr(full, k)) for k, v in RL_SMOKE.items()}
    assert capped.stages[4].cfg == rl_config("tiny", steps=3, **smoke)
    assert (smoke["problems"], smoke["group"]) == (2, 2) and smoke["max_new_tokens"] <= 16


def test_seed_plan_and_caps(home, tmp_path):
    plan = build_plan("seed", tmp_path)
    assert plan.download and plan.data_dir == tmp_path / "data" and plan.model == "seed"
    assert plan.vocab_size == 6400 and plan.evals == ()
    assert [s.name for s in plan.stages] == list(SEED_STAGES)  # no rl stage
    assert [s.preset for s in plan.stages] == ["seed", "seed", "seed-long", "seed"]
    assert plan.stages[0].cfg == TrainConfig.preset("seed")
    assert plan.stages[3].cfg == distill_config("seed")
    capped = build_plan("seed", tmp_path, max_steps=3)
    assert [s.cfg.max_steps for s in capped.stages] == [3, 3, 3, 3]
    assert capped.stages[2].cfg == sft_config("seed-long", max_steps=3)


def test_seed_skips_bad_lines_samples_its_tokenizer_and_distils_the_long_model(home, tmp_path):
    plan = build_plan("seed", tmp_path)
    assert plan.skip_bad_lines and plan.max_bad_fraction == 0.001
    assert plan.tokenizer_lines == 200_000 and plan.tokenizer is None
    # the original distils its long-SFT model (SFT_1024.pth); chapter 08 distils the SFT model
    seed_init = {k: v for k, v in INIT.items() if k in SEED_STAGES}
    assert {s.name: s.init for s in plan.stages if s.init} == {**seed_init, "distill": "sft-long"}
    assert all(s.cfg.compile for s in plan.stages)  # the seed presets compile
    tiny = build_plan("tiny", tmp_path / "t")
    assert not tiny.skip_bad_lines and tiny.tokenizer_lines is None
    small = build_plan("seed", tmp_path, skip_bad_lines=False, compile=False, batch_size=2,
                       grad_accum=1, max_bad_fraction=0.01)  # fmt: skip
    assert not small.skip_bad_lines and small.max_bad_fraction == 0.01
    for s, full in zip(small.stages, plan.stages):
        assert (s.cfg.compile, s.cfg.batch_size, s.cfg.grad_accum) == (False, 2, 1)
        assert replace(s.cfg, compile=True, batch_size=full.cfg.batch_size,
                       grad_accum=full.cfg.grad_accum) == full.cfg  # nothing else changed  # fmt: skip
    with pytest.raises(ValueError, match="--batch-size must be >= 1, got 0"):
        build_plan("seed", tmp_path, batch_size=0)


def test_a_given_tokenizer_must_have_the_presets_size(home, tmp_path):
    from spongebob.world import course_tokenizer

    tok = course_tokenizer()
    assert build_plan("tiny", tmp_path, tokenizer=tok).tokenizer is tok
    with pytest.raises(ValueError, match="has 2048 tokens but the seed pipeline's model is built "
                       "for 6400"):  # fmt: skip
        build_plan("seed", tmp_path, tokenizer=tok, tokenizer_dir="tok")


@pytest.mark.parametrize("flags, shown", [([], "skipped and counted (stop above 0.1%)"),
                                          (["--strict"], "stop the run (strict)"),
                                          (["--max-bad-fraction", "0.02"], "skipped and counted (stop above 2.0%)")])  # fmt: skip
def test_seed_dry_run_shows_the_bad_line_policy(home, tmp_path, flags, shown):
    rc, stdout, _ = run_cli("pipeline", "--preset", "seed", "--out", str(tmp_path), "--dry-run",
                            "--device", "cpu", *flags)  # fmt: skip
    assert rc == 0
    assert f"bad JSONL lines: {shown}; device cpu" in stdout
    assert "the first 200,000 lines of pretrain.jsonl" in stdout
    assert "distill    r1_1024.jsonl, from sft-long" in stdout


@pytest.mark.parametrize("preset", ["tiny", "seed"])
def test_dry_run_prints_the_plan_and_runs_nothing(home, tmp_path, preset):
    rc, stdout, _ = run_cli("pipeline", "--preset", preset, "--out", str(tmp_path), "--dry-run")
    assert rc == 0
    lines = stdout.splitlines()
    names = [ln.split()[1] for ln in lines if re.match(r"\s+\d\. ", ln)]
    assert names == ["tokenizer", *(STAGES if preset == "tiny" else SEED_STAGES), "eval"]
    assert ("downloaded from ModelScope" in lines[0]) == (preset == "seed")
    assert ("6400 tokens" in stdout) == (preset == "seed")
    assert list(tmp_path.iterdir()) == []  # nothing trained, nothing downloaded


# ------------------------------------------------------------------------------ a real run
def test_first_run_trains_every_stage_in_a_chain(first):
    out, stdout = first["out"], first["stdout"]
    assert "tokenizer: trained" in stdout
    for stage in STAGES:
        assert f"{stage}: training (2 steps)" in stdout
        assert f"{stage}: finished run found" not in stdout
        _, extras = read_checkpoint(out / stage / "last.pt")
        assert extras["stage"] == CKPT_STAGE[stage] and extras["step"] == 2
        if stage in INIT:  # each stage starts from the checkpoint of the stage before it
            assert extras["recipe"]["init_sha256"] == sha256_file(out / INIT[stage] / "last.pt")
    _, dist = read_checkpoint(out / "distill" / "last.pt")
    assert dist["recipe"]["tag_weight"] == distill_options("tiny")["tag_weight"]
    _, rl = read_checkpoint(out / "rl" / "last.pt")
    assert rl["rl_config"] == rl_config("tiny", steps=2, problems=2, group=2,
                                        max_new_tokens=16).to_dict()  # the smoke cap  # fmt: skip


def test_report_json_agrees_with_metrics_and_graded_answers(first):
    out, report = first["out"], first["report"]
    assert report["preset"] == "tiny" and report["max_steps"] == 2 and report["eval_limit"] == 2
    for stage in STAGES:
        info = report["stages"][stage]
        history, val = read_metrics(out / stage / "metrics.jsonl")
        assert info["skipped"] is False
        assert info["steps"] == history[-1]["step"] == 2
        assert info["final_loss"] == history[-1]["loss"]
        assert info["train_s"] == history[-1]["elapsed"]
        assert info["val_loss"] == (val[-1]["val_loss"] if val else None)
    assert report["stages"]["pretrain"]["val_loss"] is not None  # pretraining holds out windows
    history, _ = read_metrics(out / "rl" / "metrics.jsonl")
    assert report["stages"]["rl"]["final_reward"] == history[-1]["reward"]
    assert report["stages"]["rl"]["final_accuracy"] == history[-1]["accuracy"]

    def graded(job):
        return json.loads((out / "eval" / f"{job}.json").read_text("utf-8"))["records"]

    def share(records, key="correct"):
        return sum(r[key] for r in records) / len(records)

    m = {s: report["stages"][s]["metrics"] for s in STAGES}
    assert m["pretrain"]["completion"]["value"] == share(graded("completion"))
    assert m["sft"]["facts"]["value"] == share(graded("facts"))
    assert m["sft"]["facts_stopped"]["value"] == share(graded("facts"), "stopped")
    assert m["sft-long"]["long_before"]["value"] == share(graded("long_before"))
    assert m["sft-long"]["long"]["value"] == share(graded("long"))
    arith = graded("arith")
    assert m["distill"]["arith"]["value"] == share(arith)
    assert m["distill"]["well_formed"]["value"] == sum(
        is_well_formed_r1(r["answer"]) for r in arith
    ) / len(arith)
    assert m["distill"]["facts"]["value"] == share(graded("distill_facts"))
    rl_arith = graded("rl_arith")
    assert m["rl"]["arith"]["value"] == share(rl_arith)
    assert m["rl"]["well_formed"]["value"] == sum(
        is_well_formed_r1(r["answer"]) for r in rl_arith
    ) / len(rl_arith)
    assert [r["id"] for r in rl_arith] == [r["id"] for r in arith]
    assert [r["id"] for r in graded("distill_facts")] == [r["id"] for r in graded("facts")]
    for job in ("completion", "facts", "long_before", "long", "arith", "distill_facts",
                "rl_arith"):  # fmt: skip
        assert len(graded(job)) == 2  # --eval-limit
    for (stage, key), target in TARGETS.items():
        got = m[stage][key]
        assert got["target"] == target and got["met"] == (got["value"] >= target)
        assert report["targets_met"][f"{stage}.{key}"] == got["met"]


def test_report_md_shows_each_stage_and_existing_figures(first):
    out = first["out"]
    md = (out / "report.md").read_text("utf-8")
    for stage in STAGES:
        assert f"## {stage}\n" in md
    assert "Capped run" in md and ">= 80%" in md and ">= 70%" in md
    figures = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert figures == [f"figures/{s}_loss.png" for s in STAGES]
    for fig in figures:
        assert (out / fig).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    loss = first["report"]["stages"]["sft"]["final_loss"]
    assert f"| final training loss | {loss:.3f} |" in md
    reward = first["report"]["stages"]["rl"]["final_reward"]
    assert f"| final mean reward | {reward:.3f} |" in md


def test_second_run_skips_every_finished_stage(first, second):
    stdout = second["stdout"]
    assert "tokenizer: cached tokenizer found, skipped" in stdout
    for stage in STAGES:
        assert f"{stage}: finished run found, skipped" in stdout
        assert f"{stage}: training" not in stdout
        assert second["report"]["stages"][stage]["skipped"] is True
    assert stdout.count("(cached result, skipped)") == 7
    assert second["files"] == first["files"]  # not one checkpoint rewritten
    for stage in STAGES:  # the numbers come from the same runs
        for key in ("steps", "final_loss", "val_loss", "train_s", "metrics"):
            assert second["report"]["stages"][stage][key] == first["report"]["stages"][stage][key]


def test_a_missing_stage_is_retrained_alone(first, second, world):
    out = first["out"]
    (out / "distill" / "last.pt").unlink()
    rc, stdout, err = run_cli("pipeline", "--data", str(world), "--out", str(out), *CAPS)
    assert rc == 0, err
    assert "distill: training (2 steps)" in stdout
    assert "rl: training (2 steps)" in stdout  # its init, the distilled model, changed
    for stage in ("pretrain", "sft", "sft-long"):
        assert f"{stage}: finished run found, skipped" in stdout
    after = fingerprints(out)
    assert {s: after[s] for s in STAGES[:3]} == {s: first["files"][s] for s in STAGES[:3]}
    assert "eval arith (distill)" in stdout and "eval distill_facts (distill)" in stdout
    assert "eval rl_arith (rl)" in stdout
    assert stdout.count("(cached result, skipped)") == 4  # both distill jobs and rl's graded anew


# ------------------------------------------------------------------------------ bad input
def test_missing_data_files_are_one_line(home, world, tmp_path):
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "pretrain.jsonl").write_bytes((world / "pretrain.jsonl").read_bytes())
    rc, _, err = run_cli("pipeline", "--data", str(partial), "--out", str(tmp_path / "o"))
    assert rc == 2 and err.count("\n") == 1
    assert err.startswith(f"spongebob: error: {partial}: missing sft_512.jsonl, sft_1024.jsonl")
    assert not (tmp_path / "o" / "pretrain").exists()


@pytest.mark.parametrize("flag", ["--max-steps", "--eval-limit"])
def test_bad_caps_are_one_line(home, tmp_path, flag):
    rc, _, err = run_cli("pipeline", "--out", str(tmp_path), flag, "0", "--dry-run")
    assert rc == 2 and err == f"spongebob: error: {flag} must be >= 1, got 0\n"


def test_seed_offline_fails_fast_before_any_stage(home, tmp_path, monkeypatch):
    monkeypatch.setenv("MODELSCOPE_DOMAIN", "127.0.0.1")  # nothing listens there: refused at once
    rc, stdout, err = run_cli("pipeline", "--preset", "seed", "--out", str(tmp_path))
    assert rc == 2 and err.count("\n") == 1 and err.startswith("spongebob: error: ")
    assert "cannot reach 127.0.0.1:443" in err or "ModelScope client" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no stage started


# ------------------------------------------------------------------------------ one-epoch stages
def test_one_epoch_stage_is_marked_done_skipped_and_resumed(home, world, tmp_path):
    """The seed presets run one epoch (max_steps None): `stage.json` tells finished from
    interrupted. Here the tiny pretraining stage, made one-epoch-long (a few steps)."""
    plan = build_plan("tiny", tmp_path, data_dir=world)
    cfg = replace(plan.stages[0].cfg, max_steps=None, epochs=0.03, log_every=1, eval_every=0)
    plan.stages, plan.evals = [replace(plan.stages[0], cfg=cfg)], ()
    logged: list[str] = []
    first = run_pipeline(plan, log=logged.append)["stages"]["pretrain"]
    steps, last = first["steps"], tmp_path / "pretrain" / "last.pt"
    assert steps >= 2 and read_checkpoint(last)[1]["step"] == steps
    assert json.loads((tmp_path / "pretrain" / "stage.json").read_text())["sha256"] == (
        sha256_file(last)
    )
    stamp = last.stat().st_mtime_ns
    logged.clear()
    assert run_pipeline(plan, log=logged.append)["stages"]["pretrain"]["skipped"] is True
    assert "pretrain: finished run found, skipped" in logged and last.stat().st_mtime_ns == stamp
    # as if interrupted after its last save: resumed (no step retrained), not started again
    marker = tmp_path / "pretrain" / "stage.json"
    marker.write_text(json.dumps({**json.loads(marker.read_text()), "sha256": None}))
    logged.clear()
    again = run_pipeline(plan, log=logged.append)["stages"]["pretrain"]
    assert "pretrain: an interrupted run of this recipe found, resuming it" in logged
    assert again["steps"] == steps and again["final_loss"] == first["final_loss"]
    history, _ = read_metrics(tmp_path / "pretrain" / "metrics.jsonl")
    assert [r["step"] for r in history] == list(range(1, steps + 1))  # appended, no new steps
    # another recipe (lr) trains from the start
    plan.stages[0].cfg = replace(cfg, lr=1e-3)
    logged.clear()
    run_pipeline(plan, log=logged.append)
    assert not any("resuming" in m for m in logged)
    assert read_checkpoint(last)[1]["train_config"]["lr"] == 1e-3
