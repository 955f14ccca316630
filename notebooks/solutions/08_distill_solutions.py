# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 08 · Distillation: solutions to the exercises
#
# Each solution fills a stub of [the chapter](../08_distill.ipynb) and runs the same self-check.
# The setup finds what the checks use: the chapter's checkpoints (`pretrained_checkpoint`,
# `sft_checkpoint` and `distill_checkpoint` train them first, several minutes, if they are
# missing) and the graded answers of section 4.

# %%
import re

from spongebob.checkpoint import load_model
from spongebob.distill import distill_checkpoint, distill_config, distill_options
from spongebob.evaluate import evaluate_file, evaluate_sets
from spongebob.pretrain import pretrained_checkpoint
from spongebob.runtime import artifacts_dir, seed_everything
from spongebob.sft import sft_checkpoint, sft_config, sft_options
from spongebob.train import TrainConfig
from spongebob.world import course_tokenizer, sample_dir

seed_everything(1337)
world = sample_dir(0)
tok = course_tokenizer()

# %%
# NBVAL_IGNORE_OUTPUT
pretrained = pretrained_checkpoint(world / "pretrain.jsonl", tok,
                                   artifacts_dir("runs", "pretrain-tiny"),
                                   TrainConfig.preset("tiny", eval_every=150),
                                   progress=False)  # fmt: skip
sft_ckpt = sft_checkpoint(world / "sft_512.jsonl", tok, artifacts_dir("runs", "sft-tiny"),
                          sft_config("tiny"), init=pretrained,
                          replay_source=world / "pretrain.jsonl", **sft_options("tiny"),
                          progress=False)  # fmt: skip
distilled = distill_checkpoint(world / "r1_1024.jsonl", tok, artifacts_dir("runs", "distill-tiny"),
                               distill_config("tiny"), init=sft_ckpt,
                               replay_source=world / "pretrain.jsonl",
                               mix_source=world / "sft_512.jsonl", **distill_options("tiny"),
                               progress=False)  # fmt: skip
reasoner = load_model(distilled).eval()
after = evaluate_sets(reasoner, tok, world, ["arith"])
print(f"distilled model: {after['arith'].accuracy:.0%} of the unseen problems right")

# %% [markdown]
# **1. Why mix SFT chats into distillation?** Two short runs from the SFT model that differ only
# in the mixed chats (the replay of the recipe stays), then the fact questions, greedily.


# %%
def think_share(mix_chats: int) -> float:
    ckpt = distill_checkpoint(world / "r1_1024.jsonl", tok,
                              artifacts_dir("runs", f"lab-mix-{mix_chats}"),
                              distill_config("tiny", max_steps=100), init=sft_ckpt,
                              replay_source=world / "pretrain.jsonl",
                              mix_source=world / "sft_512.jsonl",
                              **distill_options("tiny", mix_chats=mix_chats),
                              progress=False)  # fmt: skip
    report = evaluate_file(load_model(ckpt), tok, world / "eval_facts.jsonl", "fact", limit=40)
    return sum("<think>" in r["answer"] for r in report.records) / len(report.records)


# %%
# NBVAL_IGNORE_OUTPUT
try:
    lab = {n: think_share(n) for n in (0, 600)}
except NotImplementedError:
    print("Exercise 1: not attempted yet")
except NameError as err:  # a name from the chapter is missing: run it first
    print(f"Exercise 1: run the chapter's cells above first ({err})")
else:
    assert all(0.0 <= v <= 1.0 for v in lab.values()), f"Exercise 1: shares are fractions: {lab}"
    for n, share in lab.items():
        print(f"{n:3d} SFT chats mixed in: {share:.0%} of fact questions answered with <think>")
    print("Exercise 1: measured; compare with your prediction (the solutions discuss one run)")
    # the outcome this solution records: without plain chats the format takes over every reply
    assert lab[0] > 0.5 > lab[600]

# %% [markdown]
# What one run of this lab measured (the printed lines): after only 100 steps on reasoning chats
# alone, the student answers fact questions with a `<think>` block too, nearly always: the format
# is learnt fast and takes over every reply. With 600 SFT chats shuffled in, it keeps answering
# plain questions plainly. The mix keeps the *format* of plain answers; chapter 08's section 6
# shows what keeps the *facts*: the replayed pretraining text.

# %% [markdown]
# **2. Check the steps, not just the answer.** One regular expression finds the equations; the
# operator picks the function.


# %%
def wrong_steps(text: str) -> list[str]:
    ops = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b}
    wrong = []
    for a, op, b, c in re.findall(r"(\d+) ([-+*]) (\d+) = (\d+)", text):
        if ops[op](int(a), int(b)) != int(c):
            wrong.append(f"{a} {op} {b} = {c}")
    return wrong


# %%
# NBVAL_IGNORE_OUTPUT
try:
    got = wrong_steps("<think>\n3 + 4 = 7\n7 * 2 = 15\n15 - 5 = 10\n9 - 10 = 1\n</think>")
except NotImplementedError:
    print("Exercise 2: not attempted yet")
except NameError as err:  # a name from the chapter is missing: run it first
    print(f"Exercise 2: run the chapter's cells above first ({err})")
else:
    assert got == ["7 * 2 = 15", "9 - 10 = 1"], (
        f"Exercise 2: got {got}. Hint: re.findall(r'(\\d+) ([-+*]) (\\d+) = (\\d+)', text) "
        "gives the four parts of each equation; compute a op b and compare it with c"
    )
    wrong = [r for r in after["arith"].records if not r["correct"]]
    with_step = sum(bool(wrong_steps(r["answer"])) for r in wrong)
    print(f"{with_step} of the {len(wrong)} wrong answers have a wrong step")
    print("Exercise 2: correct")

# %% [markdown]
# **3. Greedy or sampled?** `evaluate_file` passes sampling arguments on to `generate`. Sampling
# can pick the second-best number of a step, and one wrong step spoils the answer, so one expects
# sampled answers to be right less often. Measured here on 60 problems (printed below): about
# the same share, within the noise of 60 problems. After a full distillation run on these
# templated traces the distilled model is so confident that top-p 0.85 keeps little more than
# the greedy token; the difference shows on harder data.


# %%
def sampled_accuracy(model, n: int, temperature: float, seed: int = 0) -> float:
    return evaluate_file(model, tok, world / "eval_arith.jsonl", "number", limit=n,
                         max_new_tokens=96, temperature=temperature, top_p=0.85,
                         seed=seed).accuracy  # fmt: skip


# %%
# NBVAL_IGNORE_OUTPUT
try:
    greedy = sampled_accuracy(reasoner, 60, 0.0)
except NotImplementedError:
    print("Exercise 3: not attempted yet")
except NameError as err:  # a name from the chapter is missing: run it first
    print(f"Exercise 3: run the chapter's cells above first ({err})")
else:
    want = evaluate_file(reasoner, tok, world / "eval_arith.jsonl", "number", limit=60,
                         max_new_tokens=96).accuracy  # fmt: skip
    assert abs(greedy - want) < 1e-9, (
        f"Exercise 3: temperature 0 gave {greedy:.3f}, greedy evaluate_file {want:.3f}. Hint: "
        "evaluate_file(model, tok, path, 'number', limit=n, temperature=..., top_p=0.85, seed=...)"
    )
    hot = sampled_accuracy(reasoner, 60, 0.85, seed=0)
    assert 0.0 <= hot <= 1.0, f"Exercise 3: an accuracy is a fraction, got {hot}"
    print(f"greedy {greedy:.0%}, sampled at 0.85 {hot:.0%}")
    print("Exercise 3: correct")
