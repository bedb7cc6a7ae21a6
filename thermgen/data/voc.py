"""Pascal VOC XML annotations: LLVIP's infrared frames, or any VOC-layout thermal set.

LLVIP layout (Jia et al., ICCV-W 2021; one XML per visible/infrared pair, same stem)::

    Annotations/<stem>.xml
    infrared/{train,test}/<stem>.jpg      (also accepted: lwir/ or thermal/ instead of infrared/)
    visible/{train,test}/<stem>.jpg       (ignored: RGB)

The split is the infrared sub-folder that holds the image. LLVIP's only class is ``person``; any
other name is an unknown label. LLVIP stores its infrared frames as 3-channel JPEGs with equal
channels, which :func:`thermgen.io.read_thermal` reads as grey.

Plain VOC layout::

    Annotations/<stem>.xml, JPEGImages/<filename>, ImageSets/Main/<split>.txt (optional; without
    it every XML is one split "all"). Class names are free unless ``labels.txt`` (one per line)
    beside Annotations/ lists them.

Boxes: VOC corners are 1-based and inclusive, so ``x = xmin - 1``, ``w = xmax - xmin + 1``
(the convention of the VOC devkit and detectron2). ``difficult`` objects are kept with
``attrs={"difficult": True, "ignore": True}``; ``truncated``/``occluded`` flags are kept in attrs.
One XML file is one record: a file that does not parse, or names no image that exists, is an error
naming the file, or a counted skip. Images without an XML are reported as "missing annotation".
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from . import _common as c
from .sample import Box, DataError, SkipReport, ThermalSample

SOURCE = "voc"
LLVIP_LABELS = ("person",)
THERMAL_DIRS = ("infrared", "lwir", "thermal")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")
MISSING_ANNOTATION = c.MISSING_ANNOTATION


def _thermal_dir(root: Path) -> Path | None:
    return next((root / d for d in THERMAL_DIRS if (root / d).is_dir()), None)


def _check_root(root: Path) -> None:
    if not (root / "Annotations").is_dir():
        raise DataError(f"{root / 'Annotations'}: not found; expected a VOC layout (Annotations/*.xml)")


def splits(root: Path) -> list[str]:
    """Split names: LLVIP's infrared sub-folders, VOC's ImageSets/Main lists, or ["all"]."""
    root = Path(root)
    _check_root(root)
    ir = _thermal_dir(root)
    if ir is not None:
        return c.sort_splits(d.name for d in ir.iterdir() if d.is_dir())
    sets = root / "ImageSets" / "Main"
    if sets.is_dir():
        names = [p.stem for p in sets.glob("*.txt") if "_" not in p.stem]  # "person_train.txt" are per-class lists
        if names:
            return c.sort_splits(names)
    return ["all"]


def load(root: Path, split: str | None, report: SkipReport, skip_invalid: bool = False) -> list[ThermalSample]:
    """Read VOC/LLVIP samples of ``split`` (None = every split), validating every XML record."""
    root = Path(root)
    v = c.Validator(report, skip_invalid)
    wanted = c.check_split(split, splits(root), str(root))
    labels = _known_labels(root)
    ann_dir = root / "Annotations"
    ir = _thermal_dir(root)

    # (split, xml path, image path or None when it must come from the XML's <filename>)
    records: list[tuple[str, Path, Path | None]] = []
    if ir is not None:
        xml_by_stem = {p.stem: p for p in ann_dir.glob("*.xml")}
        claimed: set[str] = set()
        for name in c.sort_splits(d.name for d in ir.iterdir() if d.is_dir()):
            for img in sorted(p for p in (ir / name).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
                claimed.add(img.stem)
                if name not in wanted:
                    continue
                if img.stem not in xml_by_stem:
                    v.problem(MISSING_ANNOTATION, str(img), f"no {ann_dir / (img.stem + '.xml')}")
                    continue
                records.append((name, xml_by_stem[img.stem], img))
        if split is None:
            for stem in sorted(set(xml_by_stem) - claimed):
                v.problem(c.MISSING_IMAGE, str(xml_by_stem[stem]), f"no image {stem}.* under {ir}/<split>/")
    else:
        sets = root / "ImageSets" / "Main"
        for name in wanted:
            if name == "all" and not (sets / "all.txt").is_file():
                stems = sorted(p.stem for p in ann_dir.glob("*.xml"))
            else:
                list_file = sets / f"{name}.txt"
                stems = [line.split()[0] for line in list_file.read_text().splitlines() if line.strip()]
            for stem in stems:
                records.append((name, ann_dir / f"{stem}.xml", None))

    samples: list[ThermalSample] = []
    for name, xml_path, image_path in records:
        sample = _parse_xml(xml_path, image_path, root, name, labels, v)
        if sample is not None:
            samples.append(sample)
    return samples


def _known_labels(root: Path) -> tuple[str, ...] | None:
    if _thermal_dir(root) is not None:
        return LLVIP_LABELS
    labels_file = root / "labels.txt"
    if labels_file.is_file():
        return tuple(l.strip() for l in labels_file.read_text().splitlines() if l.strip())
    return None


def _text(el: ET.Element | None, tag: str) -> str | None:
    child = el.find(tag) if el is not None else None
    return child.text.strip() if child is not None and child.text is not None else None


def _number(el: ET.Element | None, tag: str) -> float | None:
    t = _text(el, tag)
    try:
        return float(t) if t is not None else None
    except ValueError:
        return None


def _parse_xml(xml_path: Path, image_path: Path | None, root: Path, split: str, labels: tuple[str, ...] | None, v: c.Validator) -> ThermalSample | None:
    where = str(xml_path)
    if not xml_path.is_file():
        v.problem(MISSING_ANNOTATION, where, "annotation file listed in ImageSets does not exist")
        return None
    try:
        tree = ET.parse(xml_path).getroot()
    except ET.ParseError as e:
        line, col = e.position
        v.problem(c.BROKEN_RECORD, f"{where}: line {line} column {col}", f"not valid XML ({e})")
        return None
    if tree.tag != "annotation":
        v.problem(c.BROKEN_RECORD, where, f"root element is <{tree.tag}>, expected <annotation>")
        return None

    if image_path is None:
        fname = _text(tree, "filename")
        candidates = [root / "JPEGImages" / fname] if fname else []
        candidates += [root / "JPEGImages" / f"{xml_path.stem}{s}" for s in IMAGE_SUFFIXES]
        image_path = next((p for p in candidates if p.is_file()), None)
        if image_path is None:
            v.problem(c.MISSING_IMAGE, where, f"no image {fname or xml_path.stem + '.*'} in {root / 'JPEGImages'}")
            return None

    size = tree.find("size")
    width, height = _number(size, "width"), _number(size, "height")
    if not width or not height:
        from thermgen.io import image_size  # header only; used when the XML omits <size>

        try:
            width, height = image_size(image_path)
        except DataError as e:
            v.problem(c.UNREADABLE_IMAGE, where, str(e))
            return None
    if width <= 0 or height <= 0 or width != int(width) or height != int(height):
        v.problem(c.BROKEN_RECORD, where, f"<size> must give positive integer width/height, got {width}x{height}")
        return None
    width, height = int(width), int(height)

    boxes: list[Box] = []
    for k, obj in enumerate(tree.findall("object")):
        owhere = f"{where}: object[{k}]"
        label = _text(obj, "name")
        if not label:
            v.problem(c.BROKEN_RECORD, owhere, "missing <name>")
            continue
        owhere += f" ({label})"
        if labels is not None and label not in labels:
            v.problem(c.UNKNOWN_LABEL, owhere, f"{label!r} is not one of {', '.join(labels)}")
            continue
        bb = obj.find("bndbox")
        corners = [_number(bb, t) for t in ("xmin", "ymin", "xmax", "ymax")]
        if bb is None or any(x is None for x in corners):
            v.problem(c.BROKEN_RECORD, owhere, "<bndbox> needs numeric xmin, ymin, xmax, ymax")
            continue
        xmin, ymin, xmax, ymax = corners
        xywh = c.check_box([xmin - 1.0, ymin - 1.0, xmax - xmin + 1.0, ymax - ymin + 1.0], width, height, owhere, v)
        if xywh is None:
            continue
        attrs: dict[str, Any] = {}
        for flag in ("difficult", "truncated", "occluded"):
            if _text(obj, flag) in ("1", "true", "True"):
                attrs[flag] = True
        if attrs.get("difficult"):
            attrs["ignore"] = True
        boxes.append(Box(label=label, xywh=xywh, attrs=attrs))

    return ThermalSample(
        image_path=image_path.resolve(),
        width=width,
        height=height,
        boxes=boxes,
        meta={},
        split=split,
        source=SOURCE,
        image_id=image_path.stem,
    )
