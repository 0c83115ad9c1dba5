"""Device choice (``gfn.device``), the thread-count context manager and the cores workers fill."""

import os

import pytest
import torch

from aloop.config import ConfigError, load_config
from aloop.hardware import available_cores, resolve_device, torch_threads, workers_for

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


def test_available_cores_are_the_affinity_else_the_cpu_count(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 2, 5}, raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    assert available_cores() == 3  # a process pinned to 3 of 64 cores (taskset, a container's cpuset)
    monkeypatch.delattr(os, "sched_getaffinity")
    assert available_cores() == 64


@pytest.mark.parametrize("cores", [1, 2, 3, 8, 16])
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_workers_fill_the_cores_without_oversubscribing_them(cores, threads):
    workers = workers_for(threads, cores=cores)
    assert workers >= 1 and (workers * threads <= cores or workers == 1)
    assert (workers + 1) * threads > cores  # one more would not fit
    assert workers_for(None, cores=cores) == 1  # a library's default threads take every core


def test_workers_count_the_available_cores_by_default(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(6)), raising=False)
    assert workers_for(1) == 6 and workers_for(2) == 3 and workers_for(4) == 1
