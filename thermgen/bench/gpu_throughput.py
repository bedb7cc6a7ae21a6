"""Sampling throughput of the pipeline, per dtype and batch: ``python -m thermgen.bench.gpu_throughput --out DIR``.

A benchmark, not a test: the CUDA correctness checks are pytest tests (``pytest -m gpu`` on a GPU machine, see
tests/gpu/). This command builds a ``ThermalDiffusionPipeline`` sized like configs/cpu-default.yaml (random weights:
UNet 64/128, 16x16x4 latents, fused T-CLIP tokens), moves it with ``.to(device, dtype)`` and times
``--steps`` DPM-Solver steps with the config's guidance at each batch size, after a 2-step warm-up, between
``torch.cuda.synchronize()`` calls. It prints the figures with the machine they ran on (torch / CUDA / GPU,
library versions, xformers) and writes ``DIR/gpu_throughput.json`` and ``DIR/gpu_throughput.md``.

fp16 / bf16 need CUDA (recorded as not run on the CPU). ``--device cpu --quick`` (batch 2, 2 steps) takes seconds.
"""

from __future__ import annotations

import argparse
import copy
import importlib
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

PRECISIONS = ("fp32", "fp16", "bf16")
REPORT_JSON = "gpu_throughput.json"
REPORT_MD = "gpu_throughput.md"
PROMPTS = [
    "An infrared thermal image of a parking lot with many cars at night.",
    "An infrared thermal image of a road with a few people during the day.",
]
FINE = [
    "Thermal infrared image: several hot engine blocks in rows.",
    "Thermal infrared image: warm bodies on a cooler road.",
]
LIBRARIES = ("diffusers", "open_clip", "peft", "accelerate", "transformers", "huggingface_hub", "safetensors", "numpy")


def environment(device) -> dict:
    """Versions and the device's properties (what the figures were measured on)."""
    import torch

    env: dict[str, Any] = {"python": platform.python_version(), "torch": torch.__version__,
                           "torch_cuda": torch.version.cuda, "device": str(device)}
    for mod in LIBRARIES:
        try:
            env[mod] = getattr(importlib.import_module(mod), "__version__", "?")
        except ImportError as e:
            env[mod] = f"not importable ({e})"
    try:
        import xformers

        env["xformers"] = xformers.__version__
    except ImportError:
        env["xformers"] = "not installed"
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        env.update(gpu=torch.cuda.get_device_name(device), capability=list(torch.cuda.get_device_capability(device)),
                   total_mem_gib=round(p.total_memory / 2**30, 1), bf16_supported=torch.cuda.is_bf16_supported(),
                   tf32_matmul=torch.backends.cuda.matmul.allow_tf32)
    else:
        env["cpu_threads"] = torch.get_num_threads()
    return env


def default_pipeline(seed: int = 0):
    """A ThermalDiffusionPipeline sized like configs/cpu-default.yaml (random weights) and that config."""
    import torch

    from pipelines import ThermalDiffusionPipeline
    from tclip.model import get_arch_config
    from tclip.text_encoder import TCLIPTextEncoder
    from thermgen.train.config import defaults
    from thermgen.train.unet import build_unet, make_inference_scheduler
    from thermgen.train.vae import build_vae, validate_vae_config

    cfg = defaults()
    arch = get_arch_config("tclip-tiny")
    torch.manual_seed(seed)
    te = TCLIPTextEncoder(embed_dim=arch["embed_dim"], text_cfg=arch["text_cfg"], mode=cfg["unet"]["conditioning"]).eval()
    torch.manual_seed(seed + 1)
    vae = build_vae(validate_vae_config({}))
    factor = 2 ** (len(vae.config.block_out_channels) - 1)
    unet = build_unet(cfg["unet"], latent_channels=vae.config.latent_channels,
                      latent_size=cfg["train"]["resolution"] // factor, text_width=te.hidden_size, seed=seed + 2)
    pipe = ThermalDiffusionPipeline(vae=vae, text_encoder=te, unet=unet, scheduler=make_inference_scheduler(cfg))
    pipe.set_progress_bar_config(disable=True)
    return pipe, cfg


def measure(base, cfg: dict, device, precision: str, batches: list[int], steps: int) -> dict:
    """images/s and seconds per run for each batch size, the mean pixel value, finiteness and peak CUDA memory."""
    import numpy as np
    import torch

    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]
    cuda = device.type == "cuda"

    def sync():
        if cuda:
            torch.cuda.synchronize(device)

    pipe = copy.deepcopy(base).to(device, dtype)
    res = cfg["train"]["resolution"]
    r: dict[str, Any] = {"images_per_s": {}, "seconds_per_run": {}, "pixel_mean": {}, "finite": {}}
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    for batch in batches:
        call = dict(prompt=(PROMPTS * batch)[:batch], prompt_fine=(FINE * batch)[:batch], height=res, width=res,
                    guidance_scale=float(cfg["train"]["guidance_scale"]), output_type="np")
        pipe(**call, num_inference_steps=2, generator=torch.Generator(device).manual_seed(0))  # warm-up
        sync()
        t0 = time.perf_counter()
        out = pipe(**call, num_inference_steps=steps, generator=torch.Generator(device).manual_seed(0)).images
        sync()
        dt = time.perf_counter() - t0
        key = f"b{batch}"
        r["images_per_s"][key] = round(batch / dt, 2)
        r["seconds_per_run"][key] = round(dt, 3)
        r["pixel_mean"][key] = round(float(np.mean(out)), 4)
        r["finite"][key] = bool(np.isfinite(out).all())
    r["peak_mem_mib"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1) if cuda else None
    del pipe
    if cuda:
        torch.cuda.empty_cache()
    return r


def write_report(out: Path, report: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / REPORT_JSON).write_text(json.dumps(report, indent=2) + "\n")
    env = report["environment"]
    lines = [f"# Pipeline throughput on {env.get('gpu', report['device'])}", "",
             f"torch {env['torch']} (CUDA {env['torch_cuda']}), diffusers {env['diffusers']}, xformers {env['xformers']}; "
             f"UNet {report['unet_parameters']:,} parameters, {report['resolution']} px, {report['steps']} steps; "
             f"quick={report['quick']}", "",
             "| dtype | batch | images/s | s/run | pixel mean | finite | peak MiB |", "|---|---|---|---|---|---|---|"]
    for precision, r in report["results"].items():
        if "not_run" in r:
            lines.append(f"| {precision} | | not run: {r['not_run']} | | | | |")
            continue
        for key, ips in r["images_per_s"].items():
            lines.append(f"| {precision} | {key[1:]} | {ips} | {r['seconds_per_run'][key]} | {r['pixel_mean'][key]} "
                         f"| {r['finite'][key]} | {r['peak_mem_mib'] if r['peak_mem_mib'] is not None else ''} |")
    (out / REPORT_MD).write_text("\n".join(lines) + "\n")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m thermgen.bench.gpu_throughput", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, type=Path, help=f"folder for {REPORT_JSON} and {REPORT_MD}")
    p.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    p.add_argument("--quick", action="store_true", help="batch 2 and 2 steps (the CPU test uses --device cpu --quick)")
    p.add_argument("--batches", default=None, help="comma-separated batch sizes (default 8,64,256 on CUDA, 8,64 on CPU)")
    p.add_argument("--steps", type=int, default=None, help="sampler steps per run (default 25)")
    p.add_argument("--precisions", default=",".join(PRECISIONS), help="comma-separated subset of fp32,fp16,bf16")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import torch

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but torch.cuda.is_available() is False (use --device cpu)", file=sys.stderr)
        return 2
    precisions = [p.strip() for p in args.precisions.split(",") if p.strip()]
    if not precisions or any(p not in PRECISIONS for p in precisions):
        print(f"error: --precisions {args.precisions!r}: choose from {','.join(PRECISIONS)}", file=sys.stderr)
        return 2
    if args.batches:
        batches = [int(b) for b in args.batches.split(",")]
    else:
        batches = [2] if args.quick else ([8, 64, 256] if device.type == "cuda" else [8, 64])
    steps = args.steps or (2 if args.quick else 25)
    base, cfg = default_pipeline()
    report: dict[str, Any] = {"schema_version": 1, "device": str(device), "quick": args.quick, "steps": steps,
                              "batches": batches, "resolution": cfg["train"]["resolution"],
                              "unet_parameters": sum(p.numel() for p in base.unet.parameters()),
                              "environment": environment(device), "results": {}}
    print(json.dumps(report["environment"]), flush=True)
    for precision in precisions:
        if precision != "fp32" and device.type != "cuda":
            report["results"][precision] = {"not_run": "needs CUDA"}
        elif precision == "bf16" and not torch.cuda.is_bf16_supported():
            report["results"][precision] = {"not_run": "bf16 not supported on this GPU"}
        else:
            r = report["results"][precision] = measure(base, cfg, device, precision, batches, steps)
            print(f"{precision}: images/s {r['images_per_s']}, peak {r['peak_mem_mib']} MiB"
                  + ("" if all(r["finite"].values()) else f"; NON-FINITE output {r['finite']}"), flush=True)
        write_report(args.out, report)
    fp32, fp16 = report["results"].get("fp32", {}), report["results"].get("fp16", {})
    if "images_per_s" in fp32 and "images_per_s" in fp16:
        report["fp16_speedup"] = {k: round(fp16["images_per_s"][k] / v, 2) for k, v in fp32["images_per_s"].items()}
        print(f"fp16 / fp32: {report['fp16_speedup']}")
        write_report(args.out, report)
    print(f"wrote {args.out / REPORT_JSON} and {args.out / REPORT_MD}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
