"""Manifest reading and thermal image loading for T-CLIP (standalone: no thermgen import).

The manifest is thermgen's JSON Lines contract (one image per line); T-CLIP needs only
`id`, `image`, `split`, `global_caption` and `fine_caption` of each line, plus the optional
`caption_variants` (`{"global": [...], "fine": [...]}`: other phrasings of the same facts, used only as
training-time text augmentation), and ignores the rest.
"""

from __future__ import annotations

import json
import logging
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

logger = logging.getLogger(__name__)

__all__ = [
    "ManifestError",
    "ManifestRecord",
    "read_manifest",
    "load_thermal_image",
    "resize_square",
    "load_images",
    "split_images",
    "iter_batches",
    "ThermalImages",
    "CAPTION_FIELDS",
    "MIRROR_WORDS",
    "swap_words",
]

CAPTION_FIELDS = {"global": "global_caption", "fine": "fine_caption"}
#: Words that trade places when an image is mirrored left to right (IR-Cap states positions with them).
MIRROR_WORDS = (("left", "right"), ("leftmost", "rightmost"))


class ManifestError(ValueError):
    """A manifest line or an image file that cannot be used; the message names file, line and field."""


@dataclass(frozen=True)
class ManifestRecord:
    """One manifest line as T-CLIP sees it. `image` is resolved against the manifest's folder."""

    id: str
    image: Path
    split: str
    global_caption: str
    fine_caption: str
    line: int
    global_variants: tuple[str, ...] = ()
    fine_variants: tuple[str, ...] = ()

    def caption(self, kind: str) -> str:
        """The caption of one kind: "global" or "fine"."""
        if kind not in CAPTION_FIELDS:
            raise ValueError(f"caption kind must be one of {sorted(CAPTION_FIELDS)}, got {kind!r}")
        return getattr(self, CAPTION_FIELDS[kind])

    def captions(self, kind: str) -> tuple[str, ...]:
        """The caption of one kind followed by its variants (other phrasings of the same facts)."""
        return (self.caption(kind), *(self.global_variants if kind == "global" else self.fine_variants))


def read_manifest(path: str | Path, split: str | None = None) -> list[ManifestRecord]:
    """Read the records of one split (None: all) from a JSONL manifest, validating what T-CLIP uses.

    Raises `ManifestError` naming `file:line` and the field for a malformed line, and for duplicate ids.
    Empty lines are allowed and skipped. Records keep the manifest's order.
    """
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"{path}: manifest not found")
    records: list[ManifestRecord] = []
    seen: dict[str, int] = {}
    with path.open(encoding="utf-8") as fh:
        for lineno, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                obj = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise ManifestError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno})") from None
            if not isinstance(obj, dict):
                raise ManifestError(f"{where}: a line must be a JSON object, got {type(obj).__name__}")
            for field in ("id", "image", "split", "global_caption", "fine_caption"):
                value = obj.get(field)
                if not isinstance(value, str) or not value.strip():
                    raise ManifestError(f"{where}: field {field!r} must be a non-empty string, got {value!r}")
            variants = obj.get("caption_variants", {})
            if not isinstance(variants, dict):
                raise ManifestError(f"{where}: field 'caption_variants' must be an object, got {type(variants).__name__}")
            for kind, texts in variants.items():
                if kind not in CAPTION_FIELDS:
                    raise ManifestError(f"{where}: field 'caption_variants' has unknown key {kind!r} (expected 'global' or 'fine')")
                if not isinstance(texts, list) or not all(isinstance(t, str) and t.strip() for t in texts):
                    raise ManifestError(f"{where}: field 'caption_variants.{kind}' must be a list of non-empty strings")
            if split is not None and obj["split"] != split:
                continue
            if obj["id"] in seen:
                raise ManifestError(f"{where}: field 'id' {obj['id']!r} duplicates line {seen[obj['id']]}")
            seen[obj["id"]] = lineno
            image = Path(obj["image"])
            if not image.is_absolute():
                image = path.parent / image
            records.append(
                ManifestRecord(
                    id=obj["id"],
                    image=image,
                    split=obj["split"],
                    global_caption=obj["global_caption"],
                    fine_caption=obj["fine_caption"],
                    line=lineno,
                    global_variants=tuple(variants.get("global", ())),
                    fine_variants=tuple(variants.get("fine", ())),
                )
            )
    return records


def load_thermal_image(path: str | Path) -> np.ndarray:
    """Read a thermal image as float32 (H, W) in [0, 1], white-hot, with the "fixed" rule.

    "fixed": integer images are divided by their dtype's full range (255 for 8-bit, 65535 for
    16-bit), so absolute levels survive (a night scene stays darker than a day scene). A 3-channel
    image whose channels are equal is read as grey; a colour (e.g. colormapped) image is refused,
    because its colours cannot be mapped back to temperature.
    """
    path = Path(path)
    try:
        with Image.open(path) as img:
            img.load()
            mode = img.mode
            arr = np.asarray(img)
    except FileNotFoundError:
        raise ManifestError(f"{path}: image file not found") from None
    except OSError as exc:
        raise ManifestError(f"{path}: cannot read image ({exc})") from None
    if arr.ndim == 3:
        if arr.shape[2] == 4:
            arr = arr[..., :3]
        if arr.shape[2] == 3 and not (np.array_equal(arr[..., 0], arr[..., 1]) and np.array_equal(arr[..., 0], arr[..., 2])):
            raise ManifestError(f"{path}: colour image (mode {mode}); thermal images must be single-channel grey")
        arr = arr[..., 0]
    if arr.dtype == np.uint8 or mode in ("L", "P", "1"):
        return (arr.astype(np.float32) / 255.0).clip(0.0, 1.0)
    if arr.dtype in (np.uint16, np.int32, np.int64) or mode.startswith("I"):
        # PIL reads 16-bit PNGs as mode "I" (int32) or "I;16": the sensor range is 16 bits either way.
        if arr.max(initial=0) > 65535 or arr.min(initial=0) < 0:
            raise ManifestError(f"{path}: integer values outside 0..65535 (mode {mode})")
        return arr.astype(np.float32) / 65535.0
    if np.issubdtype(arr.dtype, np.floating):
        if arr.min(initial=0.0) < 0.0 or arr.max(initial=0.0) > 1.0:
            raise ManifestError(f"{path}: float image values must lie in [0, 1] (mode {mode})")
        return arr.astype(np.float32)
    raise ManifestError(f"{path}: unsupported image mode {mode} / dtype {arr.dtype}")


def resize_square(images: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """Resize float images (B, C, H, W) to `size` with antialiased bilinear interpolation.

    The whole frame is kept (no crop; the aspect ratio is squashed), as the paper used whole images.
    """
    size = (size, size) if isinstance(size, int) else tuple(size)
    if tuple(images.shape[-2:]) == size:
        return images
    return F.interpolate(images, size=size, mode="bilinear", antialias=True, align_corners=False)


class ThermalImages(torch.utils.data.Dataset):
    """Thermal images read lazily from disk: item ``i`` is float32 (1, H, W) in [0, 1] at ``size``.

    The same reading and resizing as :func:`load_images` (which is built on it), one file per item, so a
    ``DataLoader`` over it streams a split of any size with memory that does not grow with the split.
    """

    def __init__(self, paths: list[Path], size: int | tuple[int, int]):
        self.paths = list(paths)
        self.size = (size, size) if isinstance(size, int) else tuple(size)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        x = torch.from_numpy(load_thermal_image(self.paths[i]))[None, None]
        return resize_square(x, self.size)[0].clamp_(0.0, 1.0)

    def nbytes(self) -> int:
        """What the whole split would take as one float32 tensor."""
        return len(self.paths) * self.size[0] * self.size[1] * 4


def iter_batches(images, batch_size: int, workers: int = 0):
    """Consecutive batches (B, 1, H, W) of a preloaded (N, 1, H, W) tensor, or of a dataset of (1, H, W) items
    (e.g. :class:`ThermalImages`) read by ``workers`` DataLoader processes (0: in this process)."""
    if isinstance(images, torch.Tensor):
        for i in range(0, images.shape[0], batch_size):
            yield images[i : i + batch_size]
    else:
        yield from torch.utils.data.DataLoader(images, batch_size=batch_size, num_workers=workers)


def load_images(paths: list[Path], size: int | tuple[int, int], workers: int = 2, progress: bool = True) -> torch.Tensor:
    """Load and resize thermal images into one float32 tensor (N, 1, size, size) in [0, 1]."""
    ds = ThermalImages(paths, size)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        it = pool.map(ds.__getitem__, range(len(ds)))
        if progress:
            from tqdm.auto import tqdm

            it = tqdm(it, total=len(paths), desc="load images", leave=False)
        out = list(it)
    if not out:
        return torch.empty(0, 1, *ds.size)
    return torch.stack(out)


def split_images(paths: list[Path], size: int | tuple[int, int], cache_mb: float | None, workers: int = 2,
                 progress: bool = True) -> torch.Tensor | ThermalImages:
    """A split's images, decoded into memory when they fit in ``cache_mb`` MB (``None``: always), else streamed.

    Returns the float32 tensor of :func:`load_images`, or a :class:`ThermalImages` that reads each file when
    it is needed (``cache_mb=0`` always streams). Both hold the same values.
    """
    ds = ThermalImages(paths, size)
    if cache_mb is not None and ds.nbytes() > float(cache_mb) * 2**20:
        logger.info("%d images at %s take %.0f MB > image_cache_mb %s: streamed from disk", len(ds), ds.size,
                    ds.nbytes() / 2**20, cache_mb)
        return ds
    return load_images(paths, size, workers=workers, progress=progress)


def swap_words(text: str, pairs=MIRROR_WORDS) -> str:
    """Exchange each pair's words in `text` (whole words, keeping an initial capital): the caption of a mirrored image."""
    table: dict[str, str] = {}
    for a, b in pairs:
        table[a.lower()], table[b.lower()] = b.lower(), a.lower()
    if not table:
        return text
    pattern = re.compile(r"\b(" + "|".join(re.escape(w) for w in table) + r")\b", re.IGNORECASE)

    def repl(m: re.Match) -> str:
        word = table[m.group(0).lower()]
        return word.capitalize() if m.group(0)[0].isupper() else word

    return pattern.sub(repl, text)
