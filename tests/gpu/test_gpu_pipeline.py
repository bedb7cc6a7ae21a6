"""CUDA inference paths: the environment, TCLIPTextEncoder per dtype, ThermalDiffusionPipeline per dtype, CPU offload,
xformers vs SDPA.

Marked ``gpu``: ``pytest -m gpu`` runs them on a GPU machine; without CUDA they are collected and skipped.
"""

from __future__ import annotations

import copy
import importlib

import numpy as np
import pytest

from thermgen.bench.gpu_throughput import FINE, PROMPTS  # the throughput bench's prompts

pytestmark = pytest.mark.gpu

PRECISIONS = ("fp32", "fp16", "bf16")
DTYPE = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}
KW = dict(prompt=PROMPTS, prompt_fine=FINE, num_inference_steps=4, guidance_scale=3.0)


def dtype_of(precision: str):
    import torch

    return getattr(torch, DTYPE[precision])


def finite(x) -> bool:
    return bool(np.isfinite(np.asarray(x.float().cpu() if hasattr(x, "float") else x, dtype=np.float64)).all())


def max_abs(a, b) -> float:
    import torch

    a, b = (t.detach().float().cpu() if isinstance(t, torch.Tensor) else torch.as_tensor(t) for t in (a, b))
    return float((a.float() - b.float()).abs().max())


def gen(device="cuda", seed: int = 0):
    import torch

    return torch.Generator(device).manual_seed(seed)


# ---------------------------------------------------------------------------------------------------------------------
# Environment
# ---------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("module", ["diffusers", "open_clip", "peft", "accelerate"])
def test_the_pipeline_dependencies_import(module):
    importlib.import_module(module)


def test_a_cuda_matmul_is_finite(cuda):
    import torch

    x = torch.randn(256, 256, device=cuda)
    assert finite(x @ x)


# ---------------------------------------------------------------------------------------------------------------------
# TCLIPTextEncoder
# ---------------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def text_encoder(tiny_tclip):
    """Fused-mode encoder of a random tclip-tiny with random adapters, its CPU fp32 output and that output's scale."""
    import torch

    from tclip.text_encoder import TCLIPTextEncoder

    enc = TCLIPTextEncoder.from_tclip(tiny_tclip, mode="fused")
    with torch.no_grad():
        ref = enc.encode_prompt(PROMPTS, FINE)
    return enc, ref, max(1.0, float(ref.abs().max()))


def encode_on(enc, device, precision):
    import torch

    e = copy.deepcopy(enc).to(device, dtype_of(precision))
    with torch.no_grad():
        return e.encode_prompt(PROMPTS, FINE)


@pytest.mark.parametrize("precision", PRECISIONS, indirect=True)
def test_text_encoder_on_cuda_is_finite_and_close_to_fp32(precision, cuda, text_encoder):
    """fp32 on CUDA vs the CPU < 1e-3 (x scale); fp16 vs CUDA fp32 < 0.02, bf16 < 0.08 (x scale)."""
    enc, cpu_ref, scale = text_encoder
    out = encode_on(enc, cuda, precision)
    assert out.dtype == dtype_of(precision) and out.device.type == "cuda", (out.dtype, out.device)
    assert finite(out), "hidden states not finite"
    if precision == "fp32":
        d = max_abs(out, cpu_ref)
        assert d < 1e-3 * scale, f"fp32 on CUDA vs CPU: {d:.3g}"
    else:
        d = max_abs(out, encode_on(enc, cuda, "fp32"))
        tol = (0.02 if precision == "fp16" else 0.08) * scale
        assert d < tol, f"{precision} vs fp32 max abs diff {d:.3g} >= {tol:.3g}"


# ---------------------------------------------------------------------------------------------------------------------
# ThermalDiffusionPipeline
# ---------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("precision", PRECISIONS, indirect=True)
def test_pipeline_on_cuda_is_deterministic_with_every_output_type(precision, cuda):
    """.to(cuda, dtype): every component moved; one seed twice gives identical images; np / uint16 / pil outputs;
    a CPU generator with the pipeline on CUDA (what thermgen.train.unet.sample_images does)."""
    import PIL.Image
    import torch

    from pipelines.testing import tiny_pipeline

    dtype = dtype_of(precision)
    pipe = tiny_pipeline().to(cuda, dtype)
    for name in ("unet", "vae", "text_encoder"):
        m = getattr(pipe, name)
        assert m.dtype == dtype and m.device.type == "cuda", f"{name} is {m.dtype} on {m.device}"
    a = pipe(**KW, generator=gen(), output_type="np").images
    b = pipe(**KW, generator=gen(), output_type="np").images
    assert a.dtype == np.float32 and a.shape == (2, 16, 16, 1), (a.dtype, a.shape)
    assert finite(a) and a.min() >= 0 and a.max() <= 1, "np output not finite or outside [0, 1]"
    assert np.array_equal(a, b), f"same seed, different output (max abs diff {max_abs(a, b):.3g})"
    u = pipe(**KW, generator=gen(), output_type="uint16").images
    assert u.dtype == np.uint16 and u.shape == a.shape, (u.dtype, u.shape)
    assert float(np.abs(u / 65535.0 - a).max()) <= 1.0 / 65535 + 1e-6
    p = pipe(**KW, generator=gen(), output_type="pil").images
    assert isinstance(p[0], PIL.Image.Image) and p[0].mode == "L"
    c = pipe(**KW, generator=torch.Generator().manual_seed(0), output_type="np").images
    assert finite(c), "CPU-generator output not finite"


def test_pipeline_fp32_on_cuda_matches_the_cpu(cuda):
    """Same CPU generator: CUDA fp32 vs CPU fp32 images < 1e-2."""
    import torch

    from pipelines.testing import tiny_pipeline

    ref = tiny_pipeline()(**KW, generator=torch.Generator().manual_seed(0), output_type="np").images
    got = tiny_pipeline().to(cuda)(**KW, generator=torch.Generator().manual_seed(0), output_type="np").images
    d = max_abs(ref, got)
    assert d < 1e-2, f"CUDA fp32 vs CPU fp32 images differ by {d:.3g}"


@pytest.mark.parametrize("output_type", ["latent", "np"])
def test_enable_model_cpu_offload_matches_the_pipeline_on_cuda(output_type, cuda):
    """fp16 with enable_model_cpu_offload() vs fp16 wholly on CUDA < 1e-2; a second offloaded call works too."""
    import torch

    from pipelines.testing import tiny_pipeline

    ref_pipe = tiny_pipeline().to(cuda, torch.float16)
    ref = ref_pipe(**KW, generator=torch.Generator().manual_seed(0), output_type=output_type).images
    del ref_pipe
    pipe = tiny_pipeline().to(torch.float16)
    pipe.enable_model_cpu_offload()
    try:
        out = pipe(**KW, generator=torch.Generator().manual_seed(0), output_type=output_type).images
        assert finite(out), "offloaded output not finite"
        d = max_abs(out, ref)
        assert d < 1e-2, f"offloaded output differs from the on-device run by {d:.3g}"
        again = pipe(**KW, generator=torch.Generator().manual_seed(0), output_type=output_type).images
        assert finite(again), "second offloaded call not finite"
    finally:
        pipe.remove_all_hooks()


def test_enable_xformers_if_available_turns_it_on_exactly_when_xformers_imports(cuda):
    from pipelines.testing import tiny_pipeline

    try:
        importlib.import_module("xformers.ops")
        importable = True
    except ImportError:
        importable = False
    pipe = tiny_pipeline().to(cuda)
    assert pipe.enable_xformers_if_available() is importable


def test_xformers_attention_matches_sdpa(cuda):
    """fp16: xformers memory-efficient attention vs PyTorch SDPA < 2e-2 (skipped when xformers does not import)."""
    import torch

    try:
        importlib.import_module("xformers.ops")
    except ImportError as e:
        pytest.skip(f"xformers not importable ({e})")
    from pipelines.testing import tiny_pipeline

    pipe = tiny_pipeline().to(cuda, torch.float16)
    sdpa = pipe(**KW, generator=gen(), output_type="np").images
    pipe.enable_xformers_memory_efficient_attention()
    xf = pipe(**KW, generator=gen(), output_type="np").images
    pipe.disable_xformers_memory_efficient_attention()
    d = max_abs(sdpa, xf)
    assert finite(xf) and d < 2e-2, f"xformers vs SDPA max abs diff {d:.3g}"


def test_from_pretrained_with_torch_dtype_fp16_runs_on_cuda(cuda, tmp_path):
    import torch

    from pipelines import ThermalDiffusionPipeline
    from pipelines.testing import tiny_pipeline

    tiny_pipeline().save_pretrained(tmp_path)
    pipe = ThermalDiffusionPipeline.from_pretrained(tmp_path, torch_dtype=torch.float16, local_files_only=True).to(cuda)
    pipe.set_progress_bar_config(disable=True)
    dtypes = {n: getattr(pipe, n).dtype for n in ("unet", "vae", "text_encoder")}
    assert all(d == torch.float16 for d in dtypes.values()), dtypes
    assert finite(pipe(**KW, generator=gen(), output_type="np").images), "output not finite"
