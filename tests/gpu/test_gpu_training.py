"""CUDA training paths under mixed precision: T-CLIP, the UNet and the VAE, and the recipe's stages on a GPU.

Marked ``gpu``: ``pytest -m gpu`` runs them on a GPU machine; without CUDA they are collected and skipped.
"""

from __future__ import annotations

import csv
import json
import math

import pytest

pytestmark = pytest.mark.gpu

PRECISIONS = ("fp32", "fp16", "bf16")
ACCELERATE_MP = {"fp32": "no", "fp16": "fp16", "bf16": "bf16"}
DTYPE = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}
TCLIP_STEPS = (10, 5)  # base stage, each adapter stage
UNET_STEPS = 10
VAE_STEPS = 10


def accelerate_mixed_precision() -> str:
    from accelerate.state import AcceleratorState

    return AcceleratorState().mixed_precision


def peak_mib() -> float:
    import torch

    return torch.cuda.max_memory_allocated() / 2**20


def finite(t) -> bool:
    import torch

    return bool(torch.isfinite(t.float()).all())


def max_abs(a, b) -> float:
    return float((a.detach().float().cpu() - b.detach().float().cpu()).abs().max())


def tclip_config(tmp_path, mixed_precision: str, base_steps: int, adapter_steps: int, base: str = "tclip-tiny"):
    cfg = {
        "base": base,
        "mixed_precision": mixed_precision,
        "base_stage": {"steps": base_steps, "batch_size": 16, "warmup": min(2, base_steps), "lr": 2e-3},
        "adapter_stage": {"steps": adapter_steps, "batch_size": 16, "warmup": min(1, adapter_steps), "lr": 2e-3},
        "checkpoint_every": 100000,
        "log_every": 1,
        "image_workers": 1,
        "augment": {"hflip": True, "shift": 0.1},  # the augmentation path runs on the device too
    }
    path = tmp_path / f"tclip-{base}-{mixed_precision}.json"
    path.write_text(json.dumps(cfg))
    return path


def train_tclip(manifest, out, cfg) -> None:
    from tclip import train as tclip_train

    argv = ["--manifest", str(manifest), "--out", str(out), "--config", str(cfg), "--seed", "0", "--no-progress"]
    assert tclip_train.main(argv) == 0


def assert_stage_losses_finite(csv_path) -> None:
    rows = list(csv.DictReader(csv_path.open()))
    assert rows, f"{csv_path} has no rows"
    stages = dict.fromkeys(r["stage"] for r in rows)
    assert set(stages) == {"base", "global", "fine"}, stages
    for stage in stages:
        losses = [float(r["loss"]) for r in rows if r["stage"] == stage]
        assert all(math.isfinite(v) for v in losses), f"stage {stage}: non-finite loss {losses}"


@pytest.fixture(scope="module")
def tclip_fp32_folder(manifest, tmp_path_factory):
    """A T-CLIP folder trained on CUDA in fp32 (for the CUDA-vs-CPU embedding comparison)."""
    from accelerate.state import AcceleratorState

    tmp = tmp_path_factory.mktemp("tclip-fp32")
    AcceleratorState._reset_state(reset_partial_state=True)
    train_tclip(manifest, tmp / "tclip", tclip_config(tmp, "no", *TCLIP_STEPS))
    AcceleratorState._reset_state(reset_partial_state=True)
    return tmp / "tclip"


@pytest.mark.parametrize(("precision", "base"), [(p, "tclip-tiny") for p in PRECISIONS] + [("bf16", "tclip-tiny-rn")],
                         indirect=["precision"])
def test_tclip_trains_on_cuda_with_finite_losses_and_a_loadable_folder(precision, base, cuda, manifest, thermal_images,
                                                                       tmp_path):
    """tclip.train.main under mixed precision (the ResNet tower carries LoRA through its attention pool)."""
    import torch

    import tclip

    torch.cuda.reset_peak_memory_stats(cuda)
    out = tmp_path / "tclip"
    train_tclip(manifest, out, tclip_config(tmp_path, ACCELERATE_MP[precision], *TCLIP_STEPS, base=base))
    assert accelerate_mixed_precision() == ACCELERATE_MP[precision]
    assert peak_mib() > 0, "no CUDA memory was used: did training run on the CPU?"
    assert_stage_losses_finite(out / "logs" / "loss.csv")
    imgs, glob, fine = thermal_images
    model = tclip.load(out, device=cuda)
    dtype = getattr(torch, DTYPE[precision])
    with torch.no_grad(), torch.autocast("cuda", dtype=dtype, enabled=precision != "fp32"):
        ei = model.encode_image(imgs[:8].to(cuda))
        et = model.encode_text(glob[:8], fine[:8])
    assert ei.device.type == "cuda"
    assert finite(ei) and finite(et), "embeddings of the trained model are not finite"


def test_tclip_embeddings_on_cuda_match_the_cpu(tclip_fp32_folder, cuda, thermal_images):
    """tclip.load on CUDA vs the CPU: fp32 with TF32 off < 1e-3, TF32 default < 2e-2, autocast fp16 < 5e-2."""
    import torch

    import tclip

    imgs, glob, fine = thermal_images
    x, g, f = imgs[:8], glob[:8], fine[:8]
    cpu = tclip.load(tclip_fp32_folder)
    gpu = tclip.load(tclip_fp32_folder, device=cuda)
    diffs = {}
    with torch.no_grad():
        ref = (cpu.encode_image(x), cpu.encode_text(g, f), cpu.encode_image(x, variant="base"))
        for label, tf32 in (("tf32_default", None), ("tf32_off", False)):
            saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
            if tf32 is not None:
                torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32
            try:
                got = (gpu.encode_image(x.to(cuda)), gpu.encode_text(g, f), gpu.encode_image(x.to(cuda), variant="base"))
            finally:
                torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
            diffs[label] = max(max_abs(a, b) for a, b in zip(ref, got))
        with torch.autocast("cuda", dtype=torch.float16):
            half = (gpu.encode_image(x.to(cuda)), gpu.encode_text(g, f))
        diffs["autocast_fp16"] = max(max_abs(a, b) for a, b in zip(ref[:2], half))
    assert diffs["tf32_off"] < 1e-3, diffs
    assert diffs["tf32_default"] < 2e-2, diffs
    assert diffs["autocast_fp16"] < 5e-2, diffs


@pytest.fixture(scope="module")
def unet_cache(thermal_images, tmp_path_factory):
    """encode_training_set on CUDA with a pipeline sized like configs/cpu-default.yaml, saved as a training cache."""
    import torch

    from thermgen.bench.gpu_throughput import default_pipeline
    from thermgen.train import unet as unet_mod

    pipe, _ = default_pipeline()
    imgs, glob, fine = thermal_images
    cache = unet_mod.encode_training_set(imgs, glob, fine, pipe.vae, pipe.text_encoder, batch_size=16,
                                         device=torch.device("cuda"), progress=False)
    path = tmp_path_factory.mktemp("unet-cache") / "cache.safetensors"
    unet_mod.save_cache(cache, path)
    del pipe
    torch.cuda.empty_cache()
    return cache, path


def test_encode_training_set_on_cuda_is_finite(unet_cache):
    from thermgen.train.unet import CACHE_KEYS

    cache, _ = unet_cache
    for k in CACHE_KEYS:
        assert finite(cache[k]), f"cache {k} not finite"
    assert tuple(cache["latent_mean"].shape) == (32, 4, 16, 16)


def unet_overrides(precision: str, steps: int) -> list[str]:
    return [f"train.max_train_steps={steps}", f"train.mixed_precision={ACCELERATE_MP[precision]}", "run.device=cuda",
            "train.train_batch_size=8", "train.lr_warmup_steps=1", "train.checkpointing_steps=100000",
            "train.validation_steps=100000"]


@pytest.mark.parametrize("precision", PRECISIONS, indirect=True)
def test_unet_trains_on_cuda_with_a_finite_loss(precision, cuda, unet_cache, tmp_path):
    """python -m thermgen.train.unet (its main) with train.mixed_precision no / fp16 / bf16."""
    import torch

    from thermgen.train import unet as unet_mod

    torch.cuda.reset_peak_memory_stats(cuda)
    out = tmp_path / "unet"
    assert unet_mod.main(["--cache", str(unet_cache[1]), "--out", str(out), "--no-progress",
                          *unet_overrides(precision, UNET_STEPS)]) == 0
    assert accelerate_mixed_precision() == ACCELERATE_MP[precision]
    assert peak_mib() > 0, "no CUDA memory was used: did training run on the CPU?"
    report = json.loads((out / "train_report.json").read_text())
    assert report["steps"] == UNET_STEPS and math.isfinite(report["final_loss"]), report
    losses = [float(r["loss"]) for r in csv.DictReader((out / "logs" / "train_log.csv").open())]
    assert losses and all(math.isfinite(v) for v in losses), losses


def vae_cfg(precision: str, steps: int) -> dict:
    return {"steps": steps, "batch_size": 8, "mixed_precision": ACCELERATE_MP[precision], "resolution": 64,
            "log_every": 1, "num_preview": 2, "eval_batch_size": 16, "lr_warmup_steps": 1}


@pytest.mark.parametrize("precision", PRECISIONS, indirect=True)
def test_vae_trains_on_cuda_with_finite_losses(precision, cuda, thermal_images, tmp_path):
    """thermgen.train.vae.train_vae with mixed_precision no / fp16 / bf16: loss, validation metrics, scaling factor."""
    import torch

    from thermgen.train.vae import train_vae

    imgs, _, _ = thermal_images
    torch.cuda.reset_peak_memory_stats(cuda)
    rep = train_vae(vae_cfg(precision, VAE_STEPS), imgs[4:], imgs[:4], tmp_path / "vae", show_progress=False)
    assert accelerate_mixed_precision() == ACCELERATE_MP[precision]
    assert peak_mib() > 0, "no CUDA memory was used: did training run on the CPU?"
    assert rep["final_loss"] is not None and math.isfinite(rep["final_loss"]), rep["final_loss"]
    assert all(math.isfinite(v) for v in rep["val"].values()), rep["val"]
    assert math.isfinite(rep["scaling_factor"]), rep["scaling_factor"]


def test_vae_with_cpu_true_stays_on_the_cpu_where_cuda_is_present(cuda, thermal_images, tmp_path):
    """The recipe's run.device=cpu reaches the VAE stage: train_vae(cpu=True) allocates no CUDA memory."""
    import torch

    from thermgen.train.vae import train_vae

    imgs, _, _ = thermal_images
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats(cuda)
    before = torch.cuda.max_memory_allocated(cuda)
    rep = train_vae(vae_cfg("fp32", 2), imgs[4:], imgs[:4], tmp_path / "vae", cpu=True, show_progress=False)
    assert math.isfinite(rep["final_loss"])
    assert torch.cuda.max_memory_allocated(cuda) == before, "train_vae(cpu=True) allocated CUDA memory"


def test_recipe_stages_run_in_their_own_processes_with_different_mixed_precision(cuda, tmp_path):
    """As python -m thermgen.train runs them on a GPU: T-CLIP in fp16 (its "auto" on CUDA), then the VAE and the
    UNet in fp32, each training stage in a process of its own (so no accelerate state carries over)."""
    from thermgen.train.config import load_config
    from thermgen.train.recipe import run_recipe

    cfg = load_config(None, [
        "run.device=cuda", "data.synthetic_n=40", "data.synthetic_size=32", "captions.variants=2",
        "tclip.train={base_stage: {steps: 2, batch_size: 8}, adapter_stage: {steps: 2, batch_size: 8}}",
        "vae.train={steps: 2, batch_size: 8, block_out_channels: [8, 16, 32], num_preview: 2}",
        "unet.block_out_channels=[32, 64]", "unet.cross_attention_dim=32", "unet.norm_num_groups=8",
        "train.resolution=32", "train.train_batch_size=8", "train.max_train_steps=2", "train.validation_steps=100",
    ])
    summary = run_recipe(cfg, tmp_path / "run", stop_after="unet", progress=False)
    assert [summary["stages"][s]["status"] for s in ("tclip", "vae", "unet")] == ["ran"] * 3
    assert math.isfinite(json.loads((tmp_path / "run" / "vae" / "vae_report.json").read_text())["final_loss"])
