"""What kind of wrong answer a model gives to the held-out fact questions (issue 15, point 4):
for each checkpoint, ``eval_facts`` answered greedily, then every answer sorted by
``spongebob.evaluate.fact_error_kinds`` (chapter 07: right, a wrong value of the asked
attribute, a value of another attribute, no known value; in all and per language), and the
answers that repeat the asked resident's name (a copy from the question) or name another
resident counted. Built to test whether a working copying head (the probe on
the values' ids well under 1) changes the *kind* of error, not only the count.

    .venv/bin/python bench/fact_errors.py NAME=PATH/last.pt [NAME=PATH/last.pt ...]

Not a test: reads checkpoints, writes nothing.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from copy_recipes import value_ids  # bench/ is on sys.path when this script runs

from spongebob.checkpoint import load_model
from spongebob.evaluate import FACT_ERROR_KINDS, evaluate_sets, fact_error_kinds, grade_fact
from spongebob.pretrain import induction_probe
from spongebob.world import course_tokenizer, sample_dir


def name_counts(records: list[dict], world: dict) -> dict:
    """Answers that repeat the asked resident's name, and answers that name another resident."""
    names = {r["id"]: {r["name"], r["full_name"], r["zh"]} for r in world["residents"]}
    asked = other = 0
    for r in records:
        subject = r["id"].split(".")[0]
        asked += any(grade_fact(r["answer"], n) for n in names[subject])
        other += any(grade_fact(r["answer"], n) for rid, ns in names.items() if rid != subject
                     for n in ns)  # fmt: skip
    return {"repeats the asked name": asked, "names another resident": other}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+", help="NAME=PATH of a checkpoint")
    args = ap.parse_args()
    tok, folder = course_tokenizer(), sample_dir(0)
    world = json.loads((folder / "world.json").read_text(encoding="utf-8"))
    values = value_ids(tok)
    for item in args.models:
        name, _, path = item.partition("=")
        model = load_model(Path(path)).eval()
        report = evaluate_sets(model, tok, folder, ["facts"])["facts"]  # chapter 07's budget
        kinds = fact_error_kinds(report.records, world)
        total = {k: sum(row[k] for row in kinds.values()) for k in FACT_ERROR_KINDS}
        counts = {**total, **kinds, **name_counts(report.records, world)}
        wrong = [r for r in report.records if not r["correct"]][:4]
        examples = [[r["id"], r["expected"], r["answer"][:80]] for r in wrong]
        print(json.dumps({"model": name, "facts": round(report.accuracy, 3),
                          "probe_values": round(induction_probe(model, ids=values), 3),
                          **counts, "wrong_examples": examples}, ensure_ascii=False), flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
