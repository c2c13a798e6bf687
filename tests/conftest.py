import pytest
import torch


def pytest_addoption(parser):
    parser.addoption("--run-slow", action="store_true",
                     help="also run the tests marked slow (fuzzing, the gpu_check dry run)")


def pytest_configure(config):
    config.addinivalue_line("markers", "cuda: needs a CUDA device; skipped (with the reason) without one")
    config.addinivalue_line("markers", "slow: long sweeps; skipped unless --run-slow (CI runs them)")


def pytest_collection_modifyitems(config, items):
    if not config.getoption("--run-slow"):
        skip_slow = pytest.mark.skip(reason="slow: run with --run-slow (CI does)")
        for item in items:
            if item.get_closest_marker("slow"):
                item.add_marker(skip_slow)
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device: torch.cuda.is_available() is False")
    for item in items:
        if item.get_closest_marker("cuda"):
            item.add_marker(skip)
