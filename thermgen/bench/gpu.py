"""One prepared GPU check of the toolkit: ``python -m thermgen.bench.gpu --out DIR``.

Every check runs in its own try/except (one failure does not hide the others) and the report is rewritten
after each one, so a run cut short still leaves ``DIR/gpu_report.json`` and ``DIR/gpu_report.md``:

``environment``          torch / CUDA / device / bf16, versions of diffusers, open_clip, peft, accelerate,
                         transformers, huggingface_hub; xformers importable or not; fallback wheels used.
``tclip_train``          ``tclip.train.main`` on a tiny synthetic manifest with mixed precision fp32 / fp16 / bf16:
                         steps/s per stage, losses finite, the trained folder loads and embeds finitely on the
                         device; ``tclip.load`` embeddings on CUDA (fp32, TF32 off and default) vs the CPU.
``text_encoder``         ``TCLIPTextEncoder`` (fused mode) on the device in fp32 / fp16 / bf16: finite, max abs diff
                         vs fp32 (and fp32 on the device vs the CPU).
``pipeline``             the tiny ``ThermalDiffusionPipeline`` moved with ``.to(device, dtype)`` in fp32 / fp16 / bf16:
                         finite, bitwise identical twice for one seed, ``np`` / ``uint16`` / ``pil`` outputs, a CPU
                         generator on CUDA, CUDA vs CPU (fp32); ``enable_model_cpu_offload()`` (``latent`` and
                         ``np`` outputs, vs no offload); xformers attention vs SDPA when xformers is importable.
``pipeline_throughput``  a pipeline sized like configs/cpu-default.yaml (UNet 64/128, 16x16x4 latents, fused
                         T-CLIP tokens): images/s for 25 DPM-Solver steps with guidance at batch 8 and 64, fp32 /
                         fp16 / bf16, after a warm-up, timed between ``torch.cuda.synchronize()`` calls.
``unet_train``           ``encode_training_set`` on the device, then ``python -m thermgen.train.unet`` (its ``main``)
                         with ``train.mixed_precision`` no / fp16 / bf16: final loss finite, steps/s.
``vae_train``            ``thermgen.train.vae.train_vae`` with ``mixed_precision`` no / fp16 / bf16: losses finite.
``recipe_stages``        the recipe's stage order in ONE process, as ``python -m thermgen.train`` runs it: T-CLIP
                         (``mixed_precision: auto``), then the VAE and the UNet (``train.mixed_precision: no``).

``--device cpu --quick`` runs everything at the smallest size on the CPU (under a minute); checks that need CUDA
(fp16/bf16, offload, xformers, CUDA-vs-CPU) are recorded as ``skipped: needs CUDA``. Exit status 0 when every check
passed or was skipped, 1 when any failed (the report names it and keeps the traceback).

Wheels for a machine without diffusers / open_clip: ``pip install --no-deps --target /tmp/site .whl/*.whl`` and
``PYTHONPATH=/tmp/site:.``. Pure-python wheels in ``--fallback-wheels`` (default ``.whl/fallback``) are unpacked
and put on ``sys.path`` only when the machine lacks the package or has a version that diffusers/open_clip reject
(appended when missing; prepended when the installed version does not satisfy the requirement).
"""

from __future__ import annotations

import argparse
import copy
import csv
import email.parser
import importlib
import importlib.metadata
import json
import math
import os
import platform
import re
import shutil
import sys
import tempfile
import time
import traceback
import zipfile
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[2]
CHECKS = (
    "environment",
    "tclip_train",
    "text_encoder",
    "pipeline",
    "pipeline_throughput",
    "unet_train",
    "vae_train",
    "recipe_stages",
)
PRECISIONS = ("fp32", "fp16", "bf16")
ACCELERATE_MP = {"fp32": "no", "fp16": "fp16", "bf16": "bf16"}
STATUSES = ("passed", "failed", "skipped")
REPORT_JSON = "gpu_report.json"
REPORT_MD = "gpu_report.md"
PROMPTS = [
    "An infrared thermal image of a parking lot with many cars at night.",
    "An infrared thermal image of a road with a few people during the day.",
]
FINE = [
    "Thermal infrared image: several hot engine blocks in rows.",
    "Thermal infrared image: warm bodies on a cooler road.",
]


def log(msg: str) -> None:
    print(f"[gpu-check {time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Skip(Exception):
    """Raised by a sub-check that cannot run here (recorded as skipped with the message)."""


def expect(cond: bool, msg: str) -> None:
    if not cond:
        raise AssertionError(msg)


# ---------------------------------------------------------------------------------------------------------------------
# Fallback wheels (before anything imports huggingface_hub / requests)
# ---------------------------------------------------------------------------------------------------------------------
def canon(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def wheel_info(path: Path) -> tuple[str, str, list[str]]:
    """(canonical name, version, Requires-Dist lines) of a wheel file."""
    name, version = path.name.split("-")[:2]
    with zipfile.ZipFile(path) as zf:
        meta = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        msg = email.parser.Parser().parsestr(zf.read(meta).decode("utf-8", "replace"))
    return canon(name), version, list(msg.get_all("Requires-Dist") or [])


def _installed_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def fallback_plan(
    wheels: dict[str, tuple[str, list[str]]],
    installed: Callable[[str], str | None],
    roots: list[str],
) -> tuple[dict[str, str], dict[str, str]]:
    """Which fallback wheels to activate so that the requirement strings ``roots`` are satisfied.

    wheels: {canonical name: (version, Requires-Dist)}; installed(name) -> installed version or None.
    Returns ({name: "append" (missing here) | "prepend" (installed version rejected)}, {name: unmet note}).
    A wheel is used only when its own version satisfies the requirement; activated wheels' requirements are
    followed in turn. Without ``packaging`` only missing packages are considered.
    """
    try:
        from packaging.requirements import Requirement
    except ImportError:  # pragma: no cover - packaging ships with every torch/transformers install
        Requirement = None
    plan: dict[str, str] = {}
    notes: dict[str, str] = {}
    queue = list(roots)
    while queue:
        text = queue.pop(0)
        if Requirement is None:
            name, spec, marker_ok = canon(re.split(r"[\s<>=!~;\[(]", text.strip(), 1)[0]), None, ";" not in text
        else:
            req = Requirement(text)
            name, spec = canon(req.name), req.specifier
            marker_ok = req.marker is None or req.marker.evaluate({"extra": ""})
        if not marker_ok or name in plan:
            continue
        have = installed(name)
        if have is not None and (spec is None or not spec or spec.contains(have, prereleases=True)):
            continue
        if name not in wheels:
            notes[name] = f"{have or 'not installed'} does not satisfy {text!r}; no fallback wheel"
            continue
        version, requires = wheels[name]
        if spec is not None and spec and not spec.contains(version, prereleases=True):
            notes[name] = f"fallback {version} does not satisfy {text!r} either"
            continue
        plan[name] = "append" if have is None else "prepend"
        queue.extend(requires)
    return plan, notes


def activate_fallbacks(folder: Path | None, roots: tuple[str, ...] = ("diffusers", "open_clip_torch"),
                       site: Path | None = None) -> dict:
    """Unpack (into ``site``, default a folder in the temp dir) and add to ``sys.path`` the fallback wheels that
    :func:`fallback_plan` selects for the requirements of the ``roots`` distributions; returns what was done."""
    info: dict[str, Any] = {"folder": str(folder) if folder else None, "activated": {}, "unmet": {}}
    if folder is None or not folder.is_dir():
        return info
    wheels, paths = {}, {}
    for w in sorted(folder.glob("*.whl")):
        name, version, requires = wheel_info(w)
        wheels[name], paths[name] = (version, requires), w
    reqs: list[str] = []
    for dist in roots:
        try:
            reqs.extend(importlib.metadata.requires(dist) or [])
        except importlib.metadata.PackageNotFoundError:
            info["unmet"][canon(dist)] = "not installed (install the primary wheels first)"
    reqs.append("requests")  # diffusers checks that requests is installed when it is imported
    plan, notes = fallback_plan(wheels, _installed_version, reqs)
    info["unmet"].update(notes)
    root = site or Path(tempfile.gettempdir()) / "thermgen_fallback_site"
    for name, how in plan.items():
        version = wheels[name][0]
        target = root / f"{name}-{version}"
        if not target.is_dir():
            tmp = target.with_suffix(".part")
            shutil.rmtree(tmp, ignore_errors=True)
            with zipfile.ZipFile(paths[name]) as zf:
                zf.extractall(tmp)
            tmp.rename(target)
        if how == "prepend":
            sys.path.insert(0, str(target))
        else:
            sys.path.append(str(target))
        info["activated"][name] = f"{version} ({how}; installed: {_installed_version(name) if how == 'prepend' else None})"
    importlib.invalidate_caches()
    return info


# ---------------------------------------------------------------------------------------------------------------------
# Running checks
# ---------------------------------------------------------------------------------------------------------------------
def run_sub(results: dict, key: str, fn: Callable, *args) -> dict:
    """Run one sub-check into ``results[key]``: passed (with fn's dict), skipped (Skip) or failed (traceback)."""
    t0 = time.perf_counter()
    try:
        out = fn(*args) or {}
        r = {"status": "passed", **out}
    except Skip as e:
        r = {"status": "skipped", "reason": str(e)}
    except Exception as e:  # noqa: BLE001 - the point is to record every failure
        r = {"status": "failed", "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()}
    r["seconds"] = round(time.perf_counter() - t0, 2)
    results[key] = r
    extra = r.get("reason") or r.get("error") or summary(r)
    log(f"  {key}: {r['status']} ({r['seconds']}s) {extra}")
    return r


def aggregate(results: dict) -> str:
    """A check's status from its sub-results: failed if any failed, passed if any passed, else skipped."""
    statuses = [r["status"] for r in results.values()]
    if "failed" in statuses:
        return "failed"
    if "passed" in statuses:
        return "passed"
    return "skipped"


def run_check(name: str, fn: Callable, ctx: "Ctx") -> dict:
    log(f"{name} ...")
    t0 = time.perf_counter()
    results: dict[str, Any] = {}
    entry: dict[str, Any] = {}
    try:
        fn(ctx, results)
        entry["status"] = aggregate(results) if results else "passed"
    except Skip as e:
        entry.update(status="skipped", reason=str(e))
    except Exception as e:  # noqa: BLE001
        entry.update(status="failed", error=f"{type(e).__name__}: {e}", traceback=traceback.format_exc())
    entry["seconds"] = round(time.perf_counter() - t0, 2)
    entry["results"] = results
    log(f"{name}: {entry['status']} ({entry['seconds']}s){' ' + entry['error'] if 'error' in entry else ''}")
    return entry


def failures(checks: dict) -> list[str]:
    out = []
    for name, c in checks.items():
        if c["status"] == "failed" and not any(r.get("status") == "failed" for r in c["results"].values()):
            out.append(name)
        out += [f"{name}/{k}" for k, r in c["results"].items() if r.get("status") == "failed"]
    return out


_SUMMARY_KEYS = (
    "torch", "diffusers", "open_clip", "name", "capability", "bf16_supported", "max_abs_diff_vs_cpu", "steps_per_s", "images_per_s", "final_loss", "max_abs_diff", "max_abs_diff_vs_fp32", "max_abs_diff_tf32_off",
    "max_abs_diff_tf32_default", "identical", "seconds_per_run", "peak_mem_mib", "value",
)


def summary(r: dict) -> str:
    parts = []
    for k in _SUMMARY_KEYS:
        if k in r:
            v = r[k]
            if isinstance(v, dict):
                v = ", ".join(f"{a}={_fmt(b)}" for a, b in v.items())
            parts.append(f"{k}={_fmt(v)}")
    return "; ".join(parts)


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


# ---------------------------------------------------------------------------------------------------------------------
# Context: device, sizes, shared synthetic data
# ---------------------------------------------------------------------------------------------------------------------
class Ctx:
    def __init__(self, device: str, quick: bool, work: Path):
        import torch

        self.torch = torch
        self.requested = device
        self.device = torch.device(device)
        self.quick = quick
        self.work = work
        self.cuda = self.device.type == "cuda"
        q = quick
        self.sizes = {
            "n_images": 16 if q else 64,
            "tclip_batch": 8 if q else 32,
            "tclip_base_steps": 2 if q else 40,
            "tclip_adapter_steps": 1 if q else 20,
            "pipe_steps": 2 if q else 10,
            "throughput_steps": 2 if q else 25,
            "throughput_batches": [2] if q else ([8, 64, 256] if self.device.type == "cuda" else [8, 64]),
            "unet_steps": 2 if q else 30,
            "unet_batch": 4 if q else 16,
            "vae_steps": 2 if q else 30,
            "vae_batch": 4 if q else 16,
            "vae_resolution": 32 if q else 64,
        }
        if self.cuda:
            torch.zeros(1, device=self.device)  # initialise CUDA before the memory-statistics calls
        self.tclip_dir: Path | None = None
        self._manifest: Path | None = None
        self._images = None

    def need_cuda(self, precision: str = "fp16") -> None:
        if not self.cuda:
            raise Skip("needs CUDA")
        if precision == "bf16" and not self.torch.cuda.is_bf16_supported():
            raise Skip("bf16 not supported on this GPU")

    def dtype(self, precision: str):
        return {"fp32": self.torch.float32, "fp16": self.torch.float16, "bf16": self.torch.bfloat16}[precision]

    def sync(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize(self.device)

    def reset_peak(self) -> None:
        if self.cuda:
            self.torch.cuda.reset_peak_memory_stats(self.device)

    def peak_mib(self) -> float | None:
        return round(self.torch.cuda.max_memory_allocated(self.device) / 2**20, 1) if self.cuda else None

    def images(self):
        """(N, 1, 64, 64) float32 in [0, 1]: warm/cold gradient backgrounds with hot blobs; plus captions."""
        if self._images is None:
            torch = self.torch
            n, size = self.sizes["n_images"], 64
            g = torch.Generator().manual_seed(0)
            yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
            imgs, glob, fine = [], [], []
            for i in range(n):
                warm, k = i % 2, 1 + (i // 2) % 3
                x = 0.15 + 0.35 * warm + 0.1 * yy + 0.03 * torch.rand(size, size, generator=g)
                xs = []
                for _ in range(k):
                    cy, cx = torch.rand(2, generator=g) * 0.8 + 0.1
                    xs.append(float(cx))
                    x = x + 0.45 * torch.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 0.004)
                imgs.append(x.clamp(0, 1))
                side = "left" if sum(xs) / len(xs) < 0.5 else "right"
                glob.append(f"An infrared thermal image of a {'warm' if warm else 'cold'} scene with {k} hot objects.")
                fine.append(f"Thermal infrared image: {k} hot blobs, mostly on the {side}.")
            self._images = (torch.stack(imgs)[:, None].contiguous(), glob, fine)
        return self._images

    def manifest(self) -> Path:
        """A contract-1 manifest of 8-bit PNGs (all split 'train') for tclip.train."""
        if self._manifest is None:
            import numpy as np
            from PIL import Image

            imgs, glob, fine = self.images()
            root = self.work / "data"
            (root / "img").mkdir(parents=True, exist_ok=True)
            lines = []
            for i in range(imgs.shape[0]):
                Image.fromarray(np.round(imgs[i, 0].numpy() * 255).astype(np.uint8)).save(root / "img" / f"{i}.png")
                lines.append(json.dumps({"schema_version": 1, "id": f"gpu-check/train/{i}", "image": f"img/{i}.png",
                                         "split": "train", "global_caption": glob[i], "fine_caption": fine[i]}))
            (root / "manifest.jsonl").write_text("\n".join(lines) + "\n")
            self._manifest = root / "manifest.jsonl"
        return self._manifest


def reset_accelerate() -> None:
    """accelerate's state is a process-wide singleton that refuses a second mixed-precision setting."""
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


def accelerate_mp(ctx: "Ctx", precision: str) -> str:
    """The mixed precision accelerate's (process-wide) state ended up with; on CUDA it must be the one asked for."""
    from accelerate.state import AcceleratorState

    got = AcceleratorState().mixed_precision
    if ctx.cuda:
        expect(got == ACCELERATE_MP[precision], f"accelerate ran with mixed_precision={got!r}, not {ACCELERATE_MP[precision]!r}")
    return got


def _finite(t) -> bool:
    import numpy as np
    import torch

    if isinstance(t, torch.Tensor):
        return bool(torch.isfinite(t.float()).all())
    return bool(np.isfinite(np.asarray(t, dtype=np.float64)).all())


def _max_abs(a, b) -> float:
    import torch

    a = a if isinstance(a, torch.Tensor) else torch.as_tensor(a)
    b = b if isinstance(b, torch.Tensor) else torch.as_tensor(b)
    return float((a.detach().float().cpu() - b.detach().float().cpu()).abs().max())


# ---------------------------------------------------------------------------------------------------------------------
# 1. environment
# ---------------------------------------------------------------------------------------------------------------------
def check_environment(ctx: Ctx, results: dict, fallback_info: dict | None = None) -> None:
    torch = ctx.torch

    def versions() -> dict:
        out: dict[str, Any] = {"python": platform.python_version(), "torch": torch.__version__,
                               "torch_cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version()}
        for mod in ("diffusers", "open_clip", "peft", "accelerate", "transformers", "huggingface_hub",
                    "safetensors", "numpy", "timm", "torchvision", "ftfy", "requests"):
            try:
                m = importlib.import_module(mod)
                out[mod] = f"{getattr(m, '__version__', '?')} ({Path(m.__file__).parent.parent})"
            except Exception as e:  # noqa: BLE001
                out[mod] = f"IMPORT FAILED: {type(e).__name__}: {e}"
        out["fallback_wheels"] = fallback_info
        bad = [k for k in ("diffusers", "open_clip", "peft", "accelerate") if str(out[k]).startswith("IMPORT FAILED")]
        expect(not bad, f"cannot import {bad}")
        return out

    def device() -> dict:
        out: dict[str, Any] = {"requested": ctx.requested, "cuda_available": torch.cuda.is_available()}
        if torch.cuda.is_available():
            p = torch.cuda.get_device_properties(0)
            out.update(name=torch.cuda.get_device_name(0), capability=list(torch.cuda.get_device_capability(0)),
                       total_mem_gib=round(p.total_memory / 2**30, 1), bf16_supported=torch.cuda.is_bf16_supported(),
                       device_count=torch.cuda.device_count(),
                       tf32_matmul=torch.backends.cuda.matmul.allow_tf32, tf32_cudnn=torch.backends.cudnn.allow_tf32,
                       flash_sdp=torch.backends.cuda.flash_sdp_enabled(),
                       mem_efficient_sdp=torch.backends.cuda.mem_efficient_sdp_enabled())
        if ctx.requested.startswith("cuda"):
            expect(torch.cuda.is_available(), "--device cuda but torch.cuda.is_available() is False")
            x = torch.randn(256, 256, device=ctx.device)
            expect(_finite(x @ x), "a CUDA matmul is not finite")
        return out

    def xformers() -> dict:
        import importlib.util

        if importlib.util.find_spec("xformers") is None:
            return {"value": "xformers not installed"}
        try:
            import xformers
            import xformers.ops  # noqa: F401

            return {"value": f"importable {xformers.__version__}"}
        except Exception as e:  # noqa: BLE001 - informational: the pipeline check decides
            return {"value": f"installed but import failed: {type(e).__name__}: {e}"}

    run_sub(results, "versions", versions)
    run_sub(results, "device", device)
    run_sub(results, "xformers", xformers)


# ---------------------------------------------------------------------------------------------------------------------
# 2. T-CLIP training
# ---------------------------------------------------------------------------------------------------------------------
def _tclip_config(ctx: Ctx, precision_key: str, base_steps: int, adapter_steps: int, base: str = "tclip-tiny") -> Path:
    b = ctx.sizes["tclip_batch"]
    cfg = {
        "base": base,
        "mixed_precision": precision_key,
        "base_stage": {"steps": base_steps, "batch_size": b, "warmup": min(2, base_steps), "lr": 2e-3},
        "adapter_stage": {"steps": adapter_steps, "batch_size": b, "warmup": min(1, adapter_steps), "lr": 2e-3},
        "checkpoint_every": 100000,
        "log_every": 1,
        "image_workers": 1,
    }
    cfg["augment"] = {"hflip": True, "shift": 0.1}  # the augmentation path runs on the device too
    path = ctx.work / f"tclip-{base}-{precision_key}.json"
    path.write_text(json.dumps(cfg))
    return path


def _stage_rates(csv_path: Path) -> dict:
    rows = list(csv.DictReader(csv_path.open()))
    expect(rows, f"{csv_path} has no rows")
    out: dict[str, Any] = {"steps_per_s": {}, "loss_first": {}, "loss_last": {}}
    for stage in dict.fromkeys(r["stage"] for r in rows):
        rs = [r for r in rows if r["stage"] == stage]
        losses = [float(r["loss"]) for r in rs]
        expect(all(math.isfinite(v) for v in losses), f"stage {stage}: non-finite loss {losses}")
        out["loss_first"][stage], out["loss_last"][stage] = losses[0], losses[-1]
        if len(rs) >= 2:
            dt = float(rs[-1]["seconds"]) - float(rs[0]["seconds"])
            steps = int(rs[-1]["step"]) - int(rs[0]["step"])
            out["steps_per_s"][stage] = round(steps / dt, 2) if dt > 0 else None
    out["final_loss"] = losses[-1]
    return out


def check_tclip_train(ctx: Ctx, results: dict) -> None:
    import tclip
    from tclip import train as tclip_train

    manifest = ctx.manifest()
    torch = ctx.torch
    imgs, glob, fine = ctx.images()

    def one(precision: str, base: str = "tclip-tiny") -> dict:
        if precision != "fp32":
            ctx.need_cuda(precision)
        reset_accelerate()
        out = ctx.work / (f"tclip-{precision}" if base == "tclip-tiny" else f"tclip-{base}-{precision}")
        cfg = _tclip_config(ctx, ACCELERATE_MP[precision], ctx.sizes["tclip_base_steps"], ctx.sizes["tclip_adapter_steps"], base)
        argv = ["--manifest", str(manifest), "--out", str(out), "--config", str(cfg), "--seed", "0", "--no-progress"]
        if not ctx.cuda:
            argv.append("--cpu")
        ctx.reset_peak()
        t0 = time.perf_counter()
        rc = tclip_train.main(argv)
        wall = time.perf_counter() - t0
        expect(rc == 0, f"tclip.train.main returned {rc}")
        r = _stage_rates(out / "logs" / "loss.csv")
        r.update(wall_s=round(wall, 2), peak_mem_mib=ctx.peak_mib(), mixed_precision=accelerate_mp(ctx, precision),
                 config=json.loads(cfg.read_text()))
        if ctx.cuda:
            expect(r["peak_mem_mib"] and r["peak_mem_mib"] > 0, "no CUDA memory was used: did training run on the CPU?")
        model = tclip.load(out, device=ctx.device)
        with torch.no_grad(), torch.autocast(ctx.device.type, dtype=ctx.dtype(precision), enabled=precision != "fp32"):
            ei = model.encode_image(imgs[:8].to(ctx.device))
            et = model.encode_text(glob[:8], fine[:8])
        expect(_finite(ei) and _finite(et), "embeddings of the trained model are not finite")
        r["embed_device"] = str(ei.device)
        if precision == "fp32" and base == "tclip-tiny":
            ctx.tclip_dir = out
        return r

    for p in PRECISIONS:
        run_sub(results, p, one, p)
    # The CPU default tower is a ResNet (its attention pool carries LoRA through LinearAttentionPool2d).
    rn_precision = "bf16" if ctx.cuda else "fp32"
    run_sub(results, f"resnet_tower_{rn_precision}", one, rn_precision, "tclip-tiny-rn")

    def compare() -> dict:
        ctx.need_cuda()
        if ctx.tclip_dir is None:
            raise Skip("no fp32 T-CLIP folder (the fp32 run failed)")
        x, g, f = imgs[:8], glob[:8], fine[:8]
        cpu = tclip.load(ctx.tclip_dir)
        gpu = tclip.load(ctx.tclip_dir, device=ctx.device)
        with torch.no_grad():
            ref = (cpu.encode_image(x), cpu.encode_text(g, f), cpu.encode_image(x, variant="base"))
            out: dict[str, Any] = {}
            for label, tf32 in (("tf32_default", None), ("tf32_off", False)):
                saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
                if tf32 is not None:
                    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32
                try:
                    got = (gpu.encode_image(x.to(ctx.device)), gpu.encode_text(g, f),
                           gpu.encode_image(x.to(ctx.device), variant="base"))
                finally:
                    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
                out[f"max_abs_diff_{label}"] = max(_max_abs(a, b) for a, b in zip(ref, got))
            with torch.autocast("cuda", dtype=torch.float16):
                half = (gpu.encode_image(x.to(ctx.device)), gpu.encode_text(g, f))
            out["max_abs_diff_autocast_fp16"] = max(_max_abs(a, b) for a, b in zip(ref[:2], half))
        expect(out["max_abs_diff_tf32_off"] < 1e-3, f"CUDA fp32 (TF32 off) vs CPU: {out['max_abs_diff_tf32_off']:.3g} >= 1e-3")
        expect(out["max_abs_diff_tf32_default"] < 2e-2, f"CUDA fp32 (TF32 default) vs CPU: {out['max_abs_diff_tf32_default']:.3g}")
        expect(out["max_abs_diff_autocast_fp16"] < 5e-2, f"CUDA autocast fp16 vs CPU: {out['max_abs_diff_autocast_fp16']:.3g}")
        out["max_abs_diff"] = out["max_abs_diff_tf32_off"]
        return out

    run_sub(results, "cuda_vs_cpu_embeddings", compare)
    reset_accelerate()


# ---------------------------------------------------------------------------------------------------------------------
# 3. TCLIPTextEncoder
# ---------------------------------------------------------------------------------------------------------------------
def _text_encoder(ctx: Ctx, mode: str = "fused"):
    import tclip
    from tclip.text_encoder import TCLIPTextEncoder

    torch = ctx.torch
    if ctx.tclip_dir is not None:
        return TCLIPTextEncoder.from_tclip(ctx.tclip_dir, mode=mode), "trained fp32 T-CLIP"
    torch.manual_seed(0)
    model = tclip.TCLIP.from_base("tclip-tiny").eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.clip.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    return TCLIPTextEncoder.from_tclip(model, mode=mode), "random tclip-tiny with random adapters"


def check_text_encoder(ctx: Ctx, results: dict) -> None:
    torch = ctx.torch
    enc, source = _text_encoder(ctx)
    with torch.no_grad():
        cpu_ref = enc.encode_prompt(PROMPTS, FINE)
    scale = float(cpu_ref.abs().max())
    state: dict[str, Any] = {}

    def one(precision: str) -> dict:
        if precision != "fp32":
            ctx.need_cuda(precision)
        dtype = ctx.dtype(precision)
        e = copy.deepcopy(enc).to(ctx.device, dtype)
        with torch.no_grad():
            out = e.encode_prompt(PROMPTS, FINE)
        expect(out.dtype == dtype, f"output dtype {out.dtype} != {dtype}")
        expect(out.device.type == ctx.device.type, f"output on {out.device}")
        expect(_finite(out), "hidden states not finite")
        r: dict[str, Any] = {"shape": list(out.shape), "source": source, "ref_max_abs": round(scale, 4)}
        if precision == "fp32":
            state["fp32"] = out.float().cpu()
            r["max_abs_diff_vs_cpu"] = _max_abs(out, cpu_ref)
            expect(r["max_abs_diff_vs_cpu"] < 1e-3 * max(1.0, scale), f"fp32 on {ctx.device} vs CPU: {r['max_abs_diff_vs_cpu']:.3g}")
        else:
            ref = state.get("fp32", cpu_ref)
            d = _max_abs(out, ref)
            r["max_abs_diff_vs_fp32"] = d
            r["mean_abs_diff_vs_fp32"] = float((out.float().cpu() - ref).abs().mean())
            tol = (0.02 if precision == "fp16" else 0.08) * max(1.0, scale)
            expect(d < tol, f"{precision} vs fp32 max abs diff {d:.3g} >= {tol:.3g}")
        return r

    for p in PRECISIONS:
        run_sub(results, p, one, p)


# ---------------------------------------------------------------------------------------------------------------------
# 4. ThermalDiffusionPipeline
# ---------------------------------------------------------------------------------------------------------------------
def _gen(ctx: Ctx, seed: int = 0, device=None):
    return ctx.torch.Generator(device=device or ctx.device).manual_seed(seed)


def check_pipeline(ctx: Ctx, results: dict) -> None:
    import numpy as np
    import PIL.Image

    from pipelines.testing import tiny_pipeline

    torch = ctx.torch
    steps = ctx.sizes["pipe_steps"]
    kw = dict(prompt=PROMPTS, prompt_fine=FINE, num_inference_steps=steps, guidance_scale=3.0)
    store: dict[str, Any] = {}

    def one(precision: str) -> dict:
        if precision != "fp32":
            ctx.need_cuda(precision)
        dtype = ctx.dtype(precision)
        pipe = tiny_pipeline().to(ctx.device, dtype)
        for name in ("unet", "vae", "text_encoder"):
            m = getattr(pipe, name)
            expect(m.dtype == dtype and m.device.type == ctx.device.type, f"{name} is {m.dtype} on {m.device}")
        a = pipe(**kw, generator=_gen(ctx), output_type="np").images
        b = pipe(**kw, generator=_gen(ctx), output_type="np").images
        r: dict[str, Any] = {"shape": list(a.shape), "identical": bool(np.array_equal(a, b)), "max_abs_diff": _max_abs(a, b)}
        expect(a.dtype == np.float32 and a.shape == (2, 16, 16, 1), f"np output {a.dtype} {a.shape}")
        expect(_finite(a) and a.min() >= 0 and a.max() <= 1, "np output not finite or outside [0, 1]")
        expect(r["identical"], f"same seed, different output (max abs diff {r['max_abs_diff']:.3g})")
        u = pipe(**kw, generator=_gen(ctx), output_type="uint16").images
        expect(u.dtype == np.uint16 and u.shape == a.shape, f"uint16 output {u.dtype} {u.shape}")
        r["uint16_vs_np"] = float(np.abs(u / 65535.0 - a).max())
        expect(r["uint16_vs_np"] <= 1.0 / 65535 + 1e-6, f"uint16 output differs from np output by {r['uint16_vs_np']:.3g}")
        p = pipe(**kw, generator=_gen(ctx), output_type="pil").images
        expect(isinstance(p[0], PIL.Image.Image) and p[0].mode == "L", "pil output is not mode L")
        # A CPU generator with the pipeline on the device (what thermgen.train.unet.sample_images does).
        c = pipe(**kw, generator=torch.Generator().manual_seed(0), output_type="np").images
        expect(_finite(c), "CPU-generator output not finite")
        r["xformers_enabled_by_helper"] = pipe.enable_xformers_if_available()
        if r["xformers_enabled_by_helper"]:
            pipe.disable_xformers_memory_efficient_attention()
        if precision == "fp32":
            store["fp32_cpu_gen"] = c
        return r

    for p in PRECISIONS:
        run_sub(results, p, one, p)

    def cuda_vs_cpu() -> dict:
        ctx.need_cuda()
        if "fp32_cpu_gen" not in store:
            raise Skip("the fp32 run failed")
        pipe = tiny_pipeline()
        ref = pipe(**kw, generator=torch.Generator().manual_seed(0), output_type="np").images
        d = _max_abs(ref, store["fp32_cpu_gen"])
        expect(d < 1e-2, f"CUDA fp32 vs CPU fp32 images differ by {d:.3g}")
        return {"max_abs_diff": d}

    run_sub(results, "fp32_cuda_vs_cpu", cuda_vs_cpu)

    def offload(output_type: str) -> dict:
        ctx.need_cuda()
        ref_pipe = tiny_pipeline().to(ctx.device, torch.float16)
        ref = ref_pipe(**kw, generator=torch.Generator().manual_seed(0), output_type=output_type).images
        del ref_pipe
        pipe = tiny_pipeline().to(torch.float16)
        pipe.enable_model_cpu_offload()
        out = pipe(**kw, generator=torch.Generator().manual_seed(0), output_type=output_type).images
        r = {"max_abs_diff": _max_abs(out, ref), "unet_device_after": str(pipe.unet.device)}
        expect(_finite(out), "offloaded output not finite")
        expect(r["max_abs_diff"] < 1e-2, f"offloaded output differs from the on-device run by {r['max_abs_diff']:.3g}")
        again = pipe(**kw, generator=torch.Generator().manual_seed(0), output_type=output_type).images
        expect(_finite(again), "second offloaded call not finite")
        pipe.remove_all_hooks()
        return r

    run_sub(results, "cpu_offload_latent", offload, "latent")
    run_sub(results, "cpu_offload_np", offload, "np")

    def xformers() -> dict:
        ctx.need_cuda()
        try:
            importlib.import_module("xformers.ops")
        except ImportError as e:
            raise Skip(f"xformers not installed ({e})")
        pipe = tiny_pipeline().to(ctx.device, torch.float16)
        sdpa = pipe(**kw, generator=_gen(ctx), output_type="np").images
        pipe.enable_xformers_memory_efficient_attention()
        xf = pipe(**kw, generator=_gen(ctx), output_type="np").images
        pipe.disable_xformers_memory_efficient_attention()
        d = _max_abs(sdpa, xf)
        expect(_finite(xf) and d < 2e-2, f"xformers vs SDPA max abs diff {d:.3g}")
        return {"max_abs_diff": d}

    run_sub(results, "xformers_vs_sdpa", xformers)

    def from_pretrained(precision: str) -> dict:
        ctx.need_cuda(precision)
        from pipelines import ThermalDiffusionPipeline

        folder = ctx.work / "tiny-pipeline"
        if not (folder / "model_index.json").is_file():
            tiny_pipeline().save_pretrained(folder)
        dtype = ctx.dtype(precision)
        pipe = ThermalDiffusionPipeline.from_pretrained(folder, torch_dtype=dtype, local_files_only=True).to(ctx.device)
        pipe.set_progress_bar_config(disable=True)
        dtypes = {n: str(getattr(pipe, n).dtype) for n in ("unet", "vae", "text_encoder")}
        expect(all(d == str(dtype) for d in dtypes.values()), f"component dtypes {dtypes}")
        out = pipe(**kw, generator=_gen(ctx), output_type="np").images
        expect(_finite(out), "output not finite")
        return {"dtypes": dtypes}

    run_sub(results, "from_pretrained_torch_dtype_fp16", from_pretrained, "fp16")


def default_pipeline(seed: int = 0):
    """A ThermalDiffusionPipeline sized like configs/cpu-default.yaml (random weights)."""
    from pipelines import ThermalDiffusionPipeline
    from tclip.model import get_arch_config
    from tclip.text_encoder import TCLIPTextEncoder
    from thermgen.train.config import defaults
    from thermgen.train.unet import build_unet, make_inference_scheduler
    from thermgen.train.vae import build_vae, validate_vae_config

    import torch

    cfg = defaults()
    arch = get_arch_config("tclip-tiny")
    torch.manual_seed(seed)
    te = TCLIPTextEncoder(embed_dim=arch["embed_dim"], text_cfg=arch["text_cfg"], mode=cfg["unet"]["conditioning"]).eval()
    vae_cfg = validate_vae_config({})
    torch.manual_seed(seed + 1)
    vae = build_vae(vae_cfg)
    factor = 2 ** (len(vae.config.block_out_channels) - 1)
    unet = build_unet(cfg["unet"], latent_channels=vae.config.latent_channels,
                      latent_size=cfg["train"]["resolution"] // factor, text_width=te.hidden_size, seed=seed + 2)
    pipe = ThermalDiffusionPipeline(vae=vae, text_encoder=te, unet=unet, scheduler=make_inference_scheduler(cfg))
    pipe.set_progress_bar_config(disable=True)
    return pipe, cfg


def check_pipeline_throughput(ctx: Ctx, results: dict) -> None:
    import numpy as np

    base, cfg = default_pipeline()
    res = cfg["train"]["resolution"]
    steps = ctx.sizes["throughput_steps"]
    n_unet = sum(p.numel() for p in base.unet.parameters())

    def one(precision: str) -> dict:
        if precision != "fp32":
            ctx.need_cuda(precision)
        pipe = copy.deepcopy(base).to(ctx.device, ctx.dtype(precision))
        pipe.set_progress_bar_config(disable=True)
        r: dict[str, Any] = {"images_per_s": {}, "seconds_per_run": {}, "resolution": res, "steps": steps,
                             "unet_parameters": n_unet}
        ctx.reset_peak()
        for batch in ctx.sizes["throughput_batches"]:
            prompts = (PROMPTS * batch)[:batch]
            fine = (FINE * batch)[:batch]
            call = dict(prompt=prompts, prompt_fine=fine, guidance_scale=float(cfg["train"]["guidance_scale"]),
                        height=res, width=res, output_type="np")
            pipe(**call, num_inference_steps=2, generator=_gen(ctx))  # warm-up (kernels, allocator)
            ctx.sync()
            t0 = time.perf_counter()
            out = pipe(**call, num_inference_steps=steps, generator=_gen(ctx)).images
            ctx.sync()
            dt = time.perf_counter() - t0
            expect(_finite(out) and out.shape == (batch, res, res, 1), f"batch {batch}: output {out.shape} not finite")
            r["images_per_s"][f"b{batch}"] = round(batch / dt, 2)
            r["seconds_per_run"][f"b{batch}"] = round(dt, 3)
            r.setdefault("pixel_mean", {})[f"b{batch}"] = round(float(np.mean(out)), 4)
        r["peak_mem_mib"] = ctx.peak_mib()
        return r

    for p in PRECISIONS:
        run_sub(results, p, one, p)
    fp32, fp16 = results.get("fp32", {}), results.get("fp16", {})
    if fp32.get("status") == "passed" and fp16.get("status") == "passed":
        results["fp32"]["fp16_speedup"] = {k: round(fp16["images_per_s"][k] / v, 2) for k, v in fp32["images_per_s"].items()}


# ---------------------------------------------------------------------------------------------------------------------
# 5. UNet and VAE training
# ---------------------------------------------------------------------------------------------------------------------
def _unet_overrides(ctx: Ctx, precision: str, steps: int) -> list[str]:
    return [
        f"train.max_train_steps={steps}",
        f"train.mixed_precision={ACCELERATE_MP[precision]}",
        f"run.device={'cuda' if ctx.cuda else 'cpu'}",
        f"train.train_batch_size={ctx.sizes['unet_batch']}",
        "train.lr_warmup_steps=1",
        "train.checkpointing_steps=100000",
        "train.validation_steps=100000",
    ]


def _unet_log_rate(path: Path) -> dict:
    rows = list(csv.DictReader(path.open()))
    expect(rows, f"{path} has no rows")
    losses = [float(r["loss"]) for r in rows]
    expect(all(math.isfinite(v) for v in losses), f"non-finite UNet loss: {losses}")
    out: dict[str, Any] = {"final_loss": losses[-1], "loss_first": losses[0]}
    if len(rows) >= 2:
        dt = float(rows[-1]["seconds"]) - float(rows[0]["seconds"])
        out["steps_per_s"] = round((len(rows) - 1) / dt, 2) if dt > 0 else None
    return out


def check_unet_train(ctx: Ctx, results: dict) -> None:
    from thermgen.train import unet as unet_mod

    state: dict[str, Any] = {}

    def encode() -> dict:
        pipe, _ = default_pipeline()
        imgs, glob, fine = ctx.images()
        cache = unet_mod.encode_training_set(imgs, glob, fine, pipe.vae, pipe.text_encoder, batch_size=16,
                                             device=ctx.device, progress=False)
        for k in unet_mod.CACHE_KEYS:
            expect(_finite(cache[k]), f"cache {k} not finite")
        expect(cache["latent_mean"].shape[1:] == (4, 16, 16), f"latent shape {tuple(cache['latent_mean'].shape)}")
        path = ctx.work / "unet_cache.safetensors"
        unet_mod.save_cache(cache, path)
        state["cache"] = path
        del pipe
        return {"latent_shape": list(cache["latent_mean"].shape), "text_shape": list(cache["text_states"].shape),
                "latent_std": round(float(cache["latent_mean"].std()), 4)}

    run_sub(results, "encode_training_set", encode)

    def one(precision: str) -> dict:
        if precision != "fp32":
            ctx.need_cuda(precision)
        if "cache" not in state:
            raise Skip("no training cache (encode_training_set failed)")
        reset_accelerate()
        out = ctx.work / f"unet-{precision}"
        ctx.reset_peak()
        t0 = time.perf_counter()
        rc = unet_mod.main(["--cache", str(state["cache"]), "--out", str(out), "--no-progress",
                            *_unet_overrides(ctx, precision, ctx.sizes["unet_steps"])])
        wall = time.perf_counter() - t0
        expect(rc == 0, f"thermgen.train.unet.main returned {rc}")
        report = json.loads((out / "train_report.json").read_text())
        r = _unet_log_rate(out / "logs" / "train_log.csv")
        expect(math.isfinite(report["final_loss"]), f"final loss {report['final_loss']}")
        r.update(wall_s=round(wall, 2), peak_mem_mib=ctx.peak_mib(), steps=report["steps"],
                 mixed_precision=accelerate_mp(ctx, precision))
        if ctx.cuda:
            expect(r["peak_mem_mib"] and r["peak_mem_mib"] > 0, "no CUDA memory was used: did training run on the CPU?")
        return r

    for p in PRECISIONS:
        run_sub(results, p, one, p)
    reset_accelerate()


def _vae_cfg(ctx: Ctx, precision: str, steps: int) -> dict:
    return {"steps": steps, "batch_size": ctx.sizes["vae_batch"], "mixed_precision": ACCELERATE_MP[precision],
            "resolution": ctx.sizes["vae_resolution"], "log_every": 1, "num_preview": 2, "eval_batch_size": 16,
            "lr_warmup_steps": 1}


def check_vae_train(ctx: Ctx, results: dict) -> None:
    from thermgen.train.vae import train_vae

    imgs, _, _ = ctx.images()
    n_val = max(2, imgs.shape[0] // 8)

    def one(precision: str) -> dict:
        if precision != "fp32":
            ctx.need_cuda(precision)
        reset_accelerate()
        ctx.reset_peak()
        t0 = time.perf_counter()
        rep = train_vae(_vae_cfg(ctx, precision, ctx.sizes["vae_steps"]), imgs[n_val:], imgs[:n_val],
                        ctx.work / f"vae-{precision}", show_progress=False)
        wall = time.perf_counter() - t0
        expect(rep["final_loss"] is not None and math.isfinite(rep["final_loss"]), f"final loss {rep['final_loss']}")
        expect(all(math.isfinite(v) for v in rep["val"].values()), f"val metrics {rep['val']}")
        expect(math.isfinite(rep["scaling_factor"]), f"scaling factor {rep['scaling_factor']}")
        rows = list(csv.DictReader((ctx.work / f"vae-{precision}" / "vae_log.csv").open()))
        return {"final_loss": rep["final_loss"], "val_l1": rep["val"]["l1"], "wall_s": round(wall, 2),
                "mixed_precision": accelerate_mp(ctx, precision),
                "steps_per_s": round(rep["steps"] / wall, 2), "logged_rows": len(rows), "peak_mem_mib": ctx.peak_mib(),
                "note": "steps_per_s includes model build, evaluation and plots"}

    for p in PRECISIONS:
        run_sub(results, p, one, p)
    reset_accelerate()


# ---------------------------------------------------------------------------------------------------------------------
# 6. The recipe's stage order in one process
# ---------------------------------------------------------------------------------------------------------------------
def check_recipe_stages(ctx: Ctx, results: dict) -> None:
    """python -m thermgen.train calls tclip.train.main, train_vae and train_unet in one process (recipe.py),
    calling `reset_accelerate_state()` before each stage as `run_recipe` does."""
    from thermgen.train.recipe import reset_accelerate_state
    from tclip import train as tclip_train
    from thermgen.train import unet as unet_mod
    from thermgen.train.vae import train_vae

    imgs, _, _ = ctx.images()
    reset_accelerate()
    state: dict[str, Any] = {}

    def tclip_auto() -> dict:
        cfg = _tclip_config(ctx, "auto", 1, 1)
        argv = ["--manifest", str(ctx.manifest()), "--out", str(ctx.work / "recipe-tclip"), "--config", str(cfg),
                "--no-progress"]
        rc = tclip_train.main(argv)
        expect(rc == 0, f"tclip.train.main returned {rc}")
        from accelerate.state import AcceleratorState

        state["ok"] = True
        return {"value": f"accelerate mixed_precision after T-CLIP: {AcceleratorState().mixed_precision}"}

    def vae_no() -> dict:
        if not state.get("ok"):
            raise Skip("the T-CLIP stage failed")
        reset_accelerate_state()
        rep = train_vae(_vae_cfg(ctx, "fp32", 1), imgs[2:], imgs[:2], ctx.work / "recipe-vae", show_progress=False)
        expect(math.isfinite(rep["final_loss"]), f"final loss {rep['final_loss']}")
        return {"final_loss": rep["final_loss"]}

    def unet_no() -> dict:
        if not state.get("ok"):
            raise Skip("the T-CLIP stage failed")
        cache = ctx.work / "unet_cache.safetensors"
        if not cache.is_file():
            raise Skip("no UNet training cache (unet_train/encode_training_set failed)")
        reset_accelerate_state()
        rc = unet_mod.main(["--cache", str(cache), "--out", str(ctx.work / "recipe-unet"), "--no-progress",
                            *_unet_overrides(ctx, "fp32", 1)])
        expect(rc == 0, f"thermgen.train.unet.main returned {rc}")
        return {}

    run_sub(results, "tclip_mixed_precision_auto", tclip_auto)
    run_sub(results, "then_vae_mixed_precision_no", vae_no)
    run_sub(results, "then_unet_mixed_precision_no", unet_no)
    reset_accelerate()


# ---------------------------------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------------------------------
def write_report(out: Path, report: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / (REPORT_JSON + ".tmp")
    tmp.write_text(json.dumps(report, indent=2, default=str) + "\n")
    tmp.replace(out / REPORT_JSON)
    env = report["checks"].get("environment", {}).get("results", {})
    dev = env.get("device", {})
    lines = [
        f"# GPU check: {report['status']}",
        "",
        f"device: {dev.get('name', report['device'])} (requested {report['device']}, quick={report['quick']}); "
        f"torch {report.get('torch')}; {report['seconds_total']} s",
        "",
        "| check | sub-check | status | s | details |",
        "|---|---|---|---|---|",
    ]
    for name, c in report["checks"].items():
        lines.append(f"| **{name}** | | {c['status']} | {c['seconds']} | {c.get('error', c.get('reason', ''))} |")
        for k, r in c["results"].items():
            detail = r.get("reason") or r.get("error") or summary(r)
            lines.append(f"| | {k} | {r['status']} | {r.get('seconds', '')} | {detail.replace('|', '/')[:300]} |")
    if report["failed"]:
        lines += ["", "Failed: " + ", ".join(report["failed"]) + " (tracebacks in gpu_report.json)"]
    (out / REPORT_MD).write_text("\n".join(lines) + "\n")


CHECK_FUNCS = {
    "environment": check_environment,
    "tclip_train": check_tclip_train,
    "text_encoder": check_text_encoder,
    "pipeline": check_pipeline,
    "pipeline_throughput": check_pipeline_throughput,
    "unet_train": check_unet_train,
    "vae_train": check_vae_train,
    "recipe_stages": check_recipe_stages,
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m thermgen.bench.gpu", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, type=Path, help="folder for gpu_report.json and gpu_report.md")
    p.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    p.add_argument("--quick", action="store_true", help="smallest sizes (the CPU test uses --device cpu --quick)")
    p.add_argument("--only", default=None, help=f"comma-separated subset of {','.join(CHECKS)}")
    p.add_argument("--fallback-wheels", type=Path, default=REPO / ".whl" / "fallback",
                   help="pure-python wheels used only where the machine lacks a dependency (default .whl/fallback)")
    p.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one, deleted)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    t_start = time.perf_counter()
    selected = CHECKS if not args.only else tuple(c.strip() for c in args.only.split(",") if c.strip())
    unknown = [c for c in selected if c not in CHECKS]
    if unknown:
        print(f"unknown checks {unknown}; known: {', '.join(CHECKS)}", file=sys.stderr)
        return 2
    fb = activate_fallbacks(args.fallback_wheels)
    log(f"fallback wheels: {fb['activated'] or 'none needed'}{'; unmet: ' + str(fb['unmet']) if fb['unmet'] else ''}")
    import torch

    report: dict[str, Any] = {"schema_version": 1, "status": "running", "device": args.device, "quick": args.quick,
                              "torch": torch.__version__, "python": platform.python_version(),
                              "argv": sys.argv, "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
                              "seconds_total": None, "failed": [], "checks": {}}
    work = args.work or Path(tempfile.mkdtemp(prefix="thermgen-gpu-check-"))
    work.mkdir(parents=True, exist_ok=True)
    device = args.device
    if device.startswith("cuda") and not torch.cuda.is_available():
        log("CUDA requested but not available: the environment check fails and the rest runs on the CPU")
    ctx = Ctx(device if (torch.cuda.is_available() or not device.startswith("cuda")) else "cpu", args.quick, work)
    ctx.requested = device
    try:
        for name in selected:
            fn = CHECK_FUNCS[name]
            if name == "environment":
                entry = run_check(name, lambda c, r: check_environment(c, r, fb), ctx)
            else:
                entry = run_check(name, fn, ctx)
            report["checks"][name] = entry
            if ctx.cuda:
                torch.cuda.empty_cache()
            report["seconds_total"] = round(time.perf_counter() - t_start, 1)
            report["failed"] = failures(report["checks"])
            write_report(args.out, report)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    report["failed"] = failures(report["checks"])
    report["status"] = "failed" if report["failed"] else "passed"
    report["seconds_total"] = round(time.perf_counter() - t_start, 1)
    write_report(args.out, report)
    log(f"done in {report['seconds_total']} s: {report['status']}"
        + (f"; failed: {', '.join(report['failed'])}" if report["failed"] else ""))
    log(f"report: {args.out / REPORT_JSON}, {args.out / REPORT_MD}")
    return 1 if report["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
