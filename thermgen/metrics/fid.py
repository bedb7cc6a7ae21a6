"""FID and KID between real and generated thermal images, through clean-fid ("clean" mode).

The numbers are clean-fid's: features come through clean-fid's own PIL-bicubic resizer
(``cleanfid.resize.build_resizer("clean")``) and tensor conversion (``cleanfid.utils.ResizeDataset``),
batches through ``cleanfid.fid.get_batch_features``, FID as ``cleanfid.fid.fid_from_feats`` defines it (its
matrix square-root trace taken exactly, without SciPy's ``sqrtm``: :func:`fid_from_features`) and
KID from ``cleanfid.fid.kernel_distance``. What we add happens *before* clean-fid's processing and
is applied identically to the real and the generated side:

**Thermal -> 8-bit grey -> RGB.** clean-fid opens every file with ``PIL.Image.convert("RGB")``,
which *clips* 16-bit thermal frames at 255 (a 16-bit frame comes out nearly all white). So every
image is read with the project's reader :func:`thermgen.io.read_thermal` as float ``(H, W)`` in
[0, 1] by an explicit rule ``norm``:

- ``"fixed"`` (default, the rule the models are trained with): divide by the stored type's full
  range, 8-bit by 255 and 16-bit by 65535, so absolute levels survive (night stays darker than
  day). 8-bit images pass through unchanged; 16-bit ones become ``round(v / 257)``.
- ``"percentile"``: per-image 1-99 percentile stretch. Only for raw radiometric counts that fill a
  sliver of the 16-bit range; it discards absolute level.

True-colour files are an error (``color="luma"`` converts them instead; grey stored as RGB is
accepted as grey). The grey image is quantised to 8 bits (``rint(255 x)``), replicated to three
channels and handed to clean-fid.

**Resolution.** FID depends strongly on resolution unless both sides share it (HIT-UAV test vs val:
63.2 at full resolution, but 173.0 for full resolution vs 64 px, measured with clean-fid during development).
So both sides are brought to one target size, by default the generator's output size (the common size of the
generated images). An image of another size is resized whole (``crop="none"``, the default, as
``thermgen.train`` and ``tclip`` squeeze whole frames so that captions about positions stay true) or
centre-cropped to the target aspect ratio first (``crop="center"``), with PIL bicubic
(antialiased) in float before quantisation. The report states the size and the rule.

**Reference cache.** Real-side features are cached as ``.npz`` per dataset, split, resolution and
feature extractor, under a key hashing the image bytes, the conversion settings, the extractor's
weights and the clean-fid version, so a changed file or setting never reuses stale features.

Report keys are documented in :data:`REPORT_KEYS` (``compute_metrics``); the generation report
(``evaluate_generation``, FID plus T-CLIP metrics and a sample sheet) is :mod:`thermgen.metrics.report`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cleanfid.fid as cfid
import numpy as np
import torch
from cleanfid.utils import ResizeDataset
from PIL import Image
from torch import nn
from tqdm.auto import tqdm

from thermgen.data.sample import DataError
from thermgen.io import IMAGE_EXTENSIONS, read_thermal
from thermgen.metrics.features import build_feature_extractor, default_device  # noqa: F401  (re-exported)

logger = logging.getLogger(__name__)

try:  # clean-fid has no __version__ attribute
    from importlib.metadata import version as _version

    CLEANFID_VERSION = _version("clean-fid")
except Exception:  # pragma: no cover - metadata missing in odd installs
    CLEANFID_VERSION = "unknown"

SCHEMA_VERSION = 1
NORMS = ("fixed", "percentile")
CROPS = ("none", "center")
COLORS = ("error", "luma")
CLEANFID_MODE = "clean"

REPORT_KEYS: dict[str, str] = {
    "schema_version": "int, 1; bumped on any incompatible change of these keys",
    "feature": "name of the feature extractor: 'inception-v3-2015-12-05', 'tclip-dual', or a custom extractor's name",
    "feature_dim": "int, width D of one feature vector",
    "fid": "float, Frechet distance between Gaussians fitted to the real and the fake features (clean-fid)",
    "kid_mean": "float, kernel inception distance (clean-fid's cubic polynomial kernel), mean over subsets",
    "kid_std": "float, standard deviation of the per-subset KID estimates",
    "kid_subsets": "int, number of random subsets KID was averaged over",
    "kid_subset_size": "int, images per side in each KID subset: min(n_real, n_fake, kid_subset_size)",
    "n_real": "int, real images used",
    "n_fake": "int, generated images used",
    "resolution": "[width, height] in px that both sides were brought to before clean-fid's 299x299 resize",
    "resolution_rule": "str, how 'resolution' was chosen and how images of another size were fitted to it",
    "conversion": "dict: norm, crop, color, bit_depth rule, grey_to_rgb rule, cleanfid_mode, cleanfid_version",
    "real": "dict: path, kind ('folder'|'manifest'), dataset, split, content_sha256, cache ('hit'|'miss'|'off'), cache_file",
    "fake": "dict: path, kind ('folder'|'generate-index': a thermgen.generate folder read through its generation.json), dataset, split, content_sha256",
    "warnings": "list of str, e.g. a side with fewer images than feature_dim (rank-deficient covariance)",
}


# ----------------------------------------------------------------------------------------------
# Image sets


@dataclass
class ImageSet:
    """An ordered list of image files plus where they came from.

    ``files`` are sorted by ``keys``: a folder's keys are the paths relative to it in POSIX form
    (clean-fid sorts folders the same way), a manifest's keys are its ``id`` fields. Prompts are
    matched to generated images through these keys. ``captions`` maps key -> {"global", "fine"}
    when the set came from a manifest.
    """

    files: list[Path]
    keys: list[str]
    root: Path
    kind: str  # "folder" | "manifest" | "generate-index"
    dataset: str
    split: str | None = None
    captions: dict[str, dict[str, str]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.files)

    def content_sha256(self) -> str:
        """sha256 over every file's key and bytes, in order."""
        h = hashlib.sha256()
        for key, path in zip(self.keys, self.files):
            h.update(key.encode() + b"\0")
            with open(path, "rb") as f:
                while block := f.read(1 << 20):
                    h.update(block)
            h.update(b"\0")
        return h.hexdigest()


def list_images(folder: str | os.PathLike) -> ImageSet:
    """All image files under ``folder`` (recursively; extensions of :data:`thermgen.io.IMAGE_EXTENSIONS`),
    sorted by relative path."""
    root = Path(folder).expanduser().resolve()
    if not root.is_dir():
        raise DataError(f"{root}: not a folder of images")
    files = sorted(
        (p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS),
        key=lambda p: p.relative_to(root).as_posix(),
    )
    if not files:
        raise DataError(f"{root}: no images found (extensions {', '.join(IMAGE_EXTENSIONS)})")
    return ImageSet(files, [p.relative_to(root).as_posix() for p in files], root, "folder", root.name)


def read_manifest_images(manifest: str | os.PathLike, split: str | None = None) -> ImageSet:
    """Images named by a manifest (JSON Lines, contract 1), optionally of one split.

    Every line goes through the manifest's own validating reader (:func:`thermgen.ircap.manifest.iter_manifest`),
    so a bad line raises :class:`DataError` naming the file, line and key; a missing image names its line too.
    """
    from thermgen.ircap.manifest import iter_manifest, resolve_image

    manifest = Path(manifest).expanduser().resolve()
    rows: list[tuple[str, Path]] = []
    sources: set[str] = set()
    captions: dict[str, dict[str, str]] = {}
    for lineno, rec in iter_manifest(manifest):
        if split is not None and rec["split"] != split:
            continue
        path = resolve_image(rec, manifest)
        if not path.is_file():
            raise DataError(f"{manifest} line {lineno}: key 'image': file not found: {path}")
        rows.append((rec["id"], path))
        sources.add(rec["source"])
        captions[rec["id"]] = {"global": rec["global_caption"], "fine": rec["fine_caption"]}
    if not rows:
        raise DataError(f"{manifest}: no images" + (f" in split {split!r}" if split else ""))
    rows.sort()
    dataset = sources.pop() if len(sources) == 1 else manifest.stem
    return ImageSet([p for _, p in rows], [k for k, _ in rows], manifest, "manifest", dataset, split, captions)


def resolve_images(path: str | os.PathLike, split: str | None = None) -> ImageSet:
    """A folder (``split`` picks its subfolder of that name) or a manifest ``.jsonl`` (``split`` filters it)."""
    path = Path(path).expanduser()
    if path.is_file():
        return read_manifest_images(path, split)
    if not path.exists():
        raise DataError(f"{path}: no such folder or manifest")
    if split is not None:
        if not (path / split).is_dir():
            raise DataError(f"{path}: no subfolder for split {split!r}")
        s = list_images(path / split)
        s.dataset, s.split = path.resolve().name, split
        return s
    return list_images(path)


GENERATE_INDEX = "generation.json"


def resolve_fake(folder: str | os.PathLike) -> tuple[ImageSet, dict[str, str] | None, dict[str, str] | None]:
    """The generated side: ``(images, prompts by file name or None, fine prompts or None)``.

    A folder written by ``python -m thermgen.generate`` holds ``generation.json``, whose ``images``
    list names every generated file with its prompt; then exactly those files are used (not the
    ``grid.png`` beside them) and their prompts are returned. Any other folder: every image in it.
    """
    root = Path(folder).expanduser().resolve()
    index = root / GENERATE_INDEX
    if not index.is_file():
        return list_images(root), None, None
    try:
        data = json.loads(index.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataError(f"{index}: invalid JSON ({e.msg})") from None
    records = data.get("images") if isinstance(data, dict) else None
    if not isinstance(records, list) or not records:
        return list_images(root), None, None  # some other generation.json: not an index of images
    files, prompts, fine = {}, {}, {}
    for i, rec in enumerate(records):
        if not isinstance(rec, dict) or not isinstance(rec.get("file"), str):
            raise DataError(f"{index}: images[{i}]: field 'file' missing or not a string")
        path = root / rec["file"]
        if not path.is_file():
            raise DataError(f"{index}: images[{i}]: field 'file': {path} not found")
        key = Path(rec["file"]).as_posix()
        files[key] = path
        if isinstance(rec.get("prompt"), str):
            prompts[key] = rec["prompt"]
        if isinstance(rec.get("prompt_fine"), str):
            fine[key] = rec["prompt_fine"]
    keys = sorted(files)
    image_set = ImageSet([files[k] for k in keys], keys, root, "generate-index", root.name)
    return image_set, (prompts if len(prompts) == len(keys) else None), (fine if len(fine) == len(keys) else None)


# ----------------------------------------------------------------------------------------------
# Pixel conversion (identical for both sides)


def fit_to_size(grey: np.ndarray, size: tuple[int, int], crop: str = "none") -> np.ndarray:
    """Bring float ``(H, W)`` in [0, 1] to ``size = (width, height)`` px.

    ``crop="center"`` first cuts the largest centred window with the target aspect ratio;
    ``"none"`` resizes the whole frame. PIL bicubic (antialiased when shrinking), clipped to [0, 1].
    """
    if crop not in CROPS:
        raise ValueError(f"crop must be one of {CROPS}, got {crop!r}")
    h, w = grey.shape
    tw, th = size
    if (w, h) == (tw, th):
        return grey
    if crop == "center":
        if w * th > h * tw:
            cw = max(1, round(h * tw / th))
            x0 = (w - cw) // 2
            grey = grey[:, x0 : x0 + cw]
        elif w * th < h * tw:
            ch = max(1, round(w * th / tw))
            y0 = (h - ch) // 2
            grey = grey[y0 : y0 + ch, :]
    out = Image.fromarray(np.ascontiguousarray(grey, dtype=np.float32)).resize((tw, th), Image.BICUBIC)
    return np.clip(np.asarray(out, dtype=np.float32), 0.0, 1.0)


def to_uint8(grey: np.ndarray) -> np.ndarray:
    """float [0, 1] -> uint8 by ``rint(255 x)`` (an exact round trip for 8-bit sources)."""
    return np.rint(np.clip(grey, 0.0, 1.0) * 255.0).astype(np.uint8)


def read_grey(path: str | os.PathLike, size: tuple[int, int] | None, norm: str = "fixed", crop: str = "none", color: str = "error") -> np.ndarray:
    """One image as the metrics see it: float32 ``(H, W)`` in [0, 1], white-hot, at ``size``
    (``(width, height)``; None keeps the file's size). See the module docstring for the rules."""
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    grey = read_thermal(path, norm=norm, color=color)
    return grey if size is None else fit_to_size(grey, size, crop)


def target_size(fake: ImageSet, size: int | Sequence[int] | None) -> tuple[tuple[int, int], str]:
    """The comparison resolution ``(width, height)`` and a sentence saying where it came from."""
    from thermgen.io import image_size

    if size is not None:
        if isinstance(size, int):
            size = (size, size)
        if len(size) != 2 or min(size) < 1:
            raise ValueError(f"size must be a positive int or (width, height), got {size!r}")
        return (int(size[0]), int(size[1])), "given by the caller"
    sizes = {image_size(p) for p in fake.files}
    if len(sizes) > 1:
        raise DataError(f"{fake.root}: generated images have {len(sizes)} different sizes, e.g. {sorted(sizes)[:4]}; pass size")
    return sizes.pop(), "the generator's output size (the size of the generated images)"


class ThermalImageDataset(ResizeDataset):
    """Thermal files converted by our explicit rule, then processed like clean-fid's ``ResizeDataset``
    (the same resizer, the same tensor conversion).

    ``input_kind="cleanfid"``: item = float tensor ``(3, 299, 299)`` in [0, 255] (what clean-fid's
    feature extractors and ``custom_feat_extractor`` modules receive).
    ``input_kind="thermal"``: item = float tensor ``(1, H, W)`` in [0, 1] at the target size, before
    8-bit quantisation (what T-CLIP's ``encode_image`` takes).
    """

    def __init__(self, files: Sequence[Path], size: tuple[int, int], norm: str = "fixed", crop: str = "none", color: str = "error", input_kind: str = "cleanfid"):
        super().__init__([str(f) for f in files], mode=CLEANFID_MODE)  # self.size: clean-fid's (299, 299)
        if input_kind not in ("cleanfid", "thermal"):
            raise ValueError(f"input_kind must be 'cleanfid' or 'thermal', got {input_kind!r}")
        self.target, self.norm, self.crop, self.color, self.input_kind = size, norm, crop, color, input_kind

    def __getitem__(self, i: int) -> torch.Tensor:
        grey = read_grey(self.files[i], self.target, self.norm, self.crop, self.color)
        if self.input_kind == "thermal":
            return torch.from_numpy(grey)[None]
        # What cleanfid.utils.ResizeDataset.__getitem__ does with an RGB file whose three channels are this grey
        # image: clean mode's resizer (cleanfid.resize.make_resizer("PIL", False, "bicubic", (299, 299))) resizes
        # each channel on its own as a float 'F' image and clips to [0, 255]. The channels are equal, so one
        # resize, copied three times, gives the same floats at a third of the cost.
        w, h = self.size
        one = Image.fromarray(to_uint8(grey).astype(np.float32), mode="F").resize((w, h), resample=Image.BICUBIC)
        img_resized = np.repeat(np.asarray(one).clip(0, 255).reshape(h, w, 1), 3, axis=2).astype(np.float32)
        return self.transforms(img_resized)


# ----------------------------------------------------------------------------------------------
# Features, FID, KID


def extractor_input_kind(model: Callable) -> str:
    """``"cleanfid"`` (clean-fid's convention, the default) or ``"thermal"`` (attribute ``input_kind``)."""
    return getattr(model, "input_kind", "cleanfid")


def extract_features(
    files: Sequence[Path],
    model: Callable[[torch.Tensor], torch.Tensor],
    size: tuple[int, int],
    *,
    norm: str = "fixed",
    crop: str = "none",
    color: str = "error",
    device: torch.device | str | None = None,
    batch_size: int = 32,
    num_workers: int = 0,
    desc: str = "features",
    progress: bool = True,
) -> np.ndarray:
    """Features of ``files``: array ``(N, D)`` as the model returns them (float32 for Inception).

    The model is called the way clean-fid calls a feature extractor (``cleanfid.fid.get_batch_features``).
    """
    device = torch.device(device) if device is not None else default_device()
    if isinstance(model, nn.Module):
        model = model.to(device).eval()
    ds = ThermalImageDataset(files, size, norm, crop, color, extractor_input_kind(model))
    loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=False, drop_last=False, num_workers=num_workers)
    feats = [cfid.get_batch_features(batch, model, device) for batch in tqdm(loader, desc=desc, disable=not progress, unit="batch")]
    out = np.concatenate(feats)
    if out.ndim != 2 or out.shape[0] != len(files):
        raise ValueError(f"feature extractor returned shape {out.shape} for {len(files)} images; expected (N, D)")
    return out


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Fréchet distance between Gaussians: ``|mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^(1/2))``.

    clean-fid's ``frechet_distance`` takes the trace term from SciPy's ``sqrtm`` of the non-symmetric product
    S1 S2. Here it is the same trace computed exactly from symmetric eigendecompositions:
    ``tr((S1 S2)^(1/2)) = tr((R S2 R)^(1/2))`` with ``R = S1^(1/2)`` (``S1 S2`` is similar to ``R S2 R``), and the
    trace of the square root of the symmetric PSD matrix ``R S2 R`` is the sum of the square roots of its
    eigenvalues. It needs no ``eps`` retry and no imaginary-part check, and at 2048 dimensions it is several
    times faster than ``sqrtm``. Equal to clean-fid's value within 1e-6 relative (tested on full-rank covariances,
    where ``sqrtm`` is accurate).
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    s1, s2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (mu1.shape[0],) * 2:
        raise ValueError(f"frechet_distance: means {mu1.shape} / {mu2.shape} and covariances {s1.shape} / "
                         f"{s2.shape} do not match")
    w, v = np.linalg.eigh((s1 + s1.T) / 2)
    root1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    m = root1 @ s2 @ root1
    tr_covmean = float(np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0, None)).sum())
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * tr_covmean)


def fid_from_features(real: np.ndarray, fake: np.ndarray) -> float:
    """FID between feature arrays ``(N, D)`` and ``(M, D)``: clean-fid's ``fid_from_feats`` (mean and
    ``np.cov`` of each side, then the Fréchet distance), computed exactly by the cheaper of two routes.

    With fewer images than dimensions on one side (``min(N, M) < D``: 579 HIT-UAV test frames against Inception's
    2048), in sample space: with ``A`` and ``B`` the centred features, ``S1 = A'A / (N-1)`` and ``S2 = B'B / (M-1)``,
    the non-zero eigenvalues of ``S1 S2`` are the squared singular values of ``A B'`` over ``(N-1)(M-1)``, so
    ``tr((S1 S2)^(1/2))`` is the nuclear norm of the ``N x M`` matrix ``A B'`` over ``sqrt((N-1)(M-1))``, and the
    ``tr(S)`` terms are squared Frobenius norms: no ``D x D`` matrix is formed. Otherwise the covariances go to
    :func:`frechet_distance`. Both equal clean-fid within 1e-6 relative (tested).
    """
    for name, f in (("real", real), ("fake", fake)):
        if f.ndim != 2 or f.shape[0] < 2:
            raise ValueError(f"{name} features must be (N >= 2, D), got shape {f.shape}")
        if not np.isfinite(f).all():
            raise ValueError(f"{name} features hold NaN or infinite values ({int((~np.isfinite(f)).any(axis=1).sum())} "
                             "of their rows): the feature extractor failed on those images")
    if real.shape[1] != fake.shape[1]:
        raise ValueError(f"real and fake features differ in width: {real.shape} vs {fake.shape}")
    n, m, d = real.shape[0], fake.shape[0], real.shape[1]
    if min(n, m) >= d:
        return frechet_distance(np.mean(real, axis=0), np.cov(real, rowvar=False),
                                np.mean(fake, axis=0), np.cov(fake, rowvar=False))
    real, fake = np.asarray(real, np.float64), np.asarray(fake, np.float64)
    mu1, mu2 = real.mean(axis=0), fake.mean(axis=0)
    a, b = real - mu1, fake - mu2
    tr_covmean = float(np.linalg.svd(a @ b.T, compute_uv=False).sum()) / np.sqrt((n - 1) * (m - 1))
    diff = mu1 - mu2
    return float(diff @ diff + (a * a).sum() / (n - 1) + (b * b).sum() / (m - 1) - 2 * tr_covmean)


def kid_from_features(real: np.ndarray, fake: np.ndarray, num_subsets: int = 100, max_subset_size: int = 1000, seed: int = 0) -> tuple[float, float, int]:
    """KID ``(mean, std over subsets, subset size)`` with clean-fid's ``kernel_distance``.

    ``kernel_distance`` averages ``num_subsets`` subset estimates and returns only the mean; calling
    it once per subset on one seeded numpy stream draws exactly the same subsets, so the mean equals
    ``kernel_distance(real, fake, num_subsets)`` after ``np.random.seed(seed)``, and the spread
    comes for free. The global numpy random state is restored afterwards.
    """
    m = min(real.shape[0], fake.shape[0], max_subset_size)
    if m < 2:
        raise ValueError(f"KID needs at least 2 images per side, got {real.shape[0]} real and {fake.shape[0]} fake")
    if num_subsets < 1:
        raise ValueError(f"kid_subsets must be >= 1, got {num_subsets}")
    state = np.random.get_state()
    try:
        np.random.seed(seed)
        vals = np.array([cfid.kernel_distance(real, fake, num_subsets=1, max_subset_size=max_subset_size) for _ in range(num_subsets)])
    finally:
        np.random.set_state(state)
    return float(vals.mean()), float(vals.std(ddof=1)) if num_subsets > 1 else 0.0, m


# ----------------------------------------------------------------------------------------------
# Reference cache


def default_cache_dir() -> Path:
    """``$THERMGEN_CACHE/fid``, else ``~/.cache/thermgen/fid``."""
    return Path(os.environ.get("THERMGEN_CACHE", Path.home() / ".cache" / "thermgen")).expanduser() / "fid"


def feature_cache_id(model: Callable) -> str | None:
    """A string that identifies the extractor's weights (attribute ``cache_id``, or ``name`` +
    ``weights_sha256``); None when the extractor cannot be identified, which disables caching."""
    cid = getattr(model, "cache_id", None)
    if cid:
        return str(cid)
    sha = getattr(model, "weights_sha256", None)
    return f"{getattr(model, 'name', type(model).__name__)}:{sha}" if sha else None


def _slug(s: str) -> str:
    return "".join(c if c.isalnum() or c in "-." else "-" for c in s).strip("-")[:40] or "x"


def reference_features(
    real: ImageSet,
    model: Callable,
    size: tuple[int, int],
    *,
    norm: str = "fixed",
    crop: str = "none",
    color: str = "error",
    cache_dir: str | os.PathLike | None = None,
    **extract_kw: Any,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Real-side features ``(N, D)``, from the cache when the same bytes, settings and extractor were seen.

    The cache file is ``<dataset>_<split>_<W>x<H>_<feature>_<key>.npz`` in ``cache_dir`` (None: no
    cache); key = sha256 of (content hash, extractor id, size, norm, crop, color, input kind,
    clean-fid version and mode). Returns ``(features, info)`` with info keys ``content_sha256``,
    ``cache`` ('hit'|'miss'|'off') and ``cache_file``.
    """
    content = real.content_sha256()
    fid_id = feature_cache_id(model)
    info: dict[str, Any] = {"content_sha256": content, "cache": "off", "cache_file": None}
    path = None
    if cache_dir is not None and fid_id is not None:
        key_src = json.dumps(
            {"content": content, "feature": fid_id, "size": list(size), "norm": norm, "crop": crop, "color": color,
             "input_kind": extractor_input_kind(model), "cleanfid": CLEANFID_VERSION, "mode": CLEANFID_MODE,
             "schema": SCHEMA_VERSION},
            sort_keys=True,
        )
        key = hashlib.sha256(key_src.encode()).hexdigest()[:16]
        name = str(getattr(model, "name", "feature"))
        path = Path(cache_dir) / f"{_slug(real.dataset)}_{_slug(real.split or 'all')}_{size[0]}x{size[1]}_{_slug(name)}_{key}.npz"
        info["cache_file"] = str(path)
        if path.is_file():
            with np.load(path) as z:
                feats = z["feats"]
            if feats.ndim == 2 and feats.shape[0] == len(real):
                info["cache"] = "hit"
                logger.info("real features from cache %s", path)
                return feats, info
            logger.warning("ignoring cache file %s: shape %s does not match %d images", path, feats.shape, len(real))
        info["cache"] = "miss"
    feats = extract_features(real.files, model, size, norm=norm, crop=crop, color=color, desc=f"real {real.dataset}", **extract_kw)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.stem + f".{os.getpid()}.tmp.npz")
        np.savez(tmp, feats=feats)
        os.replace(tmp, path)  # atomic: an interrupted run never leaves a truncated cache file
    return feats, info


# ----------------------------------------------------------------------------------------------
# FID / KID between two sets


def size_warnings(n_real: int, n_fake: int, dim: int, what: str = "FID") -> list[str]:
    """Warnings for sides with fewer images than the feature dimension."""
    return [
        f"{side} side has {n} images, fewer than the feature dimension {dim}: its covariance is rank-deficient, "
        f"so {what} is biased upwards and unstable at this size; compare KID, or {what}s from equal numbers of images"
        for side, n in (("real", n_real), ("fake", n_fake))
        if n < dim
    ]


def compute_metrics(
    real: str | os.PathLike | ImageSet,
    fake: str | os.PathLike | ImageSet,
    *,
    feature: str | Callable = "inception",
    split: str | None = None,
    size: int | Sequence[int] | None = None,
    norm: str = "fixed",
    crop: str = "none",
    color: str = "error",
    device: torch.device | str | None = None,
    batch_size: int = 32,
    num_workers: int = 0,
    cache_dir: str | os.PathLike | None = None,
    use_cache: bool = True,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    seed: int = 0,
    inception_path: str | os.PathLike | None = None,
    progress: bool = True,
    return_features: bool = False,
) -> dict[str, Any]:
    """FID and KID between a real set (folder or manifest) and a folder of generated images.

    Args:
        real: folder of images (``split`` = its subfolder) or manifest ``.jsonl`` (``split`` filters it).
        fake: folder of generated images (or an :class:`ImageSet`).
        feature: ``"inception"`` (the standard FID network, offline: :mod:`thermgen.metrics.inception`),
            ``"tclip:DIR"``, or a callable taking clean-fid's input -- float ``(B, 3, 299, 299)`` in
            [0, 255] -- or, with attribute ``input_kind = "thermal"``, float ``(B, 1, H, W)`` in [0, 1],
            and returning ``(B, D)``. Optional attributes: ``name`` (shown in the report) and
            ``cache_id`` (enables the reference cache for a custom extractor).
        size: comparison resolution, int (square) or ``(width, height)`` px; None = the generated images' size.
        norm: thermal -> [0, 1] rule, ``"fixed"`` or ``"percentile"`` (module docstring).
        crop: ``"none"`` (resize whole frames) or ``"center"`` (crop to the target aspect ratio first).
        color: ``"error"`` (reject true-colour files) or ``"luma"`` (convert them).
        device: torch device; default CUDA when available, else CPU.
        batch_size, num_workers: feature-extraction loader (0 workers is the CPU-safe default).
        cache_dir, use_cache: reference-feature cache (default :func:`default_cache_dir`).
        kid_subsets, kid_subset_size, seed: KID subsets (clean-fid's defaults are 100 and 1000).
        return_features: also return ``"_real_features"``, ``"_fake_features"`` (arrays), ``"_real_set"``,
            ``"_fake_set"`` and ``"_model"`` (not JSON; :func:`evaluate_generation` strips them).

    Returns:
        dict with the keys of :data:`REPORT_KEYS`.
    """
    real_set = real if isinstance(real, ImageSet) else resolve_images(real, split)
    fake_set = fake if isinstance(fake, ImageSet) else list_images(fake)
    if norm not in NORMS or crop not in CROPS or color not in COLORS:
        raise ValueError(f"norm/crop/color must be in {NORMS}/{CROPS}/{COLORS}, got {norm!r}/{crop!r}/{color!r}")
    tsize, rule = target_size(fake_set, size)
    model = build_feature_extractor(feature, device, inception_path)
    kw: dict[str, Any] = dict(norm=norm, crop=crop, color=color, device=device, batch_size=batch_size, num_workers=num_workers, progress=progress)
    cdir = (Path(cache_dir) if cache_dir is not None else default_cache_dir()) if use_cache else None
    real_feats, real_info = reference_features(real_set, model, tsize, cache_dir=cdir, **kw)
    fake_feats = extract_features(fake_set.files, model, tsize, desc="fake", **kw)
    if real_feats.shape[1] != fake_feats.shape[1]:
        raise ValueError(f"feature widths differ: real {real_feats.shape[1]}, fake {fake_feats.shape[1]}")
    dim = int(real_feats.shape[1])
    fid = fid_from_features(real_feats, fake_feats)
    kid_mean, kid_std, m = kid_from_features(real_feats, fake_feats, kid_subsets, kid_subset_size, seed)
    warnings = size_warnings(len(real_set), len(fake_set), dim)
    if not math.isfinite(fid):
        warnings.append("FID is not finite (degenerate features)")
    fitted = "centre-cropped to its aspect ratio and resized" if crop == "center" else "resized whole (aspect ratio not kept)"
    report: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "feature": str(getattr(model, "name", type(model).__name__)),
        "feature_dim": dim,
        "fid": fid,
        "kid_mean": kid_mean,
        "kid_std": kid_std,
        "kid_subsets": kid_subsets,
        "kid_subset_size": m,
        "n_real": len(real_set),
        "n_fake": len(fake_set),
        "resolution": list(tsize),
        "resolution_rule": f"{tsize[0]}x{tsize[1]} px: {rule}; images of another size were {fitted} "
        "with PIL bicubic before 8-bit quantisation; then clean-fid's own 299x299 bicubic resize",
        "conversion": {
            "norm": norm,
            "crop": crop,
            "color": color,
            "bit_depth": "8-bit as stored, 16-bit round(v / 257)" if norm == "fixed" else "per-image 1-99 percentile stretch to 0..255",
            "grey_to_rgb": "8-bit grey replicated to 3 channels",
            "cleanfid_mode": CLEANFID_MODE,
            "cleanfid_version": CLEANFID_VERSION,
        },
        "real": {"path": str(real_set.root), "kind": real_set.kind, "dataset": real_set.dataset, "split": real_set.split, **real_info},
        "fake": {"path": str(fake_set.root), "kind": fake_set.kind, "dataset": fake_set.dataset, "split": fake_set.split, "content_sha256": fake_set.content_sha256()},
        "warnings": warnings,
    }
    if return_features:
        report.update(_real_features=real_feats, _fake_features=fake_feats, _real_set=real_set, _fake_set=fake_set, _model=model)
    return report


# ----------------------------------------------------------------------------------------------
# The generation report (FID/KID + T-CLIP metrics, JSON + Markdown + sample sheet)


def match_prompts(fake: ImageSet, prompts: Sequence[str] | Mapping[str, str] | None, what: str = "prompts") -> list[str] | None:
    """Prompts in the order of ``fake.files``.

    A sequence is taken in that order (the sorted relative paths of the generated images) and must
    have one prompt per image; a mapping is keyed by relative path (``"0003.png"``) or by file stem
    (``"0003"``) and must cover every image.
    """
    if prompts is None:
        return None
    if isinstance(prompts, Mapping):
        out = []
        for key, path in zip(fake.keys, fake.files):
            for k in (key, Path(key).with_suffix("").as_posix(), path.name, path.stem):
                if k in prompts:
                    out.append(str(prompts[k]))
                    break
            else:
                raise DataError(f"{fake.root}: no entry in {what} for generated image {key!r}")
        return out
    prompts = [str(p) for p in prompts]
    if len(prompts) != len(fake):
        raise DataError(f"{fake.root}: {len(fake)} generated images but {len(prompts)} {what}; they must match one to one (sorted file order)")
    return prompts


def save_sample_sheet(real: ImageSet, fake: ImageSet, size: tuple[int, int], path: Path, n: int = 8, *, norm: str = "fixed", crop: str = "none",
                      color: str = "error", prompts: Sequence[str] | None = None) -> Path:
    """PNG with the first ``n`` real (top row) and generated (bottom row) images, as the metrics see them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = min(n, len(real), len(fake))
    fig, axes = plt.subplots(2, n, figsize=(1.8 * n, 4.0), squeeze=False)
    for row, (s, label) in enumerate(((real, "real"), (fake, "generated"))):
        for j in range(n):
            ax = axes[row][j]
            ax.imshow(to_uint8(read_grey(s.files[j], size, norm, crop, color)), cmap="gray", vmin=0, vmax=255)
            ax.set_xticks([]), ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(label)
            if row == 1 and prompts is not None:
                ax.set_title(prompts[j][:40] + ("..." if len(prompts[j]) > 40 else ""), fontsize=5)
    fig.suptitle(f"as compared: {size[0]}x{size[1]} px, 8-bit grey", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
