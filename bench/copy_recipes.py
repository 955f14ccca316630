"""Can the tiny model learn to copy from its context? The recipes that chapter 07 (section 8)
reports, re-measured with the induction probe of chapter 06 (``spongebob.pretrain.induction_probe``:
random id sequences repeated twice, the loss on the second copy over the first; 1.0 = no copying).

    .venv/bin/python bench/copy_recipes.py                  # every recipe, about an hour
    .venv/bin/python bench/copy_recipes.py --only spans-64x64

Not a test: it prints one line per recipe (probe by step, completion accuracy of the world's
held-out fact prompts where the recipe trains on the world) and writes only under ``--work``
(default: the artifact folder's ``bench/copy``). Recipes with ``world256`` in their name draw
their spans from the 256 most frequent ids of the world's pretraining text
(``spongebob.sft.frequent_ids``) and log a second probe on those ids (``world``). Recipes:

- ``world``: chapter 06's tiny pretraining (900 steps of 16 x 256), the baseline;
- ``world+lines-30``: the same with 30 % of the batches drawn from copy *text* (a list of
  made-up words and numbers repeated after filler sentences, or key-value notes recalled later);
- ``period-64``: copy drills whose period is always 64 (rows ``[r, r]``): the loss falls fast, but
  by attending 64 positions back, a shortcut the probe (period 60) does not reward;
- ``spans-64x64``: ``spongebob.sft.RepeatedSpans`` (periods 6 to 24, batch 64 x 64), 450 steps;
- ``spans-16x64``: the same drills in batches of 16, 1,500 steps (4x cheaper steps);
- ``spans-16x256``: periods 8 to 128 in batches of 16 x 256, 500 steps;
- ``spans-world256``: periods 6 to 24 only (64 x 64), 200 steps;
- ``spans-world256-curriculum``: chapter 07's positive control: 175 batches of those, then periods
  6 to 60 in batches of 32 x 128, 400 steps in all (``spongebob.sft.Curriculum``);
- ``spans-world256-curriculum-then-all-seen``: the control's 400 steps, then 300 steps of periods
  6 to 60 over all 1,176 ids the pretraining text uses; it also probes on the 920 of them outside
  the 256 (``probe_rare``);
- ``spans-world256-from-pretrained`` / ``-from-sft``: the same drills started from chapter 06's
  pretrained model or chapter 07's SFT model (the runs in the artifact folder; they must exist);
- ``world+spans-world256-50``: pretraining with every other batch a 64 x 64 drill batch, 900 steps;
- ``spans-world256-200-then-world+25``: 200 drill steps, then 700 steps of world text with a
  quarter of the batches drills (the cosine spans all 900 steps);
- ``copier+world``, ``copier+world-drills-10``, ``copier+world-drills-25``: chapter 06's
  pretraining (900 steps, a fresh optimizer) started from chapter 07's positive control (the run
  ``copy-control-world`` in the artifact folder, probe 0.00), with 0, 10 or 25 % of the batches
  drills of periods 6 to 60 (32 x 128);
- ``copier+world-drills-10+notes-20``: the 10 % recipe with a fifth of the batches copy text as
  in ``world+lines-30``; it also reports ``note_recall``, the share of 150 held-out notes
  ("Note: ... Question: what is X? Answer:") whose greedy answer starts with the noted value;
- ``spans-values-curriculum``: the curriculum over 436 ids, the 256 most frequent ones and the
  224 ids the world's chat details are written with (``value_ids``: locker codes, shell counts,
  birthdays, boxes, snails, places, passwords); it also probes on those 224 (``probe_values``);
- ``copier-values+world-drills-10``: chapter 06's pretraining from that run's model (run it
  first, same ``--work``) with 10 % drill batches over the same 436 ids;
- ``copier-values-reset+world-drills-10`` / ``copier-values-reset+world``: the same start with
  the embedding rows of every id outside the 436 drawn afresh (``reset_unseen_rows``) before
  pretraining, with 10 % or no drill batches. The curriculum never shows those ids, yet AdamW
  moves their rows every step (the softmax pushes every non-target logit down, and Adam turns
  that small, consistent gradient into a step of about the learning rate): after the curriculum
  the 1,596 other rows point the same way (mean pairwise cosine 0.99) and pretraining must first
  pull them apart;
- ``world+repeated-text-50``: every other batch rows of world-text spans (8 to 64 tokens, from
  anywhere in the corpus) each written twice, the loss on both copies.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import numpy as np
import torch

from spongebob.checkpoint import load_model
from spongebob.config import ModelConfig
from spongebob.data import PackedLoader, PreparedData, prepare
from spongebob.files import write_jsonl
from spongebob.generate import generate
from spongebob.model import SpongeBob
from spongebob.pipeline import completion_accuracy
from spongebob.pretrain import induction_probe
from spongebob.runtime import artifacts_dir
from spongebob.sft import Curriculum, RepeatedSpans, ReplayMix, frequent_ids
from spongebob.train import TrainConfig, train
from spongebob.world import course_tokenizer, sample_dir
from spongebob.world.content import FILLER, SYLLABLES

KEYS = ["the code of the {c} door", "{n}'s locker code", "the name of {n}'s snail",
        "{n}'s lucky number", "the name of {n}'s boat", "{n}'s secret word"]  # fmt: skip
COLOURS = ["red", "blue", "green", "yellow", "purple", "orange", "pink", "white"]


def _word(rng: random.Random) -> str:
    return "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 3))).capitalize()


def _value(rng: random.Random) -> str:
    return str(rng.randint(10, 99999)) if rng.random() < 0.5 else _word(rng)


def copy_text(rng: random.Random) -> str:
    """One line of copy text: a repeated list, or notes recalled after filler sentences."""
    gap = " ".join(rng.choice(rng.choice(FILLER)) for _ in range(rng.choice([0, 1, 2, 3, 5])))
    if rng.random() < 0.5:
        items = " ".join(_value(rng) for _ in range(rng.randint(3, 10)))
        return f"Write down: {items}. {gap} Repeat: {items}."
    keys = [rng.choice(KEYS).format(n=_word(rng), c=rng.choice(COLOURS)) for _ in range(3)]
    notes = {k: _value(rng) for k in keys}
    k = rng.choice(list(notes))
    said = " ".join(f"{key[0].upper()}{key[1:]} is {v}." for key, v in notes.items())
    return f"Note: {said} {gap} Question: what is {k}? Answer: {notes[k]}."


def note_recall(model, tok, n: int = 150) -> float:
    """Share of ``n`` held-out key-value notes (``copy_text`` with another seed) whose greedy
    continuation of "... Answer:" starts with the noted value."""
    rng, right, seen = random.Random(12345), 0, 0
    while seen < n:
        line = copy_text(rng)
        if "Answer: " not in line:
            continue
        prompt, value = line.rsplit("Answer: ", 1)
        ids = tok.encode(prompt + "Answer:")
        answer = tok.decode(generate(model, [ids], 12, temperature=0.0)[0])
        right += answer.strip().startswith(value.rstrip("."))
        seen += 1
    return right / n


def copy_lines(work: Path, tok) -> PreparedData:
    """30,000 lines of ``copy_text`` (seed 0), prepared once under ``work``."""
    lines = work / "copy_lines.jsonl"
    if not (work / "lines" / "meta.json").is_file():
        rng = random.Random(0)
        write_jsonl(lines, ({"text": copy_text(rng)} for _ in range(30000)))
        prepare(lines, tok, work / "lines")
    return PreparedData(work / "lines")


def value_ids(tok) -> torch.Tensor:
    """Every id (from 16 up) of the world's chat detail values, with and without a leading
    space: the tokens that long-context recall has to copy."""
    from spongebob.world.chats import DETAIL_VALUES

    values = [v for kind, vs in DETAIL_VALUES.items() if kind != "month" for v in vs]
    values += [str(n) for n in range(1000, 10000)] + [str(n) for n in range(11, 100)]
    values += [f"{m} {d}" for m in DETAIL_VALUES["month"] for d in range(1, 29)]
    ids = {i for v in values for text in (v, " " + v) for i in tok.encode(text) if i >= 16}
    return torch.tensor(sorted(ids))


def drill_ids(alphabet: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """The values curriculum's alphabet: the world's most frequent ids (``frequent_ids``) and the
    chat values' ids (``value_ids``), sorted, each once."""
    return torch.tensor(sorted(set(alphabet.tolist()) | set(values.tolist())))


class FixedPeriod:
    """Rows ``[r, r]`` of ``seq_len // 2`` random ids: the period is always the same."""

    def __init__(self, vocab: int, seq_len: int, batch: int, seed: int = 0) -> None:
        self.v, self.T, self.B, self.seed, self.count = vocab, seq_len, batch, seed, 0

    def __iter__(self):
        while True:
            rng = np.random.default_rng([self.seed, self.count])
            self.count += 1
            r = rng.integers(16, self.v, (self.B, (self.T + 1) // 2 + 1))
            t = torch.from_numpy(np.concatenate([r, r], 1)[:, : self.T + 1].astype(np.int64))
            yield t[:, :-1], t[:, 1:], None

    def state_dict(self) -> dict:
        return {"count": self.count}

    def load_state_dict(self, state: dict) -> None:
        self.count = int(state["count"])


class RepeatedText:
    """Rows of world-text spans (``k_min`` to ``k_max`` tokens from anywhere in ``ids``), each
    span written twice, the loss on every token; ``batch x seq_len`` like the world's batches."""

    def __init__(self, ids, seq_len: int, batch: int, k_min: int = 8, k_max: int = 64,
                 seed: int = 11) -> None:  # fmt: skip
        self.ids, self.T, self.B, self.k = (
            np.asarray(ids, dtype=np.int64),
            seq_len,
            batch,
            (k_min, k_max),
        )
        self.seed, self.count = seed, 0

    def __iter__(self):
        while True:
            rng = np.random.default_rng([self.seed, self.count])
            self.count += 1
            rows = []
            for _ in range(self.B):
                row: list[int] = []
                while len(row) < self.T + 1:
                    k = int(rng.integers(self.k[0], self.k[1] + 1))
                    s0 = int(rng.integers(0, len(self.ids) - k))
                    row += self.ids[s0 : s0 + k].tolist() * 2
                rows.append(row[: self.T + 1])
            t = torch.tensor(rows)
            yield t[:, :-1], t[:, 1:], None

    def state_dict(self) -> dict:
        return {"count": self.count}

    def load_state_dict(self, state: dict) -> None:
        self.count = int(state["count"])


# chapter 06's pretraining from the values curriculum's model: with or without its unseen rows
# drawn afresh, with N % of the batches span drills or world-text spans written twice
COPIER_VALUES = [
    "copier-values+world", "copier-values+world-drills-10", "copier200-values+world-drills-10",
    "copier-values-reset+world", "copier-values-reset+world-drills-10",
    "copier-values-reset+world-drills-5", "copier-values-reset+world+reptext-25",
    "copier-values-reset+world1200-drills-10", "copier-values-reset+world-wake-150",
]  # fmt: skip


def reset_unseen_rows(model: SpongeBob, keep, seed: int = 0, std: float = 0.02) -> None:
    """Draw the tied embedding/output rows of every id outside ``keep`` afresh from N(0, std^2),
    the model's initialisation (``spongebob.model.init_weights``)."""
    w = model.tok_embeddings.weight
    others = torch.ones(len(w), dtype=torch.bool)
    others[torch.as_tensor(keep)] = False
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        w[others] = torch.randn(int(others.sum()), w.shape[1], generator=g) * std


def run(name: str, work: Path, tok) -> dict:
    V = tok.vocab_size
    prepare(sample_dir(0) / "pretrain.jsonl", tok, work / "world")
    world = PreparedData(work / "world")
    alphabet = frequent_ids(world)
    if "values" in name or "kvtext" in name:  # the 256 most frequent ids and the chat details' ids
        values = value_ids(tok)
        wide = drill_ids(alphabet, values)
    tiny = TrainConfig.preset("tiny", eval_every=100)
    model = None

    def drills():  # chapter 07's positive control, spans over the world's 256 ids
        return RepeatedSpans(V, 64, 64, seed=5, ids=alphabet)

    if name == "world":
        cfg, loader = tiny, PackedLoader(world, 256, 16, seed=tiny.seed)
    elif name == "world+lines-30":
        cfg = tiny
        loader = ReplayMix(PackedLoader(world, 256, 16, seed=tiny.seed),
                           PackedLoader(copy_lines(work, tok), 256, 16, seed=tiny.seed + 7),
                           0.3)  # fmt: skip
    elif name == "period-64":
        cfg = TrainConfig(max_steps=300, batch_size=16, seq_len=127, eval_every=50)
        loader = FixedPeriod(V, 127, 16, seed=5)
    elif name == "spans-world256-curriculum":
        cfg = TrainConfig(max_steps=400, batch_size=64, seq_len=64, eval_every=25)
        loader = Curriculum(
            [(175, drills()), (None, RepeatedSpans(V, 128, 32, k_max=60, seed=6, ids=alphabet))]
        )
    elif name == "spans-world256-curriculum-then-all-seen":
        seen = frequent_ids(world, k=int((np.bincount(world.ids)[16:] > 0).sum()))
        cfg = TrainConfig(max_steps=700, batch_size=64, seq_len=64, eval_every=50)
        short = RepeatedSpans(V, 64, 64, seed=7, ids=alphabet)
        longer = RepeatedSpans(V, 128, 32, k_max=60, seed=8, ids=alphabet)
        wider = RepeatedSpans(V, 128, 32, k_max=60, seed=10, ids=seen)
        loader = Curriculum([(175, short), (225, longer), (None, wider)])
    elif name == "spans-values-curriculum":
        cfg = TrainConfig(max_steps=400, batch_size=64, seq_len=64, eval_every=50)
        short = RepeatedSpans(V, 64, 64, seed=7, ids=wide)
        loader = Curriculum(
            [(175, short), (None, RepeatedSpans(V, 128, 32, k_max=60, seed=8, ids=wide))]
        )
    elif name == "spans-values-curriculum-200":  # stopped once the head has formed
        cfg = TrainConfig(max_steps=200, batch_size=64, seq_len=64, eval_every=50)
        short = RepeatedSpans(V, 64, 64, seed=7, ids=wide)
        loader = Curriculum(
            [(175, short), (None, RepeatedSpans(V, 128, 32, k_max=60, seed=8, ids=wide))]
        )
    elif name in COPIER_VALUES:
        start = "spans-values-curriculum" + ("-200" if name.startswith("copier200") else "")
        ckpt = work / start / "last.pt"
        if not ckpt.is_file():
            raise SystemExit(f"{ckpt}: no such run; run --only {start} first")
        model = load_model(ckpt).train()
        if "-reset" in name:
            reset_unseen_rows(model, wide)
        cfg, loader = tiny, PackedLoader(world, 256, 16, seed=tiny.seed)
        if "world1200" in name:  # a third more steps: is the drills' price paid in steps?
            cfg = TrainConfig.preset("tiny", eval_every=100, max_steps=1200)
        if "-drills-" in name:  # the share of drill batches ends the name, in per cent
            drills = RepeatedSpans(V, 128, 32, k_max=60, seed=9, ids=wide)
            loader = ReplayMix(loader, drills, int(name.rsplit("-", 1)[1]) / 100)
        elif "+reptext-" in name:
            text = RepeatedText(world.ids, 256, 16)
            loader = ReplayMix(loader, text, int(name.rsplit("-", 1)[1]) / 100)
        elif "-wake-" in name:  # the last N steps: 40 % key-value drills in the text, weight 4
            from copy_through import KeyValueRecall

            n = int(name.rsplit("-", 1)[1])
            kv = KeyValueRecall(V, 256, 16, wide, pairs=8, seed=9, text=np.asarray(world.ids))
            late = ReplayMix(PackedLoader(world, 256, 16, seed=tiny.seed + 1), kv, 0.4,
                             replay_weight=4.0)  # fmt: skip
            loader = Curriculum([(cfg.max_steps - n, loader), (None, late)])
    elif name in ("copier-values+world-kvtext-20", "world+kvtext-20"):
        # key-value lookups written into windows of the world's text (bench/copy_through.py's
        # KeyValueRecall) from the start of pretraining, from the copier or from scratch
        from copy_through import KeyValueRecall

        if name.startswith("copier"):
            ckpt = work / "spans-values-curriculum" / "last.pt"
            if not ckpt.is_file():
                raise SystemExit(f"{ckpt}: no such run; run --only spans-values-curriculum first")
            model = load_model(ckpt).train()
        drills = KeyValueRecall(V, 256, 16, wide, pairs=8, seed=9, text=np.asarray(world.ids))
        cfg, loader = tiny, ReplayMix(PackedLoader(world, 256, 16, seed=tiny.seed), drills, 0.2)
    elif name.startswith("spans-world256") and "then" not in name:
        cfg = TrainConfig(max_steps=200, batch_size=64, seq_len=64, eval_every=25)
        loader = drills()
        start = {"spans-world256": None, "spans-world256-from-pretrained": "pretrain-tiny",
                 "spans-world256-from-sft": "sft-tiny"}[name]  # fmt: skip
        if start:
            ckpt = artifacts_dir("runs", start) / "last.pt"
            if not ckpt.is_file():
                raise SystemExit(f"{ckpt}: no such run; execute chapters 06 and 07 first")
            model = load_model(ckpt).train()
    elif name == "world+spans-world256-50":
        cfg, loader = tiny, ReplayMix(PackedLoader(world, 256, 16, seed=tiny.seed), drills(), 0.5)
    elif name == "spans-world256-200-then-world+25":
        mixed = ReplayMix(PackedLoader(world, 256, 16, seed=tiny.seed), drills(), 0.25)
        cfg, loader = tiny, Curriculum([(200, drills()), (None, mixed)])
    elif name.startswith("copier+world"):
        ckpt = artifacts_dir("runs", "copy-control-world") / "last.pt"
        if not ckpt.is_file():
            raise SystemExit(f"{ckpt}: no such run; execute chapter 07 first")
        model = load_model(ckpt).train()
        frac = {"copier+world": 0.0, "copier+world-drills-10": 0.1, "copier+world-drills-25": 0.25,
                "copier+world-drills-10+notes-20": 0.125}[name]  # fmt: skip
        cfg, loader = tiny, PackedLoader(world, 256, 16, seed=tiny.seed)
        if frac:
            long_drills = RepeatedSpans(V, 128, 32, k_max=60, seed=9, ids=alphabet)
            loader = ReplayMix(loader, long_drills, frac)
        if name.endswith("notes-20"):  # 0.8 x 0.125 = 10 % drills, 20 % notes, 70 % world
            notes = PackedLoader(copy_lines(work, tok), 256, 16, seed=tiny.seed + 7)
            loader = ReplayMix(loader, notes, 0.2)
    elif name == "world+repeated-text-50":
        text = RepeatedText(world.ids, 256, 16)
        cfg, loader = tiny, ReplayMix(PackedLoader(world, 256, 16, seed=tiny.seed), text, 0.5)
    else:
        B, T, k_min, k_max, steps = {"spans-64x64": (64, 64, 6, 24, 450),
                                     "spans-16x64": (16, 64, 6, 24, 1500),
                                     "spans-16x256": (16, 256, 8, 128, 500)}[name]  # fmt: skip
        cfg = TrainConfig(max_steps=steps, batch_size=B, seq_len=T, eval_every=50)
        loader = RepeatedSpans(V, T, B, k_min=k_min, k_max=k_max, seed=5)
    torch.manual_seed(cfg.seed)
    if model is None:
        model = SpongeBob(ModelConfig.preset("tiny", vocab_size=V))
    probes = {"induction": induction_probe}
    if "world256" in name or "copier" in name or "values" in name or "kvtext" in name:
        probes["world"] = lambda m: induction_probe(m, ids=alphabet)
    if "values" in name or "kvtext" in name:
        probes["values"] = lambda m: induction_probe(m, ids=values)
    if "kvtext" in name or "wake" in name:
        from copy_through import KeyValueRecall, kv_accuracy

        held_out = KeyValueRecall(V, 256, 16, wide, pairs=8, text=np.asarray(world.ids))
        probes["kv_text"] = lambda m: kv_accuracy(m, held_out)
    if name.endswith("all-seen"):
        probes["rare"] = lambda m: induction_probe(m, ids=seen[256:])
    t0 = time.perf_counter()
    train(model, loader, cfg, out_dir=work / name, progress=False, probes=probes)
    log = [json.loads(line) for line in open(work / name / "metrics.jsonl")]
    out = {"recipe": name, "minutes": round((time.perf_counter() - t0) / 60, 1)}
    for key in probes:
        out["probe" if key == "induction" else f"probe_{key}"] = {
            r["step"]: round(r[key], 3) for r in log if key in r
        }
    if name.startswith(("world", "copier")) or "then-world" in name:
        rows = sample_dir(0) / "eval_completion.jsonl"
        out["completion"] = round(completion_accuracy(model.eval(), tok, rows)["accuracy"], 3)
    if "notes" in name or "lines" in name:
        out["note_recall"] = round(note_recall(model.eval(), tok), 3)
    return out


RECIPES = [
    "world", "world+lines-30", "period-64", "spans-64x64", "spans-16x64", "spans-16x256",
    "spans-world256", "spans-world256-curriculum", "spans-world256-curriculum-then-all-seen",
    "spans-world256-from-pretrained",
    "spans-world256-from-sft",
    "world+spans-world256-50", "spans-world256-200-then-world+25", "world+repeated-text-50",
    "copier+world", "copier+world-drills-10", "copier+world-drills-25",
    "copier+world-drills-10+notes-20", "spans-values-curriculum", "copier-values+world-drills-10",
    "copier-values+world-kvtext-20", "world+kvtext-20", "spans-values-curriculum-200",
    *(n for n in COPIER_VALUES if n != "copier-values+world-drills-10"),
]  # fmt: skip

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="*", choices=RECIPES, default=RECIPES)
    ap.add_argument("--work", type=Path, default=None)
    args = ap.parse_args()
    work = args.work or artifacts_dir("bench", "copy")
    work.mkdir(parents=True, exist_ok=True)
    tok = course_tokenizer()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for name in args.only:
        print(json.dumps(run(name, work, tok)), flush=True)
