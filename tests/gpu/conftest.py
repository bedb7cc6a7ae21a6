"""Shared pieces of the CUDA tests (``pytest -m gpu`` on a GPU machine; skipped without CUDA, see tests/conftest.py)."""

from __future__ import annotations

import json

import pytest


@pytest.fixture
def precision(request):
    """The parametrized precision name; bf16 skips on a GPU without bf16."""
    import torch

    p = request.param
    if p == "bf16" and torch.cuda.is_available() and not torch.cuda.is_bf16_supported():
        pytest.skip("bf16 not supported on this GPU")
    return p


@pytest.fixture
def cuda():
    import torch

    torch.zeros(1, device="cuda")  # initialise CUDA before the memory-statistics calls
    return torch.device("cuda")


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    """accelerate's state is a process-wide singleton that refuses a second mixed-precision setting."""
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    yield
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


@pytest.fixture(scope="session")
def thermal_images():
    """(32, 1, 64, 64) float32 in [0, 1]: warm/cold gradient backgrounds with hot blobs; global and fine captions."""
    import torch

    n, size = 32, 64
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
    return torch.stack(imgs)[:, None].contiguous(), glob, fine


@pytest.fixture(scope="session")
def manifest(tmp_path_factory, thermal_images):
    """A contract-1 manifest of 8-bit PNGs (all split 'train') for tclip.train."""
    import numpy as np
    from PIL import Image

    imgs, glob, fine = thermal_images
    root = tmp_path_factory.mktemp("gpu-data")
    (root / "img").mkdir()
    lines = []
    for i in range(imgs.shape[0]):
        Image.fromarray(np.round(imgs[i, 0].numpy() * 255).astype(np.uint8)).save(root / "img" / f"{i}.png")
        lines.append(json.dumps({"schema_version": 1, "id": f"gpu-test/train/{i}", "image": f"img/{i}.png",
                                 "split": "train", "global_caption": glob[i], "fine_caption": fine[i]}))
    (root / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    return root / "manifest.jsonl"
