"""Device choice (``gfn.device``) and the thread-count context manager."""

import pytest
import torch

from aloop.config import ConfigError, load_config
from aloop.hardware import resolve_device, torch_threads

NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error of a machine without CUDA")


def test_auto_device_is_cuda_exactly_when_available():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device("cpu").type == "cpu"


@pytest.mark.parametrize("name", ["tpu", "gpu", "cuda:x", "CPU", ""])
def test_an_unknown_device_name_lists_the_valid_ones(name):
    with pytest.raises(ValueError, match=r"is not one of \['auto', 'cpu', 'cuda', 'cuda:N'\]"):
        resolve_device(name)


@NO_CUDA
@pytest.mark.parametrize("name", ["cuda", "cuda:0", "cuda:1"])
def test_cuda_without_cuda_is_a_clear_error(name):
    with pytest.raises(ValueError, match=f"device '{name}' asked for, but CUDA is not available on this machine"):
        resolve_device(name)


@NO_CUDA
def test_the_config_rejects_cuda_at_load_time_naming_the_key():
    with pytest.raises(ConfigError) as caught:
        load_config(None, ["gfn.device=cuda"])
    message = str(caught.value)
    assert "gfn.device='cuda'" in message and "CUDA is not available" in message
    assert "use 'auto' (CUDA when present, else CPU) or 'cpu'" in message


@pytest.mark.parametrize("name", ["auto", "cpu"])
def test_the_config_accepts_auto_and_cpu_anywhere(name):
    assert load_config(None, [f"gfn.device={name}"]).gfn.device == name


def test_the_config_rejects_an_unknown_device():
    with pytest.raises(ConfigError, match=r"gfn.device='tpu': .*is not one of"):
        load_config(None, ["gfn.device=tpu"])


def test_thread_setting_applies_inside_and_is_restored():
    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with torch_threads(0):
        assert torch.get_num_threads() == before
