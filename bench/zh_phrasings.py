"""More Chinese phrasings in pretraining (issue 15, point 4: Chinese is the weaker half of the
held-out facts): chapter 06's pretraining and chapter 07's SFT on a pretraining text whose Chinese
part states each fact as often and in as many phrasings as the English part, measured before
the world generator is changed.

The world states an English fact in 5 templates, 14 shuffled biographies per resident and 1,000
stories; a Chinese fact in 3 templates, 6 biographies and 500 stories. This script regenerates
``pretrain.jsonl`` with ``spongebob.world.corpus.pretrain_texts`` after raising the Chinese side
to 5 templates (two more per attribute, below), 14 biographies and 1,000 stories; everything else
(the SFT chats, the eval files, the course tokenizer, every recipe) is the world's own. Prints
completion (chapter 06's measure) and held-out facts after SFT, English and Chinese apart, for
the world's text and for the augmented one.

    .venv/bin/python bench/zh_phrasings.py              # about 7 minutes on 2 cores

Not a test: writes only under ``--work`` (default: the artifact folder's ``bench/zh``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from sft_recipes import CHAPTER_PRETRAIN  # bench/ is on sys.path when this script runs

from spongebob.checkpoint import load_model
from spongebob.evaluate import evaluate_sets
from spongebob.files import write_jsonl
from spongebob.pipeline import completion_accuracy
from spongebob.pretrain import pretrained_checkpoint
from spongebob.runtime import artifacts_dir
from spongebob.sft import sft_checkpoint, sft_config, sft_options
from spongebob.world import corpus, course_tokenizer, sample_dir

# two more Chinese statements per attribute; none uses a word of the held-out rephrasings
# (REPHRASE_ZH), and none ends a completion prompt (the first template of each stays first)
MORE_ZH = {
    "home": ["{n}住的地方是{v}。", "说起{n}的家，那就是{v}。"],
    "job": ["{n}做的是{v}的工作。", "说起工作，{n}是一名{v}。"],
    "food": ["说到吃的，{n}最喜欢{v}。", "{n}觉得{v}是世上最好吃的东西。"],
    "friend": ["{n}和{v}是最好的朋友。", "在所有朋友里，{n}和{v}最亲近。"],
    "pet": ["{n}家里养着{v}。", "{n}有一只宠物，是{v}。"],
    "hobby": ["{n}最大的爱好是{v}。", "一有空，{n}就去{v}。"],
    "colour": ["说到颜色，{n}最喜欢{v}。", "{n}觉得{v}是最好看的颜色。"],
}


def augmented_text(out: Path) -> Path:
    world = json.loads((sample_dir(0) / "world.json").read_text("utf-8"))
    saved = (
        corpus.N_BIOS_ZH,
        corpus.N_STORIES_ZH,
        {a: list(t) for a, t in corpus.STATEMENTS_ZH.items()},
    )
    try:
        corpus.N_BIOS_ZH, corpus.N_STORIES_ZH = corpus.N_BIOS_EN, corpus.N_STORIES_EN
        for attribute, templates in MORE_ZH.items():
            corpus.STATEMENTS_ZH[attribute].extend(templates)
        write_jsonl(out, [{"text": t} for t in corpus.pretrain_texts(world, 0)])
    finally:
        corpus.N_BIOS_ZH, corpus.N_STORIES_ZH = saved[0], saved[1]
        for attribute, templates in saved[2].items():
            corpus.STATEMENTS_ZH[attribute][:] = templates
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=None)
    args = ap.parse_args()
    work = args.work or artifacts_dir("bench", "zh")
    world, tok = sample_dir(0), course_tokenizer()
    sources = {"world": world / "pretrain.jsonl",
               "zh x2": augmented_text(work / "pretrain-zh.jsonl")}  # fmt: skip
    for name, text in sources.items():
        print(f"{name}: {text.stat().st_size:,} bytes of pretraining text", flush=True)
    for name, text in sources.items():
        folder = artifacts_dir("runs", "pretrain-tiny") if name == "world" else work / "pretrain"
        t0 = time.perf_counter()
        pre = pretrained_checkpoint(text, tok, folder, CHAPTER_PRETRAIN,
                                    progress=False)  # fmt: skip
        minutes = (time.perf_counter() - t0) / 60
        done = completion_accuracy(load_model(pre).eval(), tok, world / "eval_completion.jsonl")
        by_lang = {}
        for r in done["records"]:
            by_lang.setdefault(r["id"].rsplit(".", 1)[-1], []).append(r["correct"])
        sft_dir = artifacts_dir("runs", "sft-tiny") if name == "world" else work / "sft"
        sft = sft_checkpoint(world / "sft_512.jsonl", tok, sft_dir, sft_config("tiny"), init=pre,
                             replay_source=text, **sft_options("tiny"), progress=False)  # fmt: skip
        facts = evaluate_sets(load_model(sft).eval(), tok, world, ["facts"])["facts"]
        lang = facts.by(2)
        print(json.dumps({"text": name, "pretrain_minutes": round(minutes, 1),
                          "completion": round(done["accuracy"], 3),
                          **{f"completion_{k}": round(sum(v) / len(v), 3) for k, v in by_lang.items()},
                          "facts": round(facts.accuracy, 3), "facts_en": round(lang["en"], 3),
                          "facts_zh": round(lang["zh"], 3)}), flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
