# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 06 · Pretraining: solutions to the exercises
#
# Each solution fills a stub of [the chapter](../06_pretrain.ipynb) and runs the same self-check.
# The setup rebuilds what the checks use: the world's token stream (`data`, for the lab of exercise
# 2) and the graded completions of section 12 (`graded`, `by_lang`), from the chapter's checkpoint
# (`pretrained_checkpoint` trains it first, as long as the chapter's run, if it is missing).

# %%
import torch

from spongebob.checkpoint import load_model
from spongebob.config import ModelConfig
from spongebob.data import PackedLoader, PreparedData, prepare, read_jsonl
from spongebob.evaluate import grade_fact
from spongebob.generate import generate
from spongebob.model import SpongeBob
from spongebob.pretrain import pretrained_checkpoint
from spongebob.runtime import artifacts_dir, seed_everything
from spongebob.train import TrainConfig, train
from spongebob.world import course_tokenizer, sample_dir

seed_everything(1337)
tok = course_tokenizer()
data_dir = artifacts_dir("runs", "pretrain-tiny", "data")
prepare(sample_dir(0) / "pretrain.jsonl", tok, data_dir)
data = PreparedData(data_dir)

# %%
# NBVAL_IGNORE_OUTPUT
ckpt = pretrained_checkpoint(
    sample_dir(0) / "pretrain.jsonl", tok, artifacts_dir("runs", "pretrain-tiny"),
    TrainConfig.preset("tiny", eval_every=150), progress=False,
)  # fmt: skip
trained = load_model(ckpt).eval()
rows = list(read_jsonl(sample_dir(0) / "eval_completion.jsonl"))
ids = [[tok.bos_id, *tok.encode(r["prompt"])] for r in rows]
out = generate(trained, ids, 12, temperature=0, eos_token_id=tok.eos_id, pad_token_id=tok.pad_id)
answers = [tok.decode(o, skip_special_tokens=True) for o in out]
graded = [(r["id"], grade_fact(a, r["expected"])) for r, a in zip(rows, answers)]
by_lang = {lang: [ok for i, ok in graded if i.endswith(lang)] for lang in ("en", "zh")}
print(f"{len(graded)} graded completions")

# %% [markdown]
# **Exercise 1.** The warmup is the same; after it, the progress $p \in [0, 1]$ moves the rate on a
# straight line from `lr` to `lr * min_ratio`.


# %%
def warmup_linear(step: int, lr: float, warmup: int, total: int, min_ratio: float = 0.1) -> float:
    if step < warmup:
        return lr * step / warmup
    p = min(1.0, (step - warmup) / max(1, total - warmup))
    return lr - (lr - lr * min_ratio) * p


# %%
try:
    got = [warmup_linear(s, 1.0, 10, 110) for s in (0, 5, 10, 60, 110, 200)]
except NotImplementedError:
    print("Exercise 1: not attempted yet")
except NameError as err:  # a name from the chapter is missing: run it first
    print(f"Exercise 1: run the chapter's cells above first ({err})")
else:
    expected = [0.0, 0.5, 1.0, 0.55, 0.1, 0.1]
    assert all(abs(a - b) < 1e-9 for a, b in zip(got, expected)), (
        f"Exercise 1: got {got} at steps 0, 5, 10, 60, 110, 200, want {expected}. Hint: "
        "lr * step / warmup while step < warmup, then interpolate from lr to lr * min_ratio"
    )
    print("Exercise 1: correct")

# %% [markdown]
# **Exercise 2.** The lab's setup as in the chapter, then `cuts_lab`: a training loader cut by
# `cuts` and a validation loader on the held-out fifth of the same 20,000 tokens, one `train` call,
# the validation losses read from `val_history`.

# %%
lab_ids = data.ids[:20_000]  # the first 20,000 tokens of the world's stream
lab_config = TrainConfig.preset(  # the tiny recipe (lr 3e-3, batch 16), shorter and validated
    "tiny", warmup_steps=10, max_steps=300, seq_len=64, eval_every=50, eval_batches=3
)


def lab_model() -> SpongeBob:
    """A fresh tiny model with 2 layers (the same seed every time)."""
    torch.manual_seed(0)
    return SpongeBob(ModelConfig.preset("tiny", vocab_size=tok.vocab_size, n_layers=2))


prediction = "fixed"  # the same windows every epoch can be memorised; held-out text suffers


def cuts_lab(cuts: str) -> list[float]:
    """The validation losses of `lab_model()` trained on ``lab_ids`` cut by ``cuts``."""
    split = dict(seed=0, val_fraction=0.2)
    loader = PackedLoader(lab_ids, 64, 16, cuts=cuts, **split)
    val = PackedLoader(lab_ids, 64, 16, split="val", shuffle=False, **split)
    result = train(lab_model(), loader, lab_config, val_loader=val, progress=False)
    return [r["val_loss"] for r in result.val_history]


# %%
# NBVAL_IGNORE_OUTPUT
try:
    lab = {cuts: cuts_lab(cuts) for cuts in ("fixed", "shifted")}
except NotImplementedError:
    print("Exercise 2: not attempted yet")
except NameError as err:  # a name from the chapter is missing: run it first
    print(f"Exercise 2: run the chapter's cells above first ({err})")
else:
    hint = (
        "Hint: PackedLoader(lab_ids, 64, 16, cuts=cuts, seed=0, val_fraction=0.2) to train, "
        "the same with split='val', shuffle=False to validate; train(..., val_loader=...)"
    )
    assert all(len(v) >= 6 for v in lab.values()), f"Exercise 2: one loss per 50 steps. {hint}"
    rise = {k: v[-1] - min(v) for k, v in lab.items()}
    for k, v in lab.items():
        print(f"{k} cuts: validation loss lowest {min(v):.2f}, last {v[-1]:.2f} (+{rise[k]:.2f})")
    higher = max(lab, key=lambda k: lab[k][-1])
    print(f"predicted: {prediction}; measured: {higher} cuts end higher")
    assert higher == "fixed" and rise["fixed"] > rise["shifted"], f"Exercise 2: {rise}. {hint}"
    print("Exercise 2: done")

# %% [markdown]
# The measured outcome (printed above; the digits move a little with the thread count, the
# direction does not): both runs reach about the same lowest validation loss, then the fixed cuts'
# loss climbs well above its minimum while the shifted cuts' stays near it. With fixed cuts the
# model sees the same windows, cut at the same places, in every pass, and the training loss keeps
# falling by memorising them; with shifted cuts every pass shows different windows of the same
# text, so memorising one cut does not pay. Section 12 shows the same at the chapter's full scale.
# The gap grows with the number of passes: try twice as many steps.

# %% [markdown]
# **Exercise 3.** Store the value in the dtype and look at it again. fp16's smallest subnormal is
# $2^{-24} \approx 6 \times 10^{-8}$, so $10^{-7}$ survives (rounded) and $10^{-8}$ does not; bf16
# reaches $2^{-133} \approx 9 \times 10^{-41}$: fp32's range, which is why bf16 needs no scaler.


# %%
def survives(value: float, dtype: torch.dtype) -> bool:
    return torch.tensor(value, dtype=torch.float64).to(dtype).item() > 0


# %%
try:
    survives(1.0, torch.float16)
except NotImplementedError:
    print("Exercise 3: not attempted yet")
except NameError as err:  # a name from the chapter is missing: run it first
    print(f"Exercise 3: run the chapter's cells above first ({err})")
else:
    hint = "Hint: torch.tensor(value, dtype=dtype) rounds on storing; compare the stored value to 0"
    assert survives(1e-3, torch.float16) and not survives(1e-9, torch.float16), (
        f"Exercise 3. {hint}"
    )
    assert survives(1e-30, torch.bfloat16) and not survives(1e-50, torch.bfloat16), (
        f"Exercise 3: bf16 has float32's exponent range. {hint}"
    )
    smallest = {d: min(10.0**-k for k in range(60) if survives(10.0**-k, d))
                for d in (torch.float16, torch.bfloat16)}  # fmt: skip
    print({str(d): f"{v:.0e}" for d, v in smallest.items()})
    assert smallest[torch.float16] == 1e-7 and smallest[torch.bfloat16] == 1e-40, (
        f"Exercise 3: {smallest}. {hint}"
    )
    print("Exercise 3: correct")

# %% [markdown]
# **Exercise 4.** Group the booleans by the chosen field of the id and average each group.


# %%
def accuracy_by(graded: list[tuple[str, bool]], part: int) -> dict[str, float]:
    groups: dict[str, list[bool]] = {}
    for id_, ok in graded:
        groups.setdefault(id_.split(".")[part], []).append(ok)
    return {k: sum(v) / len(v) for k, v in groups.items()}


# %%
# NBVAL_IGNORE_OUTPUT
try:
    by_attr = accuracy_by(graded, 1)
except NotImplementedError:
    print("Exercise 4: not attempted yet")
except NameError as err:  # a name from the chapter is missing: run it first
    print(f"Exercise 4: run the chapter's cells above first ({err})")
else:
    hint = "Hint: key = item_id.split('.')[part]; accuracy = number True / number of ids per key"
    toy = accuracy_by([("a.x.en", True), ("b.x.en", False), ("a.y.zh", True)], 1)
    assert toy == {"x": 0.5, "y": 1.0}, f"Exercise 4: {toy} for the toy ids. {hint}"
    by_lang2 = accuracy_by(graded, 2)
    assert set(by_lang2) == {"en", "zh"}, f"Exercise 4: keys {set(by_lang2)}. {hint}"
    want_en = sum(by_lang["en"]) / len(by_lang["en"])
    assert abs(by_lang2["en"] - want_en) < 1e-12, f"Exercise 4: en {by_lang2['en']}. {hint}"
    print({k: round(v, 2) for k, v in sorted(by_attr.items(), key=lambda kv: kv[1])})
    print("hardest attribute:", min(by_attr, key=by_attr.get))
    print("Exercise 4: correct")
