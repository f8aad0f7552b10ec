"""precision "auto": bf16 where it is fast, fp32 on a CPU without bf16 kernels, fp16 on a GPU without bf16."""

import pytest
import torch

from minigemini import precision
from minigemini.train.config import TrainConfig


@pytest.fixture
def cpu_only(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)


@pytest.mark.parametrize(("fast", "expected"), [(True, "bf16"), (False, "fp32")])
def test_auto_on_a_cpu_follows_its_bf16_kernels(cpu_only, monkeypatch, fast, expected):
    monkeypatch.setattr(precision, "cpu_has_fast_bf16", lambda: fast)
    assert precision.resolve_precision("auto") == expected
    assert precision.resolve_precision("fp32") == "fp32"


def test_explicit_bf16_is_kept_on_a_slow_cpu_with_a_warning(cpu_only, monkeypatch):
    monkeypatch.setattr(precision, "cpu_has_fast_bf16", lambda: False)
    with pytest.warns(UserWarning, match="without bf16 kernels"):
        assert precision.resolve_precision("bf16") == "bf16"


@pytest.mark.parametrize(("bf16_supported", "expected"), [(True, "bf16"), (False, "fp16")])
def test_auto_on_a_gpu(monkeypatch, bf16_supported, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: bf16_supported)
    monkeypatch.setattr(precision, "cpu_has_fast_bf16", lambda: False)  # the CPU does not matter there
    assert precision.resolve_precision("auto") == expected


def test_unknown_precision_is_refused_by_name():
    with pytest.raises(ValueError, match="precision must be one of .*'bf8'"):
        precision.resolve_precision("bf8")
    with pytest.raises(ValueError, match="precision must be one of"):
        settings = {"stage": 1, "model": "m", "output": "o", "data": ["d"], "precision": "x"}
        TrainConfig.from_sources(None, settings).validate()


@pytest.mark.parametrize(("fast", "expected"), [(True, torch.bfloat16), (False, torch.float32)])
def test_the_default_model_answers_in_bf16_only_where_the_cpu_has_its_kernels(monkeypatch, fast, expected):
    monkeypatch.setattr(precision, "cpu_has_fast_bf16", lambda: fast)
    assert precision.cpu_inference_dtype() == expected


def test_training_defaults_to_auto():
    assert TrainConfig.from_sources(None, {"stage": 2}).precision == "auto"
    assert isinstance(precision.cpu_has_fast_bf16(), bool)


@pytest.mark.parametrize(("setting", "fast", "autocast"), [("auto", True, True), ("auto", False, False),
                                                           ("fp32", True, False), ("bf16", True, True)])  # fmt: skip
def test_tower_steps_autocast_in_bf16_only_when_it_resolves_to_bf16(cpu_only, monkeypatch, setting, fast, autocast):
    monkeypatch.setattr(precision, "cpu_has_fast_bf16", lambda: fast)
    with precision.tower_autocast(setting, precision.tower_device()):
        assert torch.is_autocast_enabled("cpu") is autocast


def test_tower_steps_train_on_a_cuda_gpu_when_there_is_one(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert precision.tower_device() == torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)  # MPS: the towers stay on the CPU
    assert precision.tower_device() == torch.device("cpu")


def test_tower_steps_refuse_fp16_by_name():
    precision.check_tower_precision("auto")
    with pytest.raises(ValueError, match="precision must be auto, bf16 or fp32, got 'fp16'"):
        precision.check_tower_precision("fp16")
