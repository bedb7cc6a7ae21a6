"""thermgen.bench.gpu_throughput: the pipeline throughput benchmark, run here in its CPU quick mode (seconds)."""

import json
import os
import subprocess
import sys
from pathlib import Path

from thermgen.bench import gpu_throughput

REPO = Path(__file__).resolve().parents[1]


def test_quick_cpu_run_writes_figures_and_marks_half_precision_as_needing_cuda(tmp_path):
    """`python -m thermgen.bench.gpu_throughput --device cpu --quick` as a subprocess, as a user runs it."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-m", "thermgen.bench.gpu_throughput", "--device", "cpu", "--quick",
                           "--out", str(tmp_path)], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    report = json.loads((tmp_path / "gpu_throughput.json").read_text())
    assert report["device"] == "cpu" and report["batches"] == [2] and report["steps"] == 2
    assert report["environment"]["torch"] and report["environment"]["diffusers"]
    fp32 = report["results"]["fp32"]
    assert fp32["images_per_s"]["b2"] > 0 and fp32["finite"] == {"b2": True} and fp32["peak_mem_mib"] is None
    assert report["results"]["fp16"] == {"not_run": "needs CUDA"} == report["results"]["bf16"]
    md = (tmp_path / "gpu_throughput.md").read_text()
    assert "| fp32 | 2 |" in md and "| fp16 | | not run: needs CUDA |" in md
    assert "fp32: images/s" in proc.stdout


def test_cuda_requested_without_cuda_is_an_error(tmp_path, capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_throughput.main(["--out", str(tmp_path)]) == 2
    assert "--device cpu" in capsys.readouterr().err
    assert not (tmp_path / "gpu_throughput.json").exists()


def test_unknown_precision_is_named(tmp_path, capsys):
    assert gpu_throughput.main(["--out", str(tmp_path), "--device", "cpu", "--precisions", "fp8"]) == 2
    assert "fp8" in capsys.readouterr().err
