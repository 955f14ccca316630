"""Tests of spongebob.runtime (hand-written): device resolution, the notebooks' default device,
seeds and the artifact folder. Device availability is monkeypatched, so every branch runs on a
CPU-only machine."""

import pytest
import torch

from spongebob import runtime


@pytest.fixture
def machine(monkeypatch):
    """Set which accelerators the "machine" has: machine(cuda=..., mps=...)."""

    def have(cuda: bool = False, mps: bool = False) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
        monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)

    return have


@pytest.mark.parametrize(
    "cuda, mps, want",
    [(True, True, "cuda"), (True, False, "cuda"), (False, True, "mps"), (False, False, "cpu")],
)
def test_auto_prefers_cuda_then_mps_then_cpu(machine, cuda, mps, want):
    machine(cuda=cuda, mps=mps)
    assert runtime.resolve_device("auto") == torch.device(want)
    assert runtime.resolve_device(None) == torch.device(want)  # None means auto
    assert runtime.resolve_device(" AUTO ") == torch.device(want)


def test_explicit_devices_are_taken_as_asked(machine):
    machine(cuda=True, mps=True)
    assert runtime.resolve_device("cpu") == torch.device("cpu")  # never upgraded to the GPU
    assert runtime.resolve_device("cuda") == torch.device("cuda")
    assert runtime.resolve_device("cuda:1") == torch.device("cuda", 1)
    assert runtime.resolve_device("mps") == torch.device("mps")
    assert runtime.resolve_device(torch.device("cpu")) == torch.device("cpu")


@pytest.mark.parametrize(
    "name, message",
    [
        ("cuda", "device cuda: no CUDA GPU is visible"),
        ("cuda:0", "device cuda:0: no CUDA GPU is visible"),
        ("mps", "device mps: Apple MPS is not available"),
        ("tpu", "unknown device 'tpu'; choose one of auto, cpu, cuda, mps"),
        ("cuda:x", "device 'cuda:x'"),
    ],
)
def test_a_missing_or_unknown_device_is_one_line(machine, name, message):
    machine(cuda=name == "cuda:x")
    with pytest.raises(ValueError) as e:
        runtime.resolve_device(name)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_notebooks_stay_on_the_cpu_unless_asked(machine, monkeypatch):
    machine(cuda=True, mps=True)
    monkeypatch.delenv("SPONGEBOB_DEVICE", raising=False)
    assert runtime.default_device() == torch.device("cpu")  # a GPU machine: still the CPU
    monkeypatch.setenv("SPONGEBOB_DEVICE", "auto")
    assert runtime.default_device() == torch.device("cuda")
    monkeypatch.setenv("SPONGEBOB_DEVICE", "mps")
    assert runtime.default_device() == torch.device("mps")
    monkeypatch.setenv("SPONGEBOB_DEVICE", "")
    assert runtime.default_device() == torch.device("cpu")


def test_mps_and_cpu_run_in_fp32(monkeypatch):
    assert runtime.autocast_dtype(torch.device("cpu")) is None
    assert runtime.autocast_dtype(torch.device("mps")) is None
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert runtime.autocast_dtype(torch.device("cuda")) is torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert runtime.autocast_dtype(torch.device("cuda")) is None


def test_seed_everything_repeats_draws():
    runtime.seed_everything(7)
    a = torch.rand(3)
    runtime.seed_everything(7)
    assert torch.equal(a, torch.rand(3))


def test_artifacts_dir_lives_in_spongebob_home(tmp_path, monkeypatch):
    monkeypatch.setenv("SPONGEBOB_HOME", str(tmp_path / "home"))
    path = runtime.artifacts_dir("a", "b")
    assert path == tmp_path / "home" / "a" / "b" and path.is_dir()
