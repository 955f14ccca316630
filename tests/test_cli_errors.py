"""Every command's input and output problems end in one line naming the path, exit status 2
(spongebob/cli/): a missing input, an existing file where an output folder goes, a folder where an
output file goes, an unwritable folder; and the seed presets' tokenizer rule. Nothing here trains:
each problem is found before any work starts."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from spongebob import cli
from spongebob.checkpoint import save_checkpoint
from spongebob.config import ModelConfig
from spongebob.data import tokenizer_fingerprint
from spongebob.model import SpongeBob
from spongebob.world import course_tokenizer, write_sample

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    folder = tmp_path_factory.mktemp("world")
    write_sample(folder, seed=0)
    return folder


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """A small checkpoint of the course tokenizer's vocabulary, good as any --init/--checkpoint."""
    tok = course_tokenizer()
    torch.manual_seed(0)
    config = ModelConfig(dim=32, n_layers=1, n_heads=4, n_kv_heads=2, vocab_size=tok.vocab_size,
                         hidden_dim=48, max_seq_len=128)  # fmt: skip
    state = {"model": SpongeBob(config).state_dict(), "config": config.to_dict(),
             "stage": "sft", "tokenizer": tokenizer_fingerprint(tok)}  # fmt: skip
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "sft.pt", state)


@pytest.fixture
def read_only(tmp_path, monkeypatch):
    """A folder nobody may write into (root ignores permission bits, so os.access is told too)."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    if os.geteuid() == 0:
        real = os.access

        def access(path, mode, *a, **k):
            inside = Path(path).resolve() == folder or folder in Path(path).resolve().parents
            return False if inside and mode & os.W_OK else real(path, mode, *a, **k)

        monkeypatch.setattr(os, "access", access)
    yield folder
    folder.chmod(0o755)


def run(capsys, *argv) -> str:
    """Run a command in this process; it must fail with one line on stderr and status 2."""
    rc = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert rc == 2, (out, err)
    assert err.startswith("spongebob: error: ") and err.count("\n") == 1, err
    return err


def commands(world: Path, ckpt: Path, *, data=None, out=None, out_file=None):
    """Every command reading an input (``data``) or writing an output (``out`` a folder,
    ``out_file`` a file), with valid everything else. Yields (name, argv)."""
    pre = data or world / "pretrain.jsonl"
    chats = data or world / "sft_512.jsonl"
    o = ["--out", out] if out else []
    if out or data:
        yield "data prepare", ["data", "prepare", pre, *o]
        yield "tokenizer train", ["tokenizer", "train", pre, "--vocab-size", "300",
                                  "--out", out or world / "never"]  # fmt: skip
        yield "train pretrain", ["train", "pretrain", pre, *o]
        yield "train sft", ["train", "sft", chats, "--init", ckpt, "--replay", "0", *o]
        yield "train distill", ["train", "distill", data or world / "r1_1024.jsonl", "--init",
                                ckpt, "--replay", "0", "--mix-chats", "0", *o]  # fmt: skip
        yield "train rl", ["train", "rl", data or world / "r1_1024.jsonl", "--init", ckpt, *o]
    if out:
        yield "data sample", ["data", "sample", "--out", out]
        yield "data download", ["data", "download", "pretrain", "--out", out]
        yield "pipeline", ["pipeline", "--dry-run", "--out", out]
        yield "export hf", ["export", "hf", "--checkpoint", ckpt, "--out", out]
    if data:
        yield "train sft --init", ["train", "sft", world / "sft_512.jsonl", "--init", data,
                                   "--replay", "0"]  # fmt: skip
        yield "train --replay-data", ["train", "sft", world / "sft_512.jsonl", "--init", ckpt,
                                      "--replay-data", data]  # fmt: skip
        yield "chat", ["chat", "--checkpoint", data, "--prompt", "hi"]
        yield "eval", ["eval", "--checkpoint", data]
        yield "eval --file", ["eval", "--checkpoint", ckpt, "--file", data, "--grader", "fact"]
        yield "export", ["export", "gguf", "--checkpoint", data, "--out", world / "x.gguf"]
        yield "--tokenizer", ["train", "pretrain", world / "pretrain.jsonl", "--tokenizer", data]
        yield "pipeline --data", ["pipeline", "--dry-run", "--data", data]
    if out_file:
        yield "eval --out", ["eval", "--checkpoint", ckpt, "--out", out_file]
        yield "export gguf", ["export", "gguf", "--checkpoint", ckpt, "--out", out_file]


def test_a_missing_input_is_one_line_naming_it(world, ckpt, tmp_path, capsys):
    missing = tmp_path / "nowhere" / "missing.jsonl"
    names = []
    for name, argv in commands(world, ckpt, data=missing):
        err = run(capsys, *argv)
        assert str(missing) in err, (name, err)
        names.append(name)
    assert len(names) == 14


def test_an_existing_file_as_output_folder_is_one_line(world, ckpt, tmp_path, capsys):
    taken = tmp_path / "taken"
    taken.write_text("a file, not a folder\n", "utf-8")
    for name, argv in commands(world, ckpt, out=taken):
        err = run(capsys, *argv)
        assert f"{taken}: exists and is a file, not a folder" in err, (name, err)
    assert taken.read_text("utf-8") == "a file, not a folder\n"  # never touched
    for name, argv in commands(world, ckpt, out=taken / "sub"):  # below a file: cannot exist
        err = run(capsys, *argv)
        assert f"{taken}: is a file, so {taken / 'sub'} cannot be created" in err, (name, err)


def test_a_folder_as_output_file_is_one_line(world, ckpt, tmp_path, capsys):
    for name, argv in commands(world, ckpt, out_file=tmp_path):
        err = run(capsys, *argv)
        assert f"{tmp_path}: is a folder, not a file" in err, (name, err)


def test_an_unwritable_folder_is_one_line(world, ckpt, read_only, capsys):
    for out in (read_only, read_only / "new"):
        for name, argv in commands(world, ckpt, out=out):
            err = run(capsys, *argv)
            assert f"{read_only}: " in err and "not writable" in err, (name, err)
        for name, argv in commands(world, ckpt, out_file=read_only / "result.json"):
            err = run(capsys, *argv)
            assert f"{read_only}: not writable" in err, (name, err)


def test_tokenizer_train_into_an_existing_file_no_traceback(world, tmp_path):
    # issue 14, point 13: this ended in a FileExistsError traceback
    taken = tmp_path / "tok"
    taken.write_text("x", "utf-8")
    r = subprocess.run([sys.executable, "-m", "spongebob", "tokenizer", "train",
                        str(world / "pretrain.jsonl"), "--out", str(taken)],
                       capture_output=True, text=True, cwd=ROOT, timeout=120)  # fmt: skip
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr == (f"spongebob: error: {taken}: exists and is a file, not a folder "
                        "(tokenizer train --out: a tokenizer folder)\n")  # fmt: skip


# ------------------------------------------------------------------ the right tokenizer, always
SEED_COMMANDS = [
    ["data", "prepare", "{w}/pretrain.jsonl", "--preset", "seed"],
    ["train", "pretrain", "{w}/pretrain.jsonl", "--preset", "seed"],
    ["train", "pretrain", "{w}/pretrain.jsonl", "--model-preset", "seed-gqa"],
    ["train", "sft", "{w}/sft_512.jsonl", "--preset", "seed", "--init", "{c}"],
    ["train", "sft", "{w}/sft_1024.jsonl", "--preset", "seed-long", "--init", "{c}"],
    ["train", "distill", "{w}/r1_1024.jsonl", "--preset", "seed", "--init", "{c}"],
]


@pytest.mark.parametrize("argv", SEED_COMMANDS, ids=lambda a: " ".join(a[:2] + a[-3:-1]))
def test_seed_presets_never_fall_back_to_the_course_tokenizer(world, ckpt, capsys, argv):
    argv = [a.format(w=world, c=ckpt) for a in argv]
    err = run(capsys, *argv)
    assert "needs --tokenizer DIR: a 6400-token tokenizer" in err


@pytest.mark.parametrize("argv", SEED_COMMANDS, ids=lambda a: " ".join(a[:2] + a[-3:-1]))
def test_seed_presets_refuse_a_tokenizer_of_another_size(world, ckpt, tmp_path, capsys, argv):
    folder = tmp_path / "tok2048"
    course_tokenizer().save(folder)
    argv = [a.format(w=world, c=ckpt) for a in argv] + ["--tokenizer", str(folder)]
    err = run(capsys, *argv)
    assert f"{folder} has 2048 tokens but the " in err and "built for 6400" in err


def test_pipeline_refuses_a_tokenizer_of_another_size(tmp_path, capsys):
    folder = tmp_path / "tok2048"
    course_tokenizer().save(folder)
    err = run(capsys, "pipeline", "--preset", "seed", "--tokenizer", folder, "--dry-run")
    assert f"{folder} has 2048 tokens but the seed pipeline's model is built for 6400" in err


def test_pipeline_refuses_torchrun(monkeypatch, capsys):
    monkeypatch.setenv("WORLD_SIZE", "8")
    err = run(capsys, "pipeline", "--dry-run")
    assert "pipeline runs in one process (WORLD_SIZE=8 under torchrun)" in err


def test_a_device_that_is_not_there_is_one_line(world, ckpt, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    err = run(capsys, "chat", "--checkpoint", ckpt, "--prompt", "hi", "--device", "cuda")
    assert "device cuda: no CUDA GPU is visible to PyTorch" in err
    err = run(capsys, "pipeline", "--dry-run", "--device", "cuda")
    assert "device cuda: no CUDA GPU is visible to PyTorch" in err
