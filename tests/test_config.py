"""Tests of spongebob.config: the original's defaults, the hidden_dim rule, validation, presets."""

import dataclasses
import inspect
import json
import math

import pytest
import torch

from spongebob.config import PRESETS, ModelConfig, config_problems
from spongebob.world import course_tokenizer


def test_defaults_are_the_originals():
    c = ModelConfig()
    assert (c.dim, c.n_layers, c.n_heads, c.n_kv_heads, c.vocab_size) == (512, 8, 8, 8, 6400)
    assert c.hidden_dim is None and c.multiple_of == 64
    assert (c.norm_eps, c.max_seq_len, c.rope_theta, c.dropout) == (1e-5, 1024, 1e6, 0.0)
    assert c.head_dim == 64
    assert c.ffn_hidden_dim == 1408


@pytest.mark.parametrize("dim", [64, 128, 192, 256, 288, 384, 512, 640, 768, 1024])
@pytest.mark.parametrize("multiple_of", [32, 64, 256])
def test_ffn_hidden_dim_follows_the_rounding_rule(dim, multiple_of):
    c = ModelConfig(dim=dim, n_heads=4, n_kv_heads=2, multiple_of=multiple_of)
    expected = multiple_of * math.ceil((2 * 4 * dim / 3) / multiple_of)  # the formula as written
    assert c.ffn_hidden_dim == expected
    assert c.ffn_hidden_dim % multiple_of == 0 and c.ffn_hidden_dim >= 8 * dim / 3


@pytest.mark.parametrize("dim", [512, 768, 640])
def test_ffn_hidden_dim_equals_the_originals_truncate_then_round_up(dim):
    # The original: hidden = int(2 * 4 * dim / 3), then rounded up to a multiple of multiple_of.
    # With multiple_of a multiple of 8 (64 here) the exact ceil gives the same width.
    hidden = int(2 * 4 * dim / 3)
    original = 64 * ((hidden + 64 - 1) // 64)
    assert ModelConfig(dim=dim, multiple_of=64).ffn_hidden_dim == original


def test_explicit_hidden_dim_wins():
    assert ModelConfig(hidden_dim=1000).ffn_hidden_dim == 1000


@pytest.mark.parametrize(
    "kwargs, words",
    [
        (dict(dim=500), ["dim=500", "n_heads=8"]),
        (dict(n_kv_heads=3), ["n_heads=8", "n_kv_heads=3"]),
        (dict(dim=24, n_heads=8, n_kv_heads=8), ["head_dim", "even"]),
        (dict(n_layers=0), ["n_layers", "positive"]),
        (dict(vocab_size=-5), ["vocab_size"]),
        (dict(dim=True), ["dim"]),
        (dict(max_seq_len=1.5), ["max_seq_len"]),
        (dict(dropout=1.0), ["dropout"]),
        (dict(norm_eps=0.0), ["norm_eps"]),
        (dict(rope_theta=-1.0), ["rope_theta"]),
        (dict(hidden_dim=0), ["hidden_dim"]),
    ],
)
def test_invalid_configs_raise_naming_the_fields(kwargs, words):
    with pytest.raises(ValueError) as err:
        ModelConfig(**kwargs)
    for w in words:
        assert w in str(err.value)


def test_every_problem_is_reported_at_once():
    assert config_problems(ModelConfig()) == []
    with pytest.raises(ValueError) as err:
        ModelConfig(dim=500, n_kv_heads=3, dropout=2.0)
    msg = str(err.value)
    assert "dim=500" in msg and "n_kv_heads=3" in msg and "dropout" in msg


def test_presets():
    assert set(PRESETS) >= {"tiny", "seed", "seed-gqa"}
    assert ModelConfig.preset("seed") == ModelConfig()
    assert ModelConfig.preset("seed-gqa") == ModelConfig(n_kv_heads=2)
    tiny = ModelConfig.preset("tiny")
    assert (tiny.dim, tiny.n_layers, tiny.n_heads, tiny.n_kv_heads) == (128, 4, 4, 2)
    assert tiny.max_seq_len == 1024 and tiny.ffn_hidden_dim == 384
    # The tiny model reads the course tokenizer's ids.
    assert tiny.vocab_size == inspect.signature(course_tokenizer).parameters["vocab_size"].default
    assert ModelConfig.preset("tiny", max_seq_len=512).max_seq_len == 512
    with pytest.raises(ValueError, match="unknown preset 'huge'"):
        ModelConfig.preset("huge")
    with pytest.raises(ValueError, match="n_kv_heads"):
        ModelConfig.preset("tiny", n_kv_heads=3)


def test_presets_are_not_mutated_by_overrides():
    ModelConfig.preset("tiny", dim=256, n_heads=8)
    assert ModelConfig.preset("tiny").dim == 128


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_dict_round_trip_is_plain_data(name, tmp_path):
    c = ModelConfig.preset(name)
    d = c.to_dict()
    assert json.loads(json.dumps(d)) == d  # plain ints, floats and None
    assert ModelConfig.from_dict(d) == c
    torch.save({"config": d}, tmp_path / "c.pth")  # storable in a weights_only checkpoint
    assert ModelConfig.from_dict(torch.load(tmp_path / "c.pth", weights_only=True)["config"]) == c


def test_from_dict_rejects_unknown_and_defaults_missing():
    with pytest.raises(ValueError, match="flash_attn"):
        ModelConfig.from_dict({"dim": 512, "flash_attn": True})
    assert ModelConfig.from_dict({"n_kv_heads": 2}) == ModelConfig(n_kv_heads=2)


def test_a_config_is_frozen_and_replace_revalidates():
    c = ModelConfig.preset("tiny")
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.max_seq_len = 512
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.n_kv_heads = 3  # would otherwise bypass validation
    assert c.max_seq_len == 1024 and c.n_kv_heads == 2
    longer = dataclasses.replace(c, max_seq_len=2048)
    assert longer.max_seq_len == 2048 and longer.dim == c.dim and c.max_seq_len == 1024
    with pytest.raises(ValueError, match="n_kv_heads=3"):
        dataclasses.replace(c, n_kv_heads=3)
    assert {c: "hashable"}[ModelConfig.preset("tiny")] == "hashable"  # frozen + eq: hashable


def test_unknown_fields_and_presets_name_the_choices():
    with pytest.raises(ValueError, match="known fields"):
        ModelConfig.from_dict({"flash_attn": True})
    with pytest.raises(ValueError, match="choose one of"):
        ModelConfig.preset("huge")
