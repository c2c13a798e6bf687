"""The installed extension: build_info() and the ops it registers."""

import pytest
import torch

import autogaze_ext
from autogaze_ext import _C, ops


def test_build_info_fields():
    info = ops.build_info()
    assert info["version"] == autogaze_ext.__version__
    assert isinstance(info["cuda"], bool)
    assert isinstance(info["cuda_archs"], list) and all(isinstance(a, str) for a in info["cuda_archs"])
    assert bool(info["cuda_archs"]) == info["cuda"] == bool(info["cuda_version"])
    assert info["torch_version"] == torch.__version__  # built against the torch it runs with
    assert info["torch_runtime_version"] == torch.__version__
    assert info["cxx_compiler"]
    assert info["sanitizers"] in ("", "address,undefined")  # AUTOGAZE_SANITIZE=ON builds only


def test_build_info_of_native_module_matches():
    native = _C.build_info()
    assert {k: v for k, v in ops.build_info().items() if k != "torch_runtime_version"} == native


@pytest.mark.cuda
def test_cuda_kernels_built_where_a_gpu_is():
    assert ops.build_info()["cuda"], "CUDA device present but autogaze_ext was built without CUDA kernels"


def test_ops_registered():
    for name in ("multiscale_patches", "gather_patches"):
        op = getattr(torch.ops.autogaze_ext, name)
        assert op.default._schema.name == f"autogaze_ext::{name}"
    assert str(torch.ops.autogaze_ext.gather_patches.default._schema) == (
        "autogaze_ext::gather_patches(Tensor video, Tensor ids, Tensor frame_offsets, int[] scales, "
        "int patch_size) -> Tensor"
    )


def test_kernels_registered_for_cpu_and_cuda():
    for name in ("multiscale_patches", "gather_patches"):
        assert torch._C._dispatch_has_kernel_for_dispatch_key(f"autogaze_ext::{name}", "CPU")
        assert torch._C._dispatch_has_kernel_for_dispatch_key(f"autogaze_ext::{name}", "CUDA")
