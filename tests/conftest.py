import ipaddress
import os
import socket
from pathlib import Path

import pytest

# Tripwire: nothing in the test suite may reach a model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
# Under pytest-xdist (`pytest -n N`, the README's command) each worker runs on one thread, so N workers share the cores
# instead of each starting a thread per core; read by torch at import, which comes later (test modules).
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")



class NetworkUsed(RuntimeError):
    """A test tried to open a connection off this machine."""


_connect = socket.socket.connect


def _local_only_connect(self, address):
    """Tests may talk to this machine (torchrun's gloo rendezvous, the OpenAI-backend test server) only."""
    if self.family in (socket.AF_INET, socket.AF_INET6):
        host = address[0]
        try:
            local = ipaddress.ip_address(host).is_loopback
        except ValueError:
            local = host == "localhost"
        if not local:
            raise NetworkUsed(f"test tried to connect to {address!r}; the suite must run offline")
    return _connect(self, address)


socket.socket.connect = _local_only_connect  # the tripwire for code paths that ignore HF_HUB_OFFLINE

NEEDS_CUDA = "needs CUDA: run `pytest -m gpu` on a GPU machine"


def pytest_collection_modifyitems(config, items):
    """Tests marked gpu (tests/gpu/) are collected everywhere and skipped, with the reason, where CUDA is absent."""
    gpu_items = [item for item in items if item.get_closest_marker("gpu")]
    if not gpu_items:
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason=NEEDS_CUDA)
    for item in gpu_items:
        item.add_marker(skip)


REPO = Path(__file__).resolve().parents[1]
HIT_UAV = Path(os.environ.get("THERMGEN_HIT_UAV", REPO.parent / "shared" / "data" / "hit-uav"))


@pytest.fixture(scope="session")
def hit_uav_root() -> Path:
    """The HIT-UAV subset beside the repository (../shared/data/hit-uav); tests skip without it."""
    if not (HIT_UAV / "normal_json" / "annotations").is_dir():
        pytest.skip(f"HIT-UAV not found at {HIT_UAV} (set THERMGEN_HIT_UAV)")
    return HIT_UAV


@pytest.fixture(scope="session")
def tiny_tclip():
    """A tiny T-CLIP ("tclip-tiny", random base) with non-zero, distinct global/fine adapters; eval mode.

    LoRA B matrices start at zero (adapters would be no-ops), so they are filled from a fixed generator.
    Shared read-only: tests must not train or modify it.
    """
    import torch

    import tclip

    torch.manual_seed(0)
    m = tclip.TCLIP.from_base("tclip-tiny").eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in m.clip.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    return m
