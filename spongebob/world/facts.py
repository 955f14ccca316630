# Hand-written module (not generated from a notebook).
"""The fact table (residents, splits, facts) and how one fact is stated.

:func:`build_world` draws the generated residents, the train / heldout / single split and every
fact from the seed; :func:`state_fact` renders one statement template for a fact, and
:func:`completion_prompt` cuts the first template before its value (the completion prompts of
``eval_completion.jsonl``).
"""

from __future__ import annotations

from spongebob.world.content import (
    ATTRIBUTE_NAMES,
    ATTRIBUTES,
    CANONICAL,
    CANONICAL_ONLY,
    FIRST_NAMES,
    GENERATOR_VERSION,
    LAST_NAMES,
    N_GENERATED,
    N_SINGLE,
    SINGLE_BIO,
    STATEMENTS_EN,
    STATEMENTS_ZH,
    VALUES,
    _rng,
)


def _value_entry(attr: str, en: str) -> tuple[str, str, str]:
    for entry in VALUES[attr]:
        if entry[0] == en:
            return entry
    raise KeyError(f"{en!r} is not a {attr} value")


def build_world(seed: int = 0) -> dict:
    """The fact table as a JSON-ready dict: residents (with split), facts, value lists.

    Deterministic from ``seed``. The show's residents keep their canonical facts; generated residents
    get random names and values; the split (train / heldout / single) is random per seed.
    """
    rng = _rng(seed, "world")
    residents: list[dict] = []
    for rid, name, full, zh, _ in CANONICAL:
        residents.append({"id": rid, "name": name, "full_name": full, "zh": zh, "canonical": True})
    pairs = [(f, l) for f in FIRST_NAMES for l in LAST_NAMES]
    rng.shuffle(pairs)
    used_first: set[str] = set()
    generated = []
    for (fen, fzh), (len_, lzh) in pairs:  # at most two residents share a first name
        if len(generated) == N_GENERATED:
            break
        if fen in used_first and rng.random() < 0.8:
            continue
        used_first.add(fen)
        name = f"{fen} {len_}"
        generated.append({"id": name.lower().replace(" ", "_"), "name": name, "full_name": name,
                          "zh": f"{fzh}·{lzh}", "canonical": False})  # fmt: skip
    residents += generated
    by_id = {r["id"]: r for r in residents}

    # Splits: N_SINGLE generated residents are "single"; the rest half train, half held out.
    singles = {r["id"] for r in rng.sample(generated, N_SINGLE)}
    others = [r["id"] for r in residents if r["id"] not in singles]
    rng.shuffle(others)
    train = set(others[: (len(others) + 1) // 2])
    for r in residents:
        r["split"] = "single" if r["id"] in singles else "train" if r["id"] in train else "heldout"

    facts: list[dict] = []

    def add_fact(subject: str, attr: str, en: str, zh: str, article: str) -> None:
        facts.append({"id": f"{subject}.{attr}", "subject": subject, "attribute": attr, "en": en,
                      "zh": zh, "article": article, "split": by_id[subject]["split"]})  # fmt: skip

    for rid, _, _, _, canon in CANONICAL:
        for attr in ATTRIBUTES:
            if attr not in canon:
                continue
            if attr == "friend":
                friend = by_id[canon[attr]]
                add_fact(rid, attr, friend["name"], friend["zh"], "")
            else:
                add_fact(rid, attr, *_value_entry(attr, canon[attr]))
    for r in generated:
        for attr in ATTRIBUTES:
            if attr == "friend":
                # never a "single" resident: their names appear only in their fixed biography
                friend = rng.choice(
                    [x for x in residents if x["id"] != r["id"] and x["split"] != "single"]
                )
                add_fact(r["id"], attr, friend["name"], friend["zh"], "")
            else:
                choices = [v for v in VALUES[attr] if (attr, v[0]) not in CANONICAL_ONLY]
                add_fact(r["id"], attr, *rng.choice(choices))
    world = {
        "generator_version": GENERATOR_VERSION,
        "seed": seed,
        "attributes": {
            a: {"en": ATTRIBUTE_NAMES[a][0], "zh": ATTRIBUTE_NAMES[a][1]} for a in ATTRIBUTES
        },  # fmt: skip
        "values": {
            a: [{"en": en, "zh": zh, "article": art} for en, zh, art in VALUES[a]] for a in VALUES
        },  # fmt: skip
        "residents": residents,
        "facts": facts,
    }
    for r in residents:
        if r["split"] == "single":
            r["fixed_bio"] = _single_bio(r["name"], [f for f in facts if f["subject"] == r["id"]])
    return world


def _with_article(fact: dict) -> str:
    return f"{fact['article']} {fact['en']}" if fact["article"] else fact["en"]


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def _single_bio(name: str, facts: list[dict], stop_at: str | None = None) -> str:
    """The fixed biography of a "single" resident; with ``stop_at``, only the text before that
    attribute's value (its completion prompt, article included)."""
    fields = {f["attribute"]: _with_article(f) for f in facts}
    template = SINGLE_BIO
    if stop_at is not None:
        article = next(f["article"] for f in facts if f["attribute"] == stop_at)
        template = template[: template.index("{" + stop_at + "}")] + article
    return template.format(n=name, **fields).rstrip()


def state_fact(fact: dict, name: str, template: str, lang: str = "en") -> str:
    """Render one statement template for a fact (``name`` is the subject's name in ``lang``)."""
    if lang == "zh":
        return template.format(n=name, v=fact["zh"])
    v, av = fact["en"], _with_article(fact)
    return template.format(n=name, v=v, av=av, V=_cap(v), Av=_cap(av))


def completion_prompt(fact: dict, name: str, lang: str = "en") -> tuple[str, str]:
    """(prompt, expected) from the first statement template, which ends with the value."""
    template = (STATEMENTS_ZH if lang == "zh" else STATEMENTS_EN)[fact["attribute"]][0]
    sentence = state_fact(fact, name, template, lang)
    value = fact["zh"] if lang == "zh" else fact["en"]
    end = "。" if lang == "zh" else "."
    assert sentence.endswith(value + end), sentence
    prompt = sentence[: -len(value + end)]
    return (prompt if lang == "zh" else prompt.rstrip()), value


def _facts_by_subject(world: dict) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {r["id"]: [] for r in world["residents"]}
    for f in world["facts"]:
        out[f["subject"]].append(f)
    return out


def _names(world: dict, lang: str) -> dict[str, str]:
    return {r["id"]: (r["zh"] if lang == "zh" else r["name"]) for r in world["residents"]}
