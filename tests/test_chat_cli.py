"""Tests of `spongebob chat` and `spongebob eval` (hand-written in spongebob/cli/chat.py, eval.py).

The interactive chat is driven through a real pseudo-terminal (the `pty` module): the test types
into `python -m spongebob chat`, reads the streamed answer, clears the history and quits.
"""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from spongebob import cli
from spongebob.checkpoint import save_checkpoint
from spongebob.config import ModelConfig
from spongebob.data import ChatEncoder
from spongebob.evaluate import answer_chats
from spongebob.model import SpongeBob
from spongebob.world import course_tokenizer, sample_dir

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tok():
    return course_tokenizer()


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory, tok):
    folder = tmp_path_factory.mktemp("ckpt")
    torch.manual_seed(0)
    config = ModelConfig(dim=32, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=tok.vocab_size,
                         hidden_dim=48, max_seq_len=160)  # fmt: skip
    model = SpongeBob(config)
    ours = save_checkpoint(folder / "ours.pt", {"model": model.state_dict(),
                                                "config": config.to_dict(), "stage": "sft"})  # fmt: skip
    bare = folder / "bare.pt"
    torch.save(model.state_dict(), bare)  # the original's release format
    small = ModelConfig(dim=32, n_layers=1, n_heads=4, n_kv_heads=2, vocab_size=300)
    other = save_checkpoint(folder / "other_vocab.pt", {"model": SpongeBob(small).state_dict(),
                                                        "config": small.to_dict()})  # fmt: skip
    junk = folder / "junk.pt"
    junk.write_text("not a checkpoint", "utf-8")
    return {"ours": ours, "bare": bare, "other": other, "junk": junk, "model": model.eval()}


# ------------------------------------------------------------------------------ pure helpers
def test_infer_config_from_shapes():
    cfg = ModelConfig(dim=64, n_layers=3, n_heads=4, n_kv_heads=2, vocab_size=500, hidden_dim=96)
    sd = SpongeBob(cfg).state_dict()
    got = cli.infer_config(sd, n_heads=4, max_seq_len=cfg.max_seq_len)
    assert got == cfg
    assert cli.infer_config(sd, n_heads=2).n_kv_heads == 1  # the head size follows n_heads
    with pytest.raises(ValueError, match="no tok_embeddings.weight"):
        cli.infer_config({"w": torch.zeros(2)})
    with pytest.raises(ValueError, match="divide by --n-heads"):
        cli.infer_config(sd, n_heads=5)


def test_infer_config_matches_the_originals_default_layout():
    seed = ModelConfig.preset("seed")
    shapes = {k: torch.empty(v.shape) for k, v in SpongeBob(seed).state_dict().items()}
    got = cli.infer_config(shapes)
    assert (got.dim, got.n_layers, got.n_heads, got.n_kv_heads, got.vocab_size) == (
        512, 8, 8, 8, 6400)  # fmt: skip
    assert got.ffn_hidden_dim == 1408


def test_fit_history_drops_whole_exchanges(tok):
    enc = ChatEncoder(tok)
    history = []
    for i in range(4):
        history += [{"role": "user", "content": f"Question {i}: where does Pearl live?"},
                    {"role": "assistant", "content": f"Answer {i}: in an anchor."}]  # fmt: skip
    history.append({"role": "user", "content": "And Gary?"})
    full = len(enc.encode(history)[0])
    kept, ids, dropped = cli.fit_history(enc, history, full)
    assert (kept, dropped) == (history, 0)
    kept, ids, dropped = cli.fit_history(enc, history, full - 1)
    assert dropped == 1 and kept == history[2:] and ids == enc.encode(history[2:])[0]
    kept, ids, dropped = cli.fit_history(enc, history, len(enc.encode(history[-1:])[0]))
    assert kept == history[-1:] and dropped == 4
    with pytest.raises(ValueError, match="this message alone is"):
        cli.fit_history(enc, history, 5)


@pytest.mark.parametrize("size", [1, 2, 3, 100])
def test_reasoning_splitter_any_chunking(size):
    text = "<think>\n3 < 4, so 3 + 4 = 7\n</think>\n<answer>\n7\n</answer>"
    s = cli.ReasoningSplitter()
    parts = []
    for i in range(0, len(text), size):
        parts += s.feed(text[i : i + size])
    parts += s.flush()
    think = "".join(t for k, t in parts if k == "think")
    answer = "".join(t for k, t in parts if k == "answer")
    assert think == "\n3 < 4, so 3 + 4 = 7\n"
    assert answer == "\n\n7\n"
    plain = cli.ReasoningSplitter()
    assert plain.feed("a <b> c <thi") == [("answer", "a "), ("answer", "<"), ("answer", "b> c ")]
    assert plain.flush() == [("answer", "<thi")]


# ------------------------------------------------------------------------------ chat --prompt
def test_prompt_prints_only_the_greedy_answer(ckpts, tok, capsys):
    q = "Where does Pearl live?"
    rc = cli.main(["chat", "--checkpoint", str(ckpts["ours"]), "--prompt", q,
                   "--temperature", "0", "--max-new-tokens", "12"])  # fmt: skip
    out = capsys.readouterr()
    ((want, _),) = answer_chats(ckpts["model"], tok, [[{"role": "user", "content": q}]],
                                max_new_tokens=12)  # fmt: skip
    assert rc == 0 and out.out == want.strip() + "\n" and out.err == ""


def test_prompt_with_a_bare_state_dict_prints_the_inferred_config(ckpts, capsys):
    args = ["chat", "--checkpoint", str(ckpts["bare"]), "--prompt", "Hi", "--temperature", "0",
            "--max-new-tokens", "4", "--n-heads", "4"]  # fmt: skip
    assert cli.main(args) == 0
    err = capsys.readouterr().err
    assert "dim=32, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=2048, hidden_dim=48" in err
    # n_heads is not in the shapes: 8 heads load too (with 4 kv heads of half the size) ...
    assert cli.main(args[:-1] + ["8"]) == 0
    assert "n_heads=8, n_kv_heads=4" in capsys.readouterr().err
    # ... but a head count that does not divide dim is refused in one line
    assert cli.main(args[:-1] + ["5"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("spongebob: error:") and "--n-heads" in err


@pytest.mark.parametrize("which, message", [
    ("missing", "no such checkpoint file"), ("junk", "junk.pt: "),
    ("other", "vocab_size 300 is not the course tokenizer's")])  # fmt: skip
def test_bad_checkpoints_get_one_line(ckpts, tmp_path, which, message):
    path = tmp_path / "nope.pt" if which == "missing" else ckpts[which]
    r = subprocess.run([sys.executable, "-m", "spongebob", "chat", "--checkpoint", str(path),
                        "--prompt", "hi"], capture_output=True, text=True, cwd=ROOT)  # fmt: skip
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("spongebob: error:"), r.stderr
    assert message in r.stderr and "Traceback" not in r.stderr


def test_a_wrong_tokenizer_folder_is_one_line(ckpts, tmp_path, capsys):
    (tmp_path / "tokenizer.json").write_text("{broken", "utf-8")
    rc = cli.main(["chat", "--checkpoint", str(ckpts["ours"]), "--tokenizer", str(tmp_path),
                   "--prompt", "hi"])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2 and "not a readable tokenizer" in err and err.count("\n") == 1


# ------------------------------------------------------------------------------ interactive
class Terminal:
    """A child process on a pseudo-terminal: type lines, read until a marker appears."""

    def __init__(self, argv: list[str]) -> None:
        self.master, slave = pty.openpty()
        self.proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, cwd=ROOT,
                                     env={**os.environ, "TERM": "dumb"})  # fmt: skip
        os.close(slave)
        self.seen = ""

    def read_until(self, marker: str, timeout: float = 60.0) -> str:
        start, deadline = len(self.seen), time.monotonic() + timeout
        while marker not in self.seen[start:]:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.master], [], [], left)[0]:
                raise AssertionError(f"no {marker!r} in the terminal; got {self.seen[start:]!r}")
            try:
                self.seen += os.read(self.master, 4096).decode("utf-8", "replace")
            except OSError:  # the child closed the terminal
                raise AssertionError(f"closed before {marker!r}: {self.seen[start:]!r}") from None
        return self.seen[start:]

    def type(self, line: str) -> None:
        os.write(self.master, (line + "\n").encode())


def test_interactive_chat_in_a_real_terminal(ckpts, tok):
    term = Terminal([sys.executable, "-m", "spongebob", "chat", "--checkpoint",
                     str(ckpts["ours"]), "--temperature", "0", "--max-new-tokens", "8"])  # fmt: skip
    try:
        assert "/clear" in term.read_until("you> ")
        q = "Where does Pearl live?"
        term.type(q)
        shown = term.read_until("you> ")
        ((want, _),) = answer_chats(ckpts["model"], tok, [[{"role": "user", "content": q}]],
                                    max_new_tokens=8)  # fmt: skip
        assert "bot> " in shown
        reply = shown.split("bot> ", 1)[1].rsplit("you> ", 1)[0]
        assert reply.replace("\r\n", "\n").strip() == want.strip().replace("\r\n", "\n")
        for i in range(6):  # fill the 160-token context: the oldest exchanges are dropped
            term.type(f"Tell me more about the pineapple house number {i}, please.")
            shown = term.read_until("you> ")
        assert "oldest exchange(s) dropped to fit the context" in term.seen
        term.type("/clear")
        assert "(history cleared)" in term.read_until("you> ")
        term.type("/quit")
        assert term.proc.wait(timeout=30) == 0
    finally:
        if term.proc.poll() is None:
            term.proc.kill()
        os.close(term.master)


# ------------------------------------------------------------------------------ eval
def test_eval_command_table_and_json(ckpts, tmp_path, capsys):
    out = tmp_path / "report.json"
    rc = cli.main(["eval", "--checkpoint", str(ckpts["ours"]), "--sets", "facts", "arith",
                   "--limit", "3", "--max-new-tokens", "4", "--out", str(out)])  # fmt: skip
    text = capsys.readouterr().out
    assert rc == 0 and "facts" in text and "arith" in text and "accuracy" in text
    doc = json.loads(out.read_text("utf-8"))
    assert doc["stage"] == "sft" and set(doc["sets"]) == {"facts", "arith"}
    assert doc["sets"]["arith"]["grader"] == "number" and doc["sets"]["facts"]["grader"] == "fact"
    assert [r["expected"] for r in doc["sets"]["facts"]["records"]] == [
        json.loads(line)["expected"]
        for line in (sample_dir() / "eval_facts.jsonl").read_text("utf-8").splitlines()[:3]
    ]


def test_eval_command_on_a_users_file(ckpts, tmp_path, capsys):
    mine = tmp_path / "mine.jsonl"
    mine.write_text(json.dumps({"messages": [{"role": "user", "content": "2 + 2?"}],
                                "expected": "4"}) + "\n", "utf-8")  # fmt: skip
    base = ["eval", "--checkpoint", str(ckpts["ours"]), "--file", str(mine)]
    assert cli.main(base + ["--grader", "number", "--max-new-tokens", "3"]) == 0
    assert "mine" in capsys.readouterr().out
    assert cli.main(base) == 2  # a file is never graded by guessing
    assert "--file and --grader go together" in capsys.readouterr().err
    assert cli.main(["eval", "--checkpoint", str(ckpts["ours"]), "--sets", "nope"]) == 2
    assert "unknown ['nope']" in capsys.readouterr().err
