"""Tests of spongebob.checkpoint: the original's release format and the course's, weights_only
reading, and errors that name the file and every missing, unexpected or mis-shaped key."""

import pytest
import torch

from spongebob.checkpoint import (
    CheckpointError,
    finished_run,
    load_checkpoint,
    load_model,
    load_state_dict_checked,
    read_checkpoint,
)
from spongebob.config import ModelConfig
from spongebob.model import SpongeBob, init_weights

SMALL = ModelConfig(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=300, max_seq_len=64)


@pytest.fixture(scope="module")
def seed_model():
    torch.manual_seed(0)
    return SpongeBob(ModelConfig())


@pytest.fixture(scope="module")
def small():
    torch.manual_seed(0)
    m = SpongeBob(SMALL).eval()
    init_weights(m, std=0.1)
    return m


def test_release_format_loads_strictly_into_a_fresh_model(seed_model, tmp_path):
    path = tmp_path / "pretrain.pth"
    torch.save(seed_model.state_dict(), path)  # how the original released its checkpoints
    torch.manual_seed(1)
    fresh = SpongeBob(ModelConfig())
    fresh.load_state_dict(torch.load(path, weights_only=True), strict=True)
    torch.manual_seed(2)
    fresh2 = SpongeBob(ModelConfig())
    assert load_checkpoint(fresh2, path) == {}
    for k, v in seed_model.state_dict().items():
        assert torch.equal(fresh.state_dict()[k], v) and torch.equal(fresh2.state_dict()[k], v)
    assert fresh2.output.weight is fresh2.tok_embeddings.weight  # still tied after loading


def test_course_format_carries_config_and_extras(small, tmp_path):
    path = tmp_path / "ckpt.pth"
    torch.save({"model": small.state_dict(), "config": SMALL.to_dict(), "step": 7}, path)
    m = load_model(path)
    assert m.config == SMALL
    assert torch.equal(m.layers[1].attention.wv.weight, small.layers[1].attention.wv.weight)
    other = SpongeBob(SMALL)
    extras = load_checkpoint(other, path)
    assert extras["step"] == 7 and extras["config"] == SMALL.to_dict()
    state, extras = read_checkpoint(path)
    assert set(state) == set(small.state_dict()) and "model" not in extras


def test_bare_state_dict_needs_a_config_to_build_a_model(small, tmp_path):
    path = tmp_path / "bare.pth"
    torch.save(small.state_dict(), path)
    with pytest.raises(CheckpointError, match="pass config="):
        load_model(path)
    assert load_model(path, config=SMALL).config == SMALL


def test_compile_and_ddp_prefixes_are_removed(small):
    for prefix in ("_orig_mod.", "module."):
        sd = {prefix + k: v for k, v in small.state_dict().items()}
        m = SpongeBob(SMALL)
        load_state_dict_checked(m, sd)
        assert torch.equal(m.norm.weight, small.norm.weight)


def test_load_errors_name_missing_unexpected_and_misshaped_keys(small, tmp_path):
    torch.manual_seed(0)
    other = SpongeBob(ModelConfig(dim=64, n_layers=3, n_heads=4, n_kv_heads=4, vocab_size=300))
    path = tmp_path / "wrong.pth"
    torch.save(other.state_dict(), path)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(small, path)
    msg = str(err.value)
    assert str(path) in msg
    assert "unexpected keys (9)" in msg and "layers.2.attention.wq.weight" in msg
    assert "layers.0.attention.wk.weight (64, 64) in the file vs (32, 64) in the model" in msg
    sd = dict(small.state_dict())
    del sd["layers.1.ffn_norm.weight"]
    sd["extra.weight"] = torch.zeros(3)
    with pytest.raises(CheckpointError) as err:
        load_state_dict_checked(SpongeBob(SMALL), sd, source="mine.pth")
    msg = str(err.value)
    assert "mine.pth" in msg
    assert "missing keys (1): layers.1.ffn_norm.weight" in msg
    assert "unexpected keys (1): extra.weight" in msg


def test_a_failed_load_leaves_the_model_untouched(small):
    m = SpongeBob(SMALL)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    sd = dict(small.state_dict())
    sd["layers.0.attention.wq.weight"] = torch.zeros(3, 3)
    with pytest.raises(CheckpointError):
        load_state_dict_checked(m, sd)
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())


def test_untied_output_head_is_refused(small):
    sd = {k: v.clone() for k, v in small.state_dict().items()}
    sd["output.weight"] += 1.0
    with pytest.raises(CheckpointError, match="ties them"):
        load_state_dict_checked(SpongeBob(SMALL), sd)


class _Payload:
    def __reduce__(self):
        return (print, ("PAYLOAD EXECUTED",))


def test_weights_only_refuses_arbitrary_objects(small, tmp_path, capsys):
    path = tmp_path / "evil.pth"
    torch.save({"model": small.state_dict(), "note": _Payload()}, path)
    with pytest.raises(CheckpointError, match="refused") as err:
        load_checkpoint(SpongeBob(SMALL), path)
    assert str(path) in str(err.value)
    assert "PAYLOAD EXECUTED" not in capsys.readouterr().out


def test_unreadable_and_odd_files_give_clear_errors(tmp_path):
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"this is not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        read_checkpoint(junk)
    with pytest.raises(FileNotFoundError):
        read_checkpoint(tmp_path / "absent.pth")
    listy = tmp_path / "list.pth"
    torch.save([torch.zeros(2)], listy)
    with pytest.raises(CheckpointError, match="neither a state dict"):
        read_checkpoint(listy)
    nested = tmp_path / "nested.pth"
    torch.save({"state": {"a": torch.zeros(1)}, "step": 3}, nested)
    with pytest.raises(CheckpointError, match="'model' entry"):
        read_checkpoint(nested)


def test_errors_say_what_to_do(small, tmp_path):
    with pytest.raises(FileNotFoundError, match="absent.pth: no such checkpoint file"):
        load_model(tmp_path / "absent.pth")
    odd = tmp_path / "odd.pth"
    torch.save({"weights": small.state_dict(), "step": 1}, odd)
    with pytest.raises(CheckpointError, match="pass key= to name the entry"):
        read_checkpoint(odd)
    state, extras = read_checkpoint(odd, key="weights")
    assert set(state) == set(small.state_dict()) and extras == {"step": 1}
    bad = tmp_path / "bad_config.pth"
    torch.save({"model": small.state_dict(), "config": {**SMALL.to_dict(), "n_kv_heads": 3}}, bad)
    with pytest.raises(CheckpointError, match="bad_config.pth: its 'config' entry") as err:
        load_model(bad)
    assert "n_kv_heads=3" in str(err.value)


def test_the_model_module_no_longer_holds_the_loaders():
    import spongebob.model

    assert not hasattr(spongebob.model, "load_checkpoint")
    assert not hasattr(spongebob.model, "CheckpointError")


def test_finished_run_compares_entries_and_recipe_with_defaults(tmp_path):
    from spongebob.checkpoint import save_checkpoint

    path = tmp_path / "last.pt"
    assert not finished_run(path, {"step": 3})  # missing
    path.write_bytes(b"not a checkpoint")
    assert not finished_run(path, {"step": 3})  # unreadable: not a finished run, no crash
    model = SpongeBob(SMALL)
    save_checkpoint(path, {"model": model.state_dict(), "config": SMALL.to_dict(), "step": 3,
                           "stage": "sft", "recipe": {"replay": 0.5}})  # fmt: skip
    assert finished_run(path, {"step": 3, "stage": "sft"})
    assert not finished_run(path, {"step": 4, "stage": "sft"})
    assert not finished_run(path, {"tokenizer": "abc"})  # an entry the file lacks differs
    assert finished_run(path, {"step": 3}, {"replay": 0.5})
    assert not finished_run(path, {"step": 3}, {"replay": 0.0})
    # an option newer than the file counts as its default
    assert finished_run(path, {"step": 3}, {"replay": 0.5, "tag_weight": 1.0}, {"tag_weight": 1.0})
    assert not finished_run(path, {"step": 3}, {"tag_weight": 10.0}, {"tag_weight": 1.0})
