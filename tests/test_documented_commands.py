"""Every `spongebob ...` command printed in book/gpu.md and in the README's command-line section
runs as printed (issue 14, point 2).

The commands are read from the pages (indented code lines starting with ``spongebob`` or
``torchrun``, in page order) and run in a fresh folder, one after the other, as a reader would:
book/gpu.md's on files shaped like the real ones (the embedded world in the real formats, with
extra keys, a few malformed lines and enough Chinese text for a 6,400-token tokenizer; the
ModelScope client replaced by a copy of those files), the README's on the embedded world. What is
added to a command is only what keeps it short on a CPU: a cap of a few steps on a batch of 2
without ``torch.compile`` for the training commands (``CAPS``), fewer questions and tokens for
``eval`` and ``chat``, 2 processes instead of 8 for ``torchrun`` and 2 workers instead of 16 for
``data prepare``. The recipe table of book/gpu.md is checked against the presets it describes.
"""

from __future__ import annotations

import json
import os
import random
import shlex
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest

from spongebob import cli
from spongebob.world import write_sample

ROOT = Path(__file__).resolve().parents[1]
TRAIN_CAPS = ["--max-steps", "2", "--batch-size", "2", "--grad-accum", "1", "--no-compile",
              "--eval-every", "0", "--save-every", "0"]  # fmt: skip


def documented(page: Path, section: str | None = None) -> list[str]:
    """The ``spongebob``/``torchrun`` commands of ``page`` (or of its ``## section``), in order;
    continuation lines (ending with ``\\``) joined, comments and other commands left out."""
    text = page.read_text("utf-8")
    if section is not None:
        text = text.split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
    commands, current = [], ""
    for line in text.splitlines():
        if not line.startswith("    ") and not current:
            continue
        code = line.strip()
        if current:
            current += " " + code.rstrip("\\").strip()
        elif code.startswith(("spongebob ", "torchrun ")):
            current = code.rstrip("\\").strip()
        if current and not code.endswith("\\"):
            commands.append(current)
            current = ""
    return commands


def caps(argv: list[str]) -> list[str]:
    """What keeps a documented command short on a CPU (appended: argparse takes the last)."""
    if argv[:2] == ["train", "rl"]:  # GRPO's own flags: a step of a few short answers
        return ["--steps", "2", "--problems", "2", "--group", "2", "--max-new-tokens", "8"]
    if argv[0] == "train":
        extra = list(TRAIN_CAPS)
        if "--resume" in argv:
            extra[1] = "3"  # one step more than the run it resumes
        return extra
    if argv[0] == "pipeline":
        return ["--max-steps", "2", "--batch-size", "2", "--grad-accum", "1", "--no-compile",
                "--eval-limit", "2"]  # fmt: skip
    if argv[:2] == ["data", "prepare"] and "--workers" in argv:
        return ["--workers", "2"]  # 2 worker processes on a 2-core CPU, as for torchrun
    if argv[0] == "eval":
        return ["--limit", "4", "--max-new-tokens", "8"]
    if argv[0] == "chat":
        return ["--max-new-tokens", "8"]
    return []


def run_documented(command: str, capsys) -> str:
    """Run one documented command (with `caps`) in the current folder; its stdout."""
    argv = shlex.split(command)
    if argv[0] == "torchrun":
        at = argv.index("-m")
        nproc = [a.replace("=8", "=2") for a in argv[1:at]]  # 2 processes on a 2-core CPU
        cmd = [sys.executable, "-m", "torch.distributed.run", *nproc, "-m", "spongebob",
               *argv[at + 2 :], *caps(argv[at + 2 :])]  # fmt: skip
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
        assert r.returncode == 0, f"{command}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
        return r.stdout
    assert argv[0] == "spongebob", command
    rc = cli.main(argv[1:] + caps(argv[1:]))
    out, err = capsys.readouterr()
    assert rc == 0, f"{command}\n{out[-3000:]}\n{err[-3000:]}"
    return out


# ------------------------------------------------------------------------ real-shaped data
def real_shaped(out: Path, seed: int = 0) -> Path:
    """The embedded world's four training files in the real formats, made as messy as real data:
    every tenth record has extra keys, ``pretrain.jsonl`` and ``sft_512.jsonl`` hold one malformed
    line each (below the 0.1 % that --skip-bad-lines tolerates), and ``pretrain.jsonl`` interleaves
    random Chinese text, so that BPE can learn 6,400 tokens from it."""
    world = out / "world"
    write_sample(world, seed=seed)
    rng = random.Random(seed)
    pool = [chr(0x4E00 + i) for i in range(3000)]
    for name in ("pretrain.jsonl", "sft_512.jsonl", "sft_1024.jsonl", "r1_1024.jsonl"):
        rows = [json.loads(line) for line in (world / name).read_text("utf-8").splitlines()]
        if name == "pretrain.jsonl":
            for k in range(1500):
                text = "".join(rng.choice(pool) for _ in range(rng.randint(20, 200)))
                rows.insert(4 * k, {"text": text})
        lines = []
        for i, row in enumerate(rows):
            if i % 10 == 3:
                row = {**row, "id": i, "source": "web"}
            lines.append(json.dumps(row, ensure_ascii=False))
        if name in ("pretrain.jsonl", "sft_512.jsonl"):
            assert len(lines) > 1000  # one bad line is below 0.1 %
            lines.insert(len(lines) // 2, '{"text": "a line cut in the middle')
        (out / name).write_text("\n".join(lines) + "\n", "utf-8")
    shutil.rmtree(world)
    return out


@pytest.fixture
def fake_modelscope(monkeypatch, tmp_path):
    """The ModelScope client replaced by a copy of `real_shaped` files (no network)."""
    source = real_shaped(tmp_path / "modelscope")
    calls = []

    def dataset_file_download(dataset_id, file_path, local_dir=None, **kwargs):
        calls.append(file_path)
        Path(local_dir).mkdir(parents=True, exist_ok=True)
        return str(shutil.copy(source / file_path, Path(local_dir) / file_path))

    monkeypatch.setitem(sys.modules, "modelscope",
                        types.SimpleNamespace(dataset_file_download=dataset_file_download))  # fmt: skip
    from spongebob import download

    monkeypatch.setattr(download, "check_reachable", lambda *a, **k: None)
    return calls


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    folder = tmp_path / "work"
    folder.mkdir()
    monkeypatch.chdir(folder)
    monkeypatch.setenv("SPONGEBOB_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    return folder


# ----------------------------------------------------------------------------- the pages
def test_the_pages_hold_the_commands_this_test_runs():
    gpu = documented(ROOT / "book" / "gpu.md")
    readme = documented(ROOT / "README.md", "The command line")
    assert len(gpu) == 12 and len(readme) == 11
    assert gpu[0] == "spongebob data download all --out data"
    assert any(c.startswith("torchrun --standalone --nproc_per_node=8 -m spongebob") for c in gpu)
    # every seed-preset command names the tokenizer: the right one, always
    for c in gpu:
        if "--preset seed" in c and not c.startswith("spongebob pipeline --preset seed --out"):
            assert "--tokenizer tokenizer" in c, c


def test_book_gpu_commands_run_as_printed(workdir, fake_modelscope, capsys):
    printed = {}
    for command in documented(ROOT / "book" / "gpu.md"):
        printed[command] = run_documented(command, capsys)
    assert sorted(fake_modelscope) == sorted(["pretrain.jsonl", "sft_512.jsonl", "sft_1024.jsonl",
                                              "r1_1024.jsonl"] * 2)  # fmt: skip
    # the seed chain: 6,400 tokens, each stage from the one before, the real data's mess counted
    from spongebob.checkpoint import read_checkpoint
    from spongebob.tokenizer import load_tokenizer

    assert load_tokenizer(workdir / "tokenizer").vocab_size == 6400
    meta = json.loads((workdir / "data" / "pretrain-prepared" / "meta.json").read_text("utf-8"))
    assert meta["bad_lines"]["count"] == 1 and meta["vocab_size"] == 6400
    assert {"id", "source"} <= set(meta["extra_keys"])  # counted, not refused
    for run, stage in (("pretrain", "pretrain"), ("pretrain-8gpu", "pretrain"), ("sft", "sft"),
                       ("sft-long", "sft_long"), ("distill", "distill")):  # fmt: skip
        state, extras = read_checkpoint(workdir / "runs" / run / "last.pt")
        assert extras["stage"] == stage and extras["config"]["vocab_size"] == 6400, run
    assert read_checkpoint(workdir / "runs" / "pretrain" / "last.pt")[1]["step"] == 3  # resumed
    for run in ("pipeline", "pipeline-own-tokenizer"):
        report = json.loads((workdir / "runs" / run / "report.json").read_text("utf-8"))
        assert report["skip_bad_lines"] is True
        assert report["bad_lines"]["sft/sft_512.jsonl"] == 1, report["bad_lines"]
        assert "bad lines skipped in sft_512.jsonl | 1" in (
            workdir / "runs" / run / "report.md"
        ).read_text("utf-8")
    assert report["stages"]["tokenizer"]["given"] is True


def test_readme_commands_run_as_printed(workdir, capsys):
    for command in documented(ROOT / "README.md", "The command line"):
        out = run_documented(command, capsys)
        if command.startswith("spongebob chat"):
            assert out.strip()  # an answer (of a 2-step model)
    assert (workdir / "export" / "sft.gguf").is_file()
    assert json.loads((workdir / "runs" / "sft" / "eval.json").read_text("utf-8"))["sets"]["facts"]
    assert (workdir / "runs" / "pipeline" / "report.md").is_file()


# ------------------------------------------------------------------ the recipe table, checked
def _row(stage: str) -> list[str]:
    text = (ROOT / "book" / "gpu.md").read_text("utf-8").split("## How the seed presets differ")[1]
    line = next(x for x in text.splitlines() if x.startswith(f"| {stage} |"))
    return [c.strip() for c in line.strip("|").split("|")]


@pytest.mark.parametrize(
    "stage, preset, kind",
    [("pretrain", "seed", "pretrain"), ("SFT", "seed", "sft"), ("long SFT", "seed-long", "sft"),
     ("distill", "seed", "distill")],
)  # fmt: skip
def test_gpu_md_recipe_table_matches_the_presets(stage, preset, kind):
    from spongebob.distill import distill_config
    from spongebob.pipeline import build_plan
    from spongebob.sft import sft_config
    from spongebob.train import TrainConfig

    cfg = {"pretrain": lambda p: TrainConfig.preset(p), "sft": sft_config,
           "distill": distill_config}[kind](preset)  # fmt: skip
    ours = _row(stage)[2]
    assert f"{cfg.batch_size} x {cfg.grad_accum}" in ours, ours
    assert cfg.max_steps is None and cfg.epochs == 1 and "1 epoch" in ours
    if kind != "pretrain":
        assert f"T {cfg.seq_len}" in ours
        plan = build_plan("seed", "/nonexistent")
        init = {s.name: s.init for s in plan.stages}
        name = {"SFT": "sft", "long SFT": "sft-long", "distill": "distill"}[stage]
        assert ours.endswith(f"from `{init[name]}`"), ours
    else:
        assert cfg.seq_len == 512 and "512-token windows" in ours
    assert cfg.compile is True  # the seed presets compile (--no-compile turns it off)
