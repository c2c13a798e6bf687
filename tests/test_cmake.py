"""CMake logic that a build on this machine cannot reach: the nvcc / torch CUDA major check."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

CMAKE_DIR = Path(__file__).resolve().parents[1] / "cmake"


def _cmake() -> str | None:
    found = shutil.which("cmake") or shutil.which("cmake", path=str(Path(sys.executable).parent))
    if found is None:
        try:
            import cmake  # the PyPI cmake package the build uses
        except ImportError:
            return None
        found = str(Path(cmake.CMAKE_BIN_DIR) / "cmake")
    return found


def check(tmp_path, nvcc_version: str, torch_cuda: str) -> subprocess.CompletedProcess:
    cmake = _cmake()
    if cmake is None:
        pytest.skip("cmake not found (neither on PATH nor the cmake Python package)")
    script = tmp_path / "check.cmake"
    script.write_text(f'include("{(CMAKE_DIR / "cuda_version.cmake").as_posix()}")\n'
                      f'autogaze_check_cuda_major("{nvcc_version}" "{torch_cuda}")\n')
    return subprocess.run([cmake, "-P", str(script)], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("nvcc,torch_cuda", [("13.0.88", "13.0"), ("12.4.131", "12.8"),
                                             ("12.9.41", "12.1")])
def test_same_cuda_major_passes(tmp_path, nvcc, torch_cuda):
    result = check(tmp_path, nvcc, torch_cuda)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("nvcc,torch_cuda", [("12.8.93", "13.0"), ("13.0.88", "12.6")])
def test_different_cuda_major_fails_naming_both(tmp_path, nvcc, torch_cuda):
    result = check(tmp_path, nvcc, torch_cuda)
    assert result.returncode != 0
    message = " ".join(result.stderr.split())  # CMake wraps long messages
    assert f"nvcc is CUDA {nvcc}" in message and f"torch was built with CUDA {torch_cuda}" in message


def test_unreadable_version_fails(tmp_path):
    result = check(tmp_path, "", "13.0")
    assert result.returncode != 0 and "cannot read the CUDA versions" in result.stderr


def test_cuda_setup_runs_the_check():
    """cuda.cmake calls the check once nvcc is enabled, before torch's config links CUDA."""
    text = (CMAKE_DIR / "cuda.cmake").read_text()
    enable = text.index("enable_language(CUDA)")
    call = text.index('autogaze_check_cuda_major("${CMAKE_CUDA_COMPILER_VERSION}" "${AUTOGAZE_TORCH_CUDA}")')
    assert enable < call
