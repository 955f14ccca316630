"""Tests of `spongebob train`, `data prepare` and `tokenizer train` (spongebob/cli/train.py, data.py).

Real runs of a few steps on a cut-down world (the generated sample, its training files shortened)
from a tiny pretraining checkpoint made by `spongebob train pretrain`: what the checkpoint
records (stage, recipe, configuration, steps), that the weights moved, that --resume continues,
that `train rl` runs GRPO for 2 steps of 2 problems x 2 short answers, and that bad input is one
line on stderr with exit status 2, not a traceback.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from spongebob import cli
from spongebob.checkpoint import read_checkpoint, save_checkpoint
from spongebob.config import ModelConfig
from spongebob.model import SpongeBob
from spongebob.world import write_sample

ROOT = Path(__file__).resolve().parents[1]
SMALL = {"pretrain.jsonl": 1200, "sft_512.jsonl": 64, "sft_1024.jsonl": 16, "r1_1024.jsonl": 64}


def small_world(out: Path) -> Path:
    """The sample world with its training files cut to a few lines (eval files whole)."""
    write_sample(out, seed=0)
    for name, n in SMALL.items():
        lines = (out / name).read_text("utf-8").splitlines(keepends=True)[:n]
        (out / name).write_text("".join(lines), "utf-8")
    return out


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    return small_world(tmp_path_factory.mktemp("world"))


@pytest.fixture(scope="module")
def pretrained(world, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pretrain")
    rc = cli.main(["train", "pretrain", str(world / "pretrain.jsonl"), "--out", str(out),
                   "--max-steps", "1", "--batch-size", "2"])  # fmt: skip
    assert rc == 0
    return out / "last.pt"


def _metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text("utf-8").splitlines()]


def _sft(world, init, out, *extra) -> int:
    return cli.main(["train", "sft", str(world / "sft_512.jsonl"), "--init", str(init),
                     "--replay-data", str(world / "pretrain.jsonl"), "--out", str(out),
                     "--batch-size", "2", *extra])  # fmt: skip


def test_train_sft_records_the_recipe_and_moves_the_weights(world, pretrained, tmp_path, capsys):
    out = tmp_path / "sft"
    assert _sft(world, pretrained, out, "--max-steps", "2", "--lr", "0.01") == 0
    printed = capsys.readouterr().out
    assert "sft (tiny preset, 1 process(es), cpu)" in printed and "done: 2 steps" in printed
    state, extras = read_checkpoint(out / "last.pt")
    assert extras["stage"] == "sft" and extras["step"] == 2
    cfg = extras["train_config"]
    assert (cfg["max_steps"], cfg["lr"], cfg["batch_size"], cfg["seq_len"]) == (2, 0.01, 2, 512)
    recipe = extras["recipe"]
    assert recipe["replay"] == 0.5 and recipe["random_windows"] is True  # the tiny preset's
    assert recipe["replay_sha256"] is not None and recipe["last_reply_only"] is False
    init_state, _ = read_checkpoint(pretrained)
    assert any(not torch.equal(state[k], init_state[k]) for k in state)
    assert [r["step"] for r in _metrics(out) if "loss" in r][-1] == 2


def test_train_sft_long_preset_and_resume(world, pretrained, tmp_path):
    out = tmp_path / "long"
    base = ["--preset", "tiny-long", "--batch-size", "1"]
    data = ["--data", str(world / "sft_1024.jsonl")]
    args = ["train", "sft", *data, "--init", str(pretrained), "--replay-data",
            str(world / "pretrain.jsonl"), "--out", str(out), *base]  # fmt: skip
    assert cli.main([*args, "--max-steps", "1"]) == 0
    _, first = read_checkpoint(out / "last.pt")
    assert first["stage"] == "sft_long" and first["recipe"]["last_reply_only"] is True
    assert first["train_config"]["seq_len"] == 1024
    assert cli.main([*args, "--max-steps", "2", "--resume"]) == 0
    _, second = read_checkpoint(out / "last.pt")
    assert second["step"] == 2
    steps = [r["step"] for r in _metrics(out) if "loss" in r]
    assert steps == [1, 2]  # the resumed run appended to the first run's log


def test_train_sft_without_replay(world, pretrained, tmp_path):
    out = tmp_path / "noreplay"
    rc = cli.main(["train", "sft", str(world / "sft_512.jsonl"), "--init", str(pretrained),
                   "--replay", "0", "--out", str(out), "--max-steps", "1", "--batch-size", "2"])  # fmt: skip
    assert rc == 0
    _, extras = read_checkpoint(out / "last.pt")
    assert extras["recipe"]["replay"] == 0 and extras["recipe"]["replay_sha256"] is None


def test_train_distill_tag_weight(world, pretrained, tmp_path, capsys):
    out = tmp_path / "distill"
    args = ["train", "distill", str(world / "r1_1024.jsonl"), "--init", str(pretrained),
            "--replay-data", str(world / "pretrain.jsonl"), "--out", str(out),
            "--max-steps", "1", "--batch-size", "2", "--tag-weight", "3"]  # fmt: skip
    assert cli.main(args) == 2  # the tiny preset mixes SFT chats in: where from?
    assert "pass --mix-data SFT_CHATS.jsonl, or --mix-chats 0" in capsys.readouterr().err
    rc = cli.main([*args, "--mix-data", str(world / "sft_512.jsonl"), "--mix-chats", "10"])
    assert rc == 0
    _, extras = read_checkpoint(out / "last.pt")
    assert extras["stage"] == "distill" and extras["step"] == 1
    assert extras["recipe"]["tag_weight"] == 3.0
    mixed = (out / "chats.jsonl").read_text("utf-8").splitlines()
    reasoning = (world / "r1_1024.jsonl").read_text("utf-8").splitlines()
    assert len(mixed) == len(reasoning) + 10 and set(reasoning) <= set(mixed)


def _rl(world, init, out, *extra, data=None) -> list[str]:
    return ["train", "rl", str(data or world / "r1_1024.jsonl"), "--init", str(init), "--out",
            str(out), "--steps", "2", "--problems", "2", "--group", "2", "--max-new-tokens", "8",
            *extra]  # fmt: skip


def test_train_rl_runs_grpo_and_records_it(world, pretrained, tmp_path, capsys):
    out = tmp_path / "rl"
    assert cli.main(_rl(world, pretrained, out, "--lr", "0.001", "--seed", "3")) == 0
    printed = capsys.readouterr().out
    assert "rl (tiny preset, 1 process, cpu)" in printed and "2 problems x 2 answers" in printed
    assert "done: 2 steps, reward " in printed and f"checkpoint {out / 'last.pt'}" in printed
    _, extras = read_checkpoint(out / "last.pt")
    assert extras["stage"] == "rl" and extras["step"] == 2
    cfg = extras["rl_config"]
    assert (cfg["steps"], cfg["problems"], cfg["group"], cfg["max_new_tokens"]) == (2, 2, 2, 8)
    assert (cfg["lr"], cfg["seed"]) == (0.001, 3)
    from spongebob.files import sha256_file

    assert extras["recipe"]["init_sha256"] == sha256_file(pretrained)
    records = _metrics(out)
    assert [r["step"] for r in records] == [1, 2]
    assert {"reward", "accuracy", "well_formed", "loss", "kl", "elapsed"} <= set(records[-1])


@pytest.mark.parametrize(
    "case, message",
    [
        ("bad_line", "problems.jsonl:3: a problem needs 'conversations' or 'messages'"),
        ("not_json", "problems.jsonl:2: not valid JSON"),
        ("group_1", "RLConfig: group must be >= 2, got 1"),
        ("too_few", "problems.jsonl: 2 problems, fewer than the 5 a step draws"),
        ("missing_data", "nope.jsonl: no such file"),
        ("data_twice", "give the training data once"),
    ],
)
def test_train_rl_bad_input_is_one_line(world, pretrained, tmp_path, capsys, case, message):
    good = (world / "r1_1024.jsonl").read_text("utf-8").splitlines(keepends=True)[:2]
    data = tmp_path / "problems.jsonl"
    data.write_text("".join(good), "utf-8")
    extra: list[str] = []
    if case == "bad_line":
        with open(data, "a", encoding="utf-8") as f:
            f.write(json.dumps({"conversations": [{"role": "assistant", "content": "4"}]}) + "\n")
    elif case == "not_json":
        data.write_text(good[0] + "{not json\n", "utf-8")
    elif case == "group_1":
        extra = ["--group", "1"]
    elif case == "too_few":
        extra = ["--problems", "5"]
    elif case == "missing_data":
        data = tmp_path / "nope.jsonl"
    elif case == "data_twice":
        extra = ["--data", str(data)]
    rc = cli.main(_rl(world, pretrained, tmp_path / "run", *extra, data=data))
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("spongebob: error: ") and message in err, err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "run" / "last.pt").exists()


def test_train_rl_refuses_torchrun(world, pretrained, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert cli.main(_rl(world, pretrained, tmp_path / "run")) == 2
    err = capsys.readouterr().err
    assert err == ("spongebob: error: train rl runs in one process (WORLD_SIZE=2 under "
                   "torchrun): run it with plain `spongebob train rl`\n")  # fmt: skip


@pytest.fixture(scope="module")
def other_vocab(tmp_path_factory) -> Path:
    small = ModelConfig(dim=32, n_layers=1, n_heads=4, n_kv_heads=2, vocab_size=300)
    path = tmp_path_factory.mktemp("other") / "other.pt"
    return save_checkpoint(path, {"model": SpongeBob(small).state_dict(),
                                  "config": small.to_dict()})  # fmt: skip


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing_data", "nope.jsonl: no such file or folder"),
        ("missing_init", "nope.pt: no such checkpoint file"),
        ("no_replay_data", "pass --replay-data"),
        ("missing_replay_data", "nope_replay.jsonl: no such file or folder"),
        ("pretrain_data", "holds pretrain data; SFT needs chat lines"),
        ("other_vocab", "built for 300 tokens but the tokenizer has 2048"),
        ("data_twice", "give the training data once"),
    ],
)
def test_bad_input_is_one_line(world, pretrained, other_vocab, tmp_path, capsys, case, message):
    data, init = str(world / "sft_512.jsonl"), str(pretrained)
    replay = ["--replay-data", str(world / "pretrain.jsonl")]
    extra: list[str] = []
    if case == "missing_data":
        data = str(tmp_path / "nope.jsonl")
    elif case == "missing_init":
        init = str(tmp_path / "nope.pt")
    elif case == "no_replay_data":
        replay = []
    elif case == "missing_replay_data":
        replay = ["--replay-data", str(tmp_path / "nope_replay.jsonl")]
    elif case == "pretrain_data":
        data = str(world / "pretrain.jsonl")
    elif case == "other_vocab":
        init = str(other_vocab)
    elif case == "data_twice":
        extra = ["--data", data]
    rc = cli.main(["train", "sft", data, "--init", init, *replay, *extra,
                   "--out", str(tmp_path / "run"), "--max-steps", "1"])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("spongebob: error: ") and message in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "run" / "last.pt").exists()


def test_bad_input_from_the_shell_has_no_traceback(world, tmp_path):
    r = subprocess.run([sys.executable, "-m", "spongebob", "train", "sft",
                        str(world / "sft_512.jsonl"), "--init", str(tmp_path / "missing.pt"),
                        "--replay", "0"],
                       capture_output=True, text=True, cwd=ROOT, timeout=120)  # fmt: skip
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        f"spongebob: error: {tmp_path / 'missing.pt'}: no such checkpoint file; check the path"
    ]


# ------------------------------------------------- what the command line passes on (no training)
class _Result:
    history, val_history, step, checkpoint = [], [], 0, None


@pytest.fixture
def captured(monkeypatch):
    """`pretrain`, `sft` and `distill` replaced by stand-ins that record their arguments."""
    calls = {}

    def fake(name):
        def run(source, tok, out, cfg, **kw):
            calls[name] = {"source": source, "vocab": tok.vocab_size, "cfg": cfg, **kw}
            return _Result()

        return run

    import spongebob.distill
    import spongebob.pretrain
    import spongebob.sft

    monkeypatch.setattr(spongebob.pretrain, "pretrain", fake("pretrain"))
    monkeypatch.setattr(spongebob.sft, "sft", fake("sft"))
    monkeypatch.setattr(spongebob.distill, "distill", fake("distill"))
    return calls


def test_train_passes_device_bad_lines_and_compile(world, pretrained, tmp_path, captured):
    assert cli.main(["train", "pretrain", str(world / "pretrain.jsonl"), "--out",
                     str(tmp_path / "a")]) == 0  # fmt: skip
    got = captured["pretrain"]
    assert got["device"] == torch.device("cpu")  # auto on a machine without a GPU
    assert "skip_bad_lines" not in got and "max_bad_fraction" not in got  # the defaults: strict
    assert got["cfg"].compile is False  # the tiny preset's
    assert cli.main(["train", "pretrain", str(world / "pretrain.jsonl"), "--out",
                     str(tmp_path / "b"), "--device", "cpu", "--skip-bad-lines",
                     "--max-bad-fraction", "0.01", "--compile"]) == 0  # fmt: skip
    got = captured["pretrain"]
    assert (got["skip_bad_lines"], got["max_bad_fraction"], got["cfg"].compile) == (
        True,
        0.01,
        True,
    )
    for kind in ("sft", "distill"):
        data = world / ("sft_512.jsonl" if kind == "sft" else "r1_1024.jsonl")
        mix = ["--mix-chats", "0"] if kind == "distill" else []
        assert cli.main(["train", kind, str(data), "--init", str(pretrained), "--replay", "0",
                         "--out", str(tmp_path / kind), "--skip-bad-lines", "--no-compile",
                         *mix]) == 0  # fmt: skip
        got = captured[kind]
        assert got["device"] == torch.device("cpu") and got["skip_bad_lines"] is True
        assert got["cfg"].compile is False and got["replay"] == 0 and got["init"] == pretrained


@pytest.mark.parametrize("fraction", ["-0.1", "1.5"])
def test_max_bad_fraction_is_a_share(world, tmp_path, capsys, fraction):
    rc = cli.main(["train", "pretrain", str(world / "pretrain.jsonl"), "--out", str(tmp_path),
                   "--skip-bad-lines", "--max-bad-fraction", fraction])  # fmt: skip
    assert rc == 2
    assert (
        f"--max-bad-fraction must be between 0 and 1, got {float(fraction)}"
        in capsys.readouterr().err
    )


def test_train_leaves_the_process_group(world, tmp_path, captured):
    import torch.distributed as dist

    dist.init_process_group("gloo", rank=0, world_size=1,
                            store=dist.FileStore(str(tmp_path / "store"), 1))  # fmt: skip
    try:
        assert cli.main(["train", "pretrain", str(world / "pretrain.jsonl"), "--out",
                         str(tmp_path / "run")]) == 0  # fmt: skip
        assert not dist.is_initialized()  # destroy_process_group at the end
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


# ------------------------------------------------ data prepare / tokenizer train: FILE or --input
def test_prepare_and_tokenizer_take_the_file_positionally_or_as_input(world, tmp_path, capsys):
    from spongebob.data import PreparedData

    data = world / "sft_512.jsonl"
    assert cli.main(["data", "prepare", str(data), "--out", str(tmp_path / "a")]) == 0
    assert cli.main(["data", "prepare", "--input", str(data), "--out", str(tmp_path / "b")]) == 0
    for name in ("ids.bin", "offsets.bin", "kinds.bin"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert len(PreparedData(tmp_path / "a")) == 64
    assert "with the course tokenizer" in capsys.readouterr().out
    rc = cli.main(["data", "prepare", str(data), "--input", str(data)])
    assert rc == 2 and "give the JSONL file once" in capsys.readouterr().err
    rc = cli.main(["data", "prepare", "--out", str(tmp_path / "c")])
    assert rc == 2 and "give the JSONL file once" in capsys.readouterr().err
    for argv in ([str(world / "pretrain.jsonl")], ["--input", str(world / "pretrain.jsonl")]):
        out = tmp_path / f"tok{len(argv)}"
        assert cli.main(["tokenizer", "train", *argv, "--vocab-size", "300", "--out", str(out),
                         "--max-lines", "100"]) == 0  # fmt: skip
    assert (tmp_path / "tok1" / "tokenizer.json").read_bytes() == (
        tmp_path / "tok2" / "tokenizer.json"
    ).read_bytes()
    assert "on pretrain.jsonl, first 100 lines" in capsys.readouterr().out


def test_tokenizer_train_skips_and_reports_bad_lines(tmp_path, capsys):
    path = tmp_path / "p.jsonl"
    path.write_text("".join(f'{{"text": "line {i}", "id": {i}}}\n' for i in range(2000))
                    + "not json\n", "utf-8")  # fmt: skip
    out = tmp_path / "tok"
    rc = cli.main(["tokenizer", "train", str(path), "--vocab-size", "300", "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and "p.jsonl:2001: not valid JSON" in err and "--skip-bad-lines skips" in err
    rc = cli.main(["tokenizer", "train", str(path), "--vocab-size", "300", "--out", str(out),
                   "--skip-bad-lines"])  # fmt: skip
    assert rc == 0
    assert (
        "skipped 1 bad line(s) of 2,001; first line 2001: not valid JSON" in capsys.readouterr().out
    )


@pytest.mark.parametrize(
    "prepared_at, preset, message",
    [(2048, "tiny-long", "chats prepared at max_seq_len 2048, longer than the model's "
                         "max_seq_len 1024; prepare the data again with --max-seq-len 1024"),
     (512, "tiny-long", "chats prepared at max_seq_len 512, but this run trains at seq_len 1024; "
                        "prepare the data again with --max-seq-len 1024")],
)  # fmt: skip
def test_a_folder_prepared_at_another_length_is_one_line(
    world, pretrained, tmp_path, capsys, prepared_at, preset, message
):
    folder = tmp_path / "prepared"
    assert cli.main(["data", "prepare", str(world / "sft_1024.jsonl"), "--max-seq-len",
                     str(prepared_at), "--out", str(folder)]) == 0  # fmt: skip
    capsys.readouterr()
    rc = cli.main(["train", "sft", str(folder), "--init", str(pretrained), "--replay", "0",
                   "--preset", preset, "--max-steps", "1", "--out", str(tmp_path / "run")])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2 and err == f"spongebob: error: sft_1024.jsonl: {message}\n"
    assert not (tmp_path / "run" / "last.pt").exists()
