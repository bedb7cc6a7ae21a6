"""thermgen.bench.gpu: the prepared GPU check, run here in its CPU quick mode (seconds on 2 cores)."""

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from thermgen.bench import gpu

REPO = Path(__file__).resolve().parents[1]

# Sub-checks that must really run (and pass) on the CPU; everything else must be skipped as needing CUDA.
CPU_RUN = {
    "environment": {"versions", "device", "xformers"},
    "tclip_train": {"fp32", "resnet_tower_fp32"},
    "text_encoder": {"fp32"},
    "pipeline": {"fp32"},
    "pipeline_throughput": {"fp32"},
    "unet_train": {"encode_training_set", "fp32"},
    "vae_train": {"fp32"},
    "recipe_stages": {"tclip_mixed_precision_auto", "then_vae_mixed_precision_no", "then_unet_mixed_precision_no"},
}


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """`python -m thermgen.bench.gpu --device cpu --quick` exactly as the device runs it (a subprocess)."""
    out = tmp_path_factory.mktemp("gpu-check")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-m", "thermgen.bench.gpu", "--device", "cpu", "--quick", "--out", str(out)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    return proc, out


def test_quick_cpu_run_exits_0_and_reports_every_check(quick_run):
    proc, out = quick_run
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    report = json.loads((out / "gpu_report.json").read_text())
    assert report["status"] == "passed" and report["failed"] == []
    assert list(report["checks"]) == list(gpu.CHECKS)
    for name, check in report["checks"].items():
        assert check["status"] in ("passed", "skipped"), (name, check)
        assert check["results"], name
        for key, r in check["results"].items():
            assert r["status"] in ("passed", "skipped"), (name, key, r)
    md = (out / "gpu_report.md").read_text()
    for name in gpu.CHECKS:
        assert f"| **{name}** |" in md


def test_cpu_checks_really_ran_and_cuda_ones_were_skipped(quick_run):
    _, out = quick_run
    checks = json.loads((out / "gpu_report.json").read_text())["checks"]
    for name, must_pass in CPU_RUN.items():
        results = checks[name]["results"]
        assert checks[name]["status"] == "passed", name
        for key, r in results.items():
            if key in must_pass:
                assert r["status"] == "passed", (name, key, r)
            else:
                assert r["status"] == "skipped" and "CUDA" in r["reason"], (name, key, r)
        assert must_pass <= set(results), (name, set(results))
    tc = checks["tclip_train"]["results"]["fp32"]
    assert tc["steps_per_s"]["base"] > 0 and tc["final_loss"] > 0 and tc["embed_device"] == "cpu"
    assert set(tc["loss_first"]) == {"base", "global", "fine"}
    assert checks["pipeline"]["results"]["fp32"]["identical"] is True
    assert checks["pipeline_throughput"]["results"]["fp32"]["images_per_s"]["b2"] > 0
    assert checks["unet_train"]["results"]["fp32"]["steps"] == 2
    assert checks["unet_train"]["results"]["encode_training_set"]["latent_shape"] == [16, 4, 16, 16]
    assert checks["text_encoder"]["results"]["fp32"]["max_abs_diff_vs_cpu"] == 0.0
    assert checks["environment"]["results"]["xformers"]["value"]


def test_a_failing_sub_check_fails_its_check_and_the_run():
    def check(ctx, results):
        gpu.run_sub(results, "ok", lambda: {"value": 1})
        gpu.run_sub(results, "cuda", lambda: (_ for _ in ()).throw(gpu.Skip("needs CUDA")))
        gpu.run_sub(results, "bad", lambda: gpu.expect(False, "boom"))

    entry = gpu.run_check("demo", check, None)
    assert entry["status"] == "failed"
    assert entry["results"]["bad"]["status"] == "failed" and "boom" in entry["results"]["bad"]["traceback"]
    assert entry["results"]["cuda"]["status"] == "skipped"
    assert gpu.failures({"demo": entry}) == ["demo/bad"]
    crashed = gpu.run_check("crash", lambda ctx, results: 1 / 0, None)
    assert crashed["status"] == "failed" and gpu.failures({"crash": crashed}) == ["crash"]
    assert gpu.aggregate({"a": {"status": "skipped"}}) == "skipped"
    assert gpu.aggregate({"a": {"status": "skipped"}, "b": {"status": "passed"}}) == "passed"


def test_fallback_plan_adds_only_missing_or_rejected_packages():
    wheels = {"requests": ("2.34.2", ["urllib3<3,>=1.26", "idna<4,>=2.5"]), "urllib3": ("2.8.0", []),
              "idna": ("3.20", []), "huggingface_hub": ("1.33.0", ["httpx<1,>=0.23.0"])}
    installed = {"idna": "3.7", "huggingface_hub": "1.10.0", "numpy": "2.1.0", "httpx": "0.28.1"}.get
    plan, notes = gpu.fallback_plan(
        wheels, installed, ["huggingface-hub<3.0,>=1.32.0", "numpy", "requests", "safetensors>=0.8.0",
                            'tomli; python_version < "3.0"'])
    assert plan == {"huggingface_hub": "prepend", "requests": "append", "urllib3": "append"}
    assert set(notes) == {"safetensors"}  # missing and no wheel for it: reported, not fatal
    # Everything satisfied: nothing is touched.
    assert gpu.fallback_plan(wheels, {"huggingface_hub": "1.40.0", "requests": "2.0"}.get,
                             ["huggingface_hub>=1.32", "requests"]) == ({}, {})


def test_fallback_wheels_are_unpacked_only_when_needed(tmp_path, monkeypatch):
    whl = tmp_path / "thermgen_absent_pkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(whl, "w") as zf:
        zf.writestr("thermgen_absent_pkg/__init__.py", "VALUE = 42\n")
        zf.writestr("thermgen_absent_pkg-1.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: thermgen-absent-pkg\nVersion: 1.0\n")
    assert gpu.wheel_info(whl) == ("thermgen_absent_pkg", "1.0", [])
    monkeypatch.setattr(sys, "path", list(sys.path))
    info = gpu.activate_fallbacks(tmp_path, roots=(), site=tmp_path / "site")
    assert info["activated"] == {}  # nothing requires it
    monkeypatch.setattr(gpu.importlib.metadata, "requires",
                        lambda dist: ["thermgen-absent-pkg>=1.0"] if dist == "fake_root" else [])
    info = gpu.activate_fallbacks(tmp_path, roots=("fake_root",), site=tmp_path / "site")
    assert list(info["activated"]) == ["thermgen_absent_pkg"]
    assert sys.path[-1] == str(tmp_path / "site" / "thermgen_absent_pkg-1.0")  # appended: it was missing
    import importlib

    assert importlib.import_module("thermgen_absent_pkg").VALUE == 42
    sys.modules.pop("thermgen_absent_pkg", None)


def test_wheel_folder_when_present_holds_the_device_wheels():
    folder = REPO / ".whl"
    if not folder.is_dir():
        pytest.skip("no .whl folder (prepared only for device runs)")
    names = {gpu.wheel_info(w)[0] for w in folder.glob("*.whl")}
    assert {"diffusers", "open_clip_torch", "ftfy", "wcwidth"} <= names
    assert not any(w.name.startswith(("torch-", "torchvision-")) for w in folder.rglob("*.whl"))  # the device's own
    assert sum(w.stat().st_size for w in folder.rglob("*.whl")) < 20 * 2**20
