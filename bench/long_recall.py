"""Long-context recall (issue 15, point 3) against the amount of long training data: chapter 07's
long stage from its SFT checkpoint, on the 300 chats of ``sft_1024.jsonl`` or on N chats made by
the same generator (``spongebob.world.chats.long_conversation``: the detail at every distance,
half the values made up), graded on ``eval_long.jsonl`` whole and with only the first K filler
exchanges kept (K = 0: the question right after the detail), as chapter 07's
``recall_by_distance`` does.

    .venv/bin/python bench/long_recall.py --only chapter            # the chapter's long stage
    .venv/bin/python bench/long_recall.py --only chats3000-300      # 3,000 chats, 300 steps

Not a test: it prints a table and writes only under ``--work`` (default: the artifact folder's
``bench/long``). The extra chats come from their own random stream (``bench-long``), so none is an
``eval_long`` chat; runs are cached by ``sft_checkpoint``.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import torch
from sft_recipes import chapter_sft  # bench/ is on sys.path when this script runs

from spongebob.checkpoint import load_model
from spongebob.data import ChatEncoder, read_jsonl
from spongebob.evaluate import answer_chats, evaluate_sets, grade_fact
from spongebob.files import write_jsonl
from spongebob.runtime import artifacts_dir
from spongebob.sft import sft_checkpoint, sft_config, sft_options
from spongebob.world import course_tokenizer, sample_dir
from spongebob.world.chats import long_training_chats
from spongebob.world.content import FILLER, LONG_DETAILS

# name: (training chats: None = the world's sft_1024.jsonl, else how many to generate; steps;
# option overrides of sft_options("tiny-long"))
RECIPES: dict[str, tuple[int | None, int, dict]] = {
    "chapter": (None, 100, {}),
    "chapter-all-replies": (None, 100, {"last_reply_only": False}),
    "chapter-300": (None, 300, {"last_reply_only": False}),
    "chats3000-300": (3000, 300, {"last_reply_only": False}),
}
KEEP = (0, 2)  # filler exchanges kept before the question (the whole chat: eval_long itself)
FILLER_TURNS = {user for user, _ in FILLER}


def at_distance(messages: list[dict], keep: int) -> list[dict]:
    """The chat with only its first ``keep`` filler exchanges before the final question."""
    first = next(i for i, m in enumerate(messages) if m["content"] in FILLER_TURNS)
    return messages[:first] + messages[first:-1][: 2 * keep] + messages[-1:]


def recall_near(model, tok, rows: list[dict]) -> dict[int, float]:
    """Recall on ``rows`` (``eval_long``) with only the first K filler exchanges kept, for K in
    ``KEEP``: ``{K: share right}``."""
    out = {}
    for keep in KEEP:
        answers = answer_chats(model, tok, [at_distance(r["messages"], keep) for r in rows],
                               max_new_tokens=32)  # fmt: skip
        right = sum(grade_fact(a, r["expected"]) for (a, _), r in zip(answers, rows))
        out[keep] = right / len(rows)
    return out


@torch.no_grad()
def copies_in_turns(model, tok, rows: list[dict]) -> dict[str, float]:
    """Teacher-forced copying at distance 0: each ``eval_long`` chat with no filler and its answer
    appended (``LONG_DETAILS``' answer template); the share of chats whose value the model
    predicts token for token (greedy, from the true prefix) where the user states it, where the
    assistant's acknowledgement repeats it a dozen tokens later, and in the final answer."""
    encoder, hits, n = ChatEncoder(tok), {"user": 0, "ack": 0, "answer": 0}, 0
    for r in rows:
        answer = LONG_DETAILS[r["id"].split(".")[-1]][3].format(v=r["expected"])
        conv = at_distance(r["messages"], 0) + [{"role": "assistant", "content": answer}]
        ids = encoder.encode(conv)[0]
        spans = []
        for text in (" " + r["expected"], r["expected"]):
            v = tok.encode(text)
            spans = [
                (i, i + len(v)) for i in range(len(ids) - len(v) + 1) if ids[i : i + len(v)] == v
            ]
            if len(spans) >= 3:
                break
        if len(spans) < 3:
            continue
        n += 1
        pred = model(torch.tensor([ids])).logits[0].argmax(-1).tolist()
        for name, (a, b) in zip(hits, (spans[0], spans[1], spans[-1])):
            hits[name] += all(pred[i - 1] == ids[i] for i in range(a, b))
    return {k: v / n for k, v in hits.items()} | {"chats": n}


def long_chats(n: int, out: Path) -> Path:
    """``n`` long training chats from the world's own generator, in their own random stream."""
    chats = long_training_chats(random.Random("bench-long"), n)
    write_jsonl(out, [{"conversations": c} for c in chats])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="*", choices=sorted(RECIPES), help="recipes to run")
    ap.add_argument("--work", type=Path, default=None)
    args = ap.parse_args()
    work = args.work or artifacts_dir("bench", "long")
    world, tok = sample_dir(0), course_tokenizer()
    sft = chapter_sft(world, tok)
    rows = list(read_jsonl(world / "eval_long.jsonl"))
    print(f"torch threads {torch.get_num_threads()}")
    print(
        f"{'recipe':22s} {'chats':>6s} {'steps':>6s} {'min':>5s} {'long':>6s}",
        " ".join(f"{'keep ' + str(k):>7s}" for k in KEEP),
        f"{'facts':>6s}",
    )
    for name in args.only or RECIPES:
        n, steps, options = RECIPES[name]
        source = world / "sft_1024.jsonl" if n is None else long_chats(n, work / f"chats{n}.jsonl")
        t0 = time.perf_counter()
        ckpt = sft_checkpoint(source, tok, work / name, sft_config("tiny-long", max_steps=steps),
                              init=sft, stage="sft_long", replay_source=world / "pretrain.jsonl",
                              **sft_options("tiny-long", **options), progress=False)  # fmt: skip
        minutes = (time.perf_counter() - t0) / 60
        model = load_model(ckpt).eval()
        reports = evaluate_sets(model, tok, world, ["long", "facts"])
        near = recall_near(model, tok, rows)
        print(f"{name:22s} {n or 300:6d} {steps:6d} {minutes:5.1f} {reports['long'].accuracy:6.0%}",
              " ".join(f"{k:7.0%}" for k in near.values()),
              f"{reports['facts'].accuracy:6.1%}", flush=True)  # fmt: skip
        copies = copies_in_turns(model, tok, rows)
        print("  teacher-forced copies at distance 0:",
              {k: round(v, 2) for k, v in copies.items()}, "| e.g.",
              json.dumps(reports["long"].records[0]["answer"]), "expected",
              reports["long"].records[0]["expected"])  # fmt: skip


if __name__ == "__main__":
    main()
