"""Attribute faithfulness of generated thermal images, judged independently of T-CLIP.

The judge answers "does the image show what the prompt said?" for attributes that a thermal-camera user
asks for: day or night, the flight altitude band, the camera-angle band, whether people are present and
how many cars there are. It is built so that the model under test cannot game it:

* **Labels come from metadata and annotations only, never from captions** (:func:`record_attributes`:
  the record's ``meta`` and ``objects``). For HIT-UAV these are the file-name flags and the boxes; for
  synthetic scenes their exact ground truth.
* **Features are the frozen standard FID Inception network** (:class:`~thermgen.metrics.inception.InceptionFeatures`),
  not T-CLIP: the conditioner never grades itself. Images are brought to the generator's resolution first
  (real ones are downsized exactly as the FID comparison does), so real and generated images reach the
  judge through the same pixels.
* **A linear classifier per attribute** (multinomial logistic regression on standardised features, L2
  strength chosen on the validation split) is trained on the *real training split*; its accuracy on the
  real test split is the ceiling a generator can reach, reported beside the majority-class rate.

:func:`judge_images` grades generated images against the attributes their prompts stated (per attribute:
accuracy, majority rate, confusion table); :func:`swap_report` grades the swap test (same seeds, prompts
that differ in one fact: :mod:`thermgen.ircap.swap`). Command: ``python -m thermgen.judge``.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

logger = logging.getLogger(__name__)

JUDGE_SCHEMA_VERSION = 1

#: Attribute name -> its classes, in a fixed order (confusion tables use it).
ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "time_of_day": ("day", "night"),
    "altitude": ("low", "mid", "high"),
    "view": ("oblique", "steep", "nadir"),
    "person": ("absent", "present"),
    "cars": ("0", "1-5", "6+"),
}
#: What each class means, for reports.
ATTRIBUTE_HELP: dict[str, str] = {
    "time_of_day": "meta.time_of_day",
    "altitude": "meta.altitude_m: low < 85 m <= mid < 115 m <= high (HIT-UAV flies 60-130 m)",
    "view": "meta.view_angle_deg as IR-Cap states it: nadir >= 80 deg, steep >= 55 deg, else oblique",
    "person": "at least one annotated Person box",
    "cars": "number of annotated Car boxes: 0 / 1-5 / 6 or more",
}
ALT_LOW, ALT_HIGH = 85.0, 115.0


def _car(label: str) -> bool:
    return label.strip().lower() == "car"


def _person(label: str) -> bool:
    return label.strip().lower() in ("person", "people", "pedestrian")


def record_attributes(rec: Mapping[str, Any]) -> dict[str, str]:
    """The judge's attributes of one manifest record, from ``meta`` and ``objects`` only (never captions).

    An attribute whose metadata is missing is absent from the result (e.g. no altitude for FLIR ADAS).
    Object attributes need annotations: records of the ``folder`` source without boxes get none (an unannotated
    image is not an image without people).
    """
    meta = rec.get("meta") or {}
    out: dict[str, str] = {}
    tod = meta.get("time_of_day")
    if tod in ATTRIBUTES["time_of_day"]:
        out["time_of_day"] = tod
    alt = meta.get("altitude_m")
    if alt is not None:
        a = float(alt)
        out["altitude"] = "low" if a < ALT_LOW else ("mid" if a < ALT_HIGH else "high")
    ang = meta.get("view_angle_deg")
    if ang is not None:
        g = float(ang)
        out["view"] = "nadir" if g >= 80 else ("steep" if g >= 55 else "oblique")
    if rec.get("source") == "folder" and not rec.get("objects"):
        return out  # a plain image folder has no annotations: "no boxes" does not mean "no people"
    labels = [str(o.get("label", "")) for o in rec.get("objects") or []]
    out["person"] = "present" if any(_person(lab) for lab in labels) else "absent"
    n_cars = sum(_car(lab) for lab in labels)
    out["cars"] = "0" if n_cars == 0 else ("1-5" if n_cars <= 5 else "6+")
    return out


def attribute_table(records: Sequence[Mapping[str, Any]]) -> dict[str, list[str | None]]:
    """Per attribute, one value per record (None where a record lacks it)."""
    rows = [record_attributes(r) for r in records]
    return {a: [row.get(a) for row in rows] for a in ATTRIBUTES}


def flight_groups(records: Sequence[Mapping[str, Any]]) -> list[int]:
    """One flight number per record: records ordered by ``meta.frame``, a new flight where the time of day changes.

    For datasets whose frames are numbered along the recording, as HIT-UAV's file names are: its frames come in
    13 such runs (night 0-1606, day 1609-2291, ...), each one or more flights over a site, split at random into
    train/val/test. Grouping by them lets a check hold out whole flights (:func:`thermgen.metrics.judging.held_out_flights`).
    A record without ``meta.frame`` or ``meta.time_of_day`` is a :class:`~thermgen.data.sample.DataError` naming it.
    """
    from thermgen.data.sample import DataError

    keyed = []
    for i, r in enumerate(records):
        meta = r.get("meta") or {}
        frame, tod = meta.get("frame"), meta.get("time_of_day")
        if frame is None or tod is None:
            raise DataError(f"record {r.get('id', i)!r}: flights need meta.frame and meta.time_of_day "
                            f"(found frame={frame!r}, time_of_day={tod!r})")
        try:
            keyed.append((int(frame), i, tod))
        except (TypeError, ValueError):
            raise DataError(f"record {r.get('id', i)!r}: meta.frame {frame!r} is not a frame number") from None
    groups = [0] * len(records)
    flight, last = -1, None
    for _, i, tod in sorted(keyed):
        if tod != last:
            flight, last = flight + 1, tod
        groups[i] = flight
    return groups


#: The held-out-flight check needs flights, not single frames: at least this many records per flight on average.
MIN_MEAN_FLIGHT = 10


def flights_unusable(records: Sequence[Mapping[str, Any]]) -> str | None:
    """Why :func:`flight_groups` cannot split ``records`` into flights worth holding out, or None when it can.

    Every record needs a frame number and a time of day (:func:`flight_groups`); there must be 2 flights or more, of
    :data:`MIN_MEAN_FLIGHT` records or more on average (frames numbered along a recording, as HIT-UAV's are; synthetic
    scenes draw the time of day per scene, so their "flights" would be single scenes)."""
    from thermgen.data.sample import DataError

    try:
        n = len(set(flight_groups(records)))
    except DataError as e:
        return str(e)
    if n < 2:
        return f"{n} flight(s): nothing to hold out"
    if len(records) / n < MIN_MEAN_FLIGHT:
        return (f"{len(records)} records make {n} runs of one time of day ({len(records) / n:.1f} frames each on "
                f"average, fewer than {MIN_MEAN_FLIGHT}): the frames are not numbered along a recording")
    return None


# ----------------------------------------------------------------------------------------------
# Features


def image_features(files: Sequence[Path], resolution: int, *, feature: Any = "inception", device: str | None = None,
                   progress: bool = True, desc: str = "judge features") -> np.ndarray:
    """Inception pool features ``(N, 2048)`` of ``files`` brought to ``resolution`` px (whole frame, as FID does).

    ``feature`` may be any extractor :func:`thermgen.metrics.fid.build_feature_extractor` accepts (tests pass
    a tiny one).
    """
    from thermgen.metrics.fid import build_feature_extractor, extract_features

    model = build_feature_extractor(feature, device=device)
    return extract_features(list(files), model, (resolution, resolution), device=device, progress=progress,
                            desc=desc)


# ----------------------------------------------------------------------------------------------
# The judge


def _fit_logreg(x: torch.Tensor, y: torch.Tensor, k: int, l2: float, iters: int = 200) -> tuple[torch.Tensor, torch.Tensor]:
    """Multinomial logistic regression by full-batch L-BFGS from zero weights (deterministic): ``(D, k)``, ``(k,)``."""
    w = torch.zeros(x.shape[1], k, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(k, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=iters, history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(x @ w + b, y) + l2 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach(), b.detach()


class AttributeJudge:
    """Linear attribute classifiers on frozen features. Build with :meth:`fit`, persist with :meth:`save`."""

    L2_GRID = (1e-4, 1e-3, 1e-2, 1e-1)

    def __init__(self, mean: np.ndarray, std: np.ndarray, heads: dict[str, dict[str, Any]], info: dict[str, Any]):
        self.mean = np.asarray(mean, dtype=np.float64)
        self.std = np.asarray(std, dtype=np.float64)
        self.heads = heads  # name -> {"classes": [...], "w": (D, k), "b": (k,), "l2": float, "train_counts": {...}}
        self.info = dict(info)

    @property
    def attributes(self) -> list[str]:
        return list(self.heads)

    @classmethod
    def fit(cls, feats: np.ndarray, labels: Mapping[str, Sequence[str | None]], *,
            val_feats: np.ndarray | None = None, val_labels: Mapping[str, Sequence[str | None]] | None = None,
            info: Mapping[str, Any] | None = None, l2: float | Mapping[str, float] | None = None) -> AttributeJudge:
        """Fit one head per attribute on ``feats`` (N, D) and ``labels[attr]`` (N values, None = unknown).

        The L2 strength is the one of :attr:`L2_GRID` with the best accuracy on the validation set (the largest
        on ties); without one, 1e-2. ``l2`` fixes it instead (one value, or one per attribute: e.g. a fitted
        judge's choices, to refit it on other images). An attribute with fewer than 2 classes present is skipped
        (logged).
        """
        feats = np.asarray(feats, dtype=np.float64)
        mean = feats.mean(0)
        std = feats.std(0)
        # A relative floor: dimensions (nearly) constant on real images must not blow up on generated ones.
        std = np.maximum(std, 1e-3 * float(std.mean()) + 1e-12)
        z = torch.from_numpy((feats - mean) / std)
        zv = torch.from_numpy((np.asarray(val_feats, dtype=np.float64) - mean) / std) if val_feats is not None else None
        heads: dict[str, dict[str, Any]] = {}
        for attr, values in labels.items():
            classes = list(ATTRIBUTES.get(attr) or sorted({v for v in values if v is not None}))
            keep = np.array([v is not None for v in values])
            present = {v for v in values if v is not None}
            if len(present) < 2:
                logger.warning("judge: attribute %s has %d class(es) in the training set; skipped", attr, len(present))
                continue
            unknown = present - set(classes)
            if unknown:
                raise ValueError(f"judge: attribute {attr!r} has values {sorted(unknown)} outside its classes {classes}")
            y = torch.tensor([classes.index(v) for v in values if v is not None])
            xk = z[torch.from_numpy(keep)]
            best = None
            scores = {}
            vv = val_labels.get(attr) if (zv is not None and val_labels is not None) else None
            vkeep = np.array([v is not None and v in classes for v in vv]) if vv is not None else np.zeros(0, bool)
            fixed = l2.get(attr) if isinstance(l2, Mapping) else l2
            if fixed is not None:
                w, b = _fit_logreg(xk, y, len(classes), float(fixed))
                l2_used = float(fixed)
            elif vkeep.any():
                yv = torch.tensor([classes.index(v) for v in vv if v is not None and v in classes])
                for cand in cls.L2_GRID:
                    w, b = _fit_logreg(xk, y, len(classes), cand)
                    acc = float(((zv[torch.from_numpy(vkeep)] @ w + b).argmax(1) == yv).double().mean()) if len(yv) else 0.0
                    scores[cand] = acc
                    if best is None or acc >= best[0]:
                        best = (acc, cand, w, b)
                _, l2_used, w, b = best
            else:
                l2_used = 1e-2
                w, b = _fit_logreg(xk, y, len(classes), l2_used)
            heads[attr] = {"classes": classes, "w": w.numpy(), "b": b.numpy(), "l2": l2_used,
                           "val_accuracy_by_l2": {str(k): round(v, 4) for k, v in scores.items()},
                           "train_counts": dict(Counter(v for v in values if v is not None))}
        return cls(mean, std, heads, dict(info or {}))

    def predict_proba(self, feats: np.ndarray) -> dict[str, np.ndarray]:
        """Per attribute, class probabilities ``(N, k)`` in the head's class order."""
        z = (np.asarray(feats, dtype=np.float64) - self.mean) / self.std
        out = {}
        for attr, h in self.heads.items():
            logits = z @ h["w"] + h["b"]
            logits -= logits.max(1, keepdims=True)
            p = np.exp(logits)
            out[attr] = p / p.sum(1, keepdims=True)
        return out

    def predict(self, feats: np.ndarray) -> dict[str, list[str]]:
        return {a: [self.heads[a]["classes"][i] for i in p.argmax(1)] for a, p in self.predict_proba(feats).items()}

    # ------------------------------------------------------------------ persistence
    def save(self, folder: str | Path) -> Path:
        """``judge.json`` (classes, settings, provenance) + ``judge.safetensors`` (weights); no pickle."""
        from safetensors.numpy import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        tensors = {"mean": self.mean, "std": self.std}
        meta_heads = {}
        for a, h in self.heads.items():
            tensors[f"{a}.w"] = np.ascontiguousarray(h["w"])
            tensors[f"{a}.b"] = np.ascontiguousarray(h["b"])
            meta_heads[a] = {k: v for k, v in h.items() if k not in ("w", "b")}
        save_file(tensors, str(folder / "judge.safetensors"))
        (folder / "judge.json").write_text(json.dumps({"schema_version": JUDGE_SCHEMA_VERSION, "heads": meta_heads,
                                                       "info": self.info}, indent=2))
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> AttributeJudge:
        from safetensors.numpy import load_file

        folder = Path(folder)
        meta_path, w_path = folder / "judge.json", folder / "judge.safetensors"
        for p in (meta_path, w_path):
            if not p.is_file():
                raise FileNotFoundError(f"attribute judge: {p} not found (train one with `python -m thermgen.judge train`)")
        meta = json.loads(meta_path.read_text())
        if meta.get("schema_version") != JUDGE_SCHEMA_VERSION:
            raise ValueError(f"{meta_path}: schema_version {meta.get('schema_version')!r}, expected {JUDGE_SCHEMA_VERSION}")
        t = load_file(str(w_path))
        heads = {a: dict(h, w=t[f"{a}.w"], b=t[f"{a}.b"]) for a, h in meta["heads"].items()}
        return cls(t["mean"], t["std"], heads, meta.get("info", {}))


# ----------------------------------------------------------------------------------------------
# Grading


def majority_class(judge: AttributeJudge, attr: str) -> str:
    """The most frequent training class of ``attr`` (the "always answer this" baseline)."""
    counts = judge.heads[attr]["train_counts"]
    return max(judge.heads[attr]["classes"], key=lambda c: (counts.get(c, 0), c))


def judge_images(judge: AttributeJudge, feats: np.ndarray, expected: Mapping[str, Sequence[str | None]]) -> dict[str, Any]:
    """Grade images (their features) against the attributes each should show.

    ``expected[attr]``: one value per image (None: not stated, not graded). Per attribute: ``n``,
    ``accuracy``, ``majority_rate`` (accuracy of always answering the training majority class on the same
    images), ``balanced_accuracy`` (mean per-class recall over the classes present) and ``confusion``
    (``{expected: {predicted: count}}``).
    """
    return grade_predictions(judge.predict(feats), expected,
                             {a: h["classes"] for a, h in judge.heads.items()},
                             {a: majority_class(judge, a) for a in judge.heads})


def separation_auc(pos: Sequence[float] | np.ndarray, neg: Sequence[float] | np.ndarray) -> float:
    """Probability that a random ``pos`` score exceeds a random ``neg`` one (ties count half; NaN if a side is empty)."""
    pos, neg = np.asarray(pos, dtype=np.float64), np.asarray(neg, dtype=np.float64)
    if not len(pos) or not len(neg):
        return float("nan")
    d = pos[:, None] - neg[None, :]
    return float(((d > 0).sum() + 0.5 * (d == 0).sum()) / d.size)


def stated_auc(judge: AttributeJudge, feats: np.ndarray, expected: Sequence[str | None], attr: str, positive: str) -> float:
    """How far apart the judge puts images stated ``positive`` and images stated otherwise: the AUC of its
    P(``positive``) between the two groups (0.5: no difference it can see; 1: fully apart). Unlike accuracy it does
    not depend on where the head's threshold falls, so a weak judge still shows whether the prompt moves the image.
    Images whose ``expected`` value is None are left out."""
    if attr not in judge.heads:
        raise ValueError(f"the judge has no head for attribute {attr!r} (its heads: {sorted(judge.heads)})")
    classes = list(judge.heads[attr]["classes"])
    if positive not in classes:
        raise ValueError(f"attribute {attr!r}: class {positive!r} is not one of the judge's {classes}")
    p = judge.predict_proba(feats)[attr][:, classes.index(positive)]
    keep = [i for i, e in enumerate(expected) if e is not None]
    return separation_auc([p[i] for i in keep if expected[i] == positive], [p[i] for i in keep if expected[i] != positive])


def grade_predictions(pred: Mapping[str, Sequence[str]], expected: Mapping[str, Sequence[str | None]],
                      classes_of: Mapping[str, Sequence[str]], majority: Mapping[str, str]) -> dict[str, Any]:
    """:func:`judge_images`'s grading of given verdicts ``pred[attr]`` (one per image) against ``expected``;
    ``classes_of`` and ``majority``: per attribute, the head's classes and its training majority class."""
    out: dict[str, Any] = {}
    for attr, values in expected.items():
        if attr not in pred:
            continue
        pairs = [(e, p) for e, p in zip(values, pred[attr]) if e is not None]
        if not pairs:
            continue
        classes = list(classes_of[attr])
        maj = majority[attr]
        conf = {e: {p: 0 for p in classes} for e in classes}
        for e, p in pairs:  # a verdict outside the classes (e.g. no head) is counted, as a miss
            row = conf.setdefault(e, {q: 0 for q in classes})
            row[p] = row.get(p, 0) + 1
        recalls = [conf[e][e] / sum(conf[e].values()) for e in classes if sum(conf[e].values())]
        out[attr] = {
            "n": len(pairs),
            "accuracy": sum(e == p for e, p in pairs) / len(pairs),
            "majority_class": maj,
            "majority_rate": sum(e == maj for e, _ in pairs) / len(pairs),
            "balanced_accuracy": float(np.mean(recalls)),
            "confusion": conf,
        }
    return out


def swap_report(judge: AttributeJudge, attr: str, feats_a: np.ndarray, feats_b: np.ndarray,
                values_a: Sequence[str], values_b: Sequence[str],
                real_values: Sequence[str | None] | None = None) -> dict[str, Any]:
    """How often the judge's verdict follows a one-fact swap of the prompt (same seed per pair).

    ``follows``: the verdict is the prompted value on both sides of the pair. ``moved``: the probability of
    side B's value is higher on B's image than on A's (the swap pushed the image the right way, even if
    not across the judge's boundary). ``verdict_changed``: the two verdicts differ at all.

    ``real_values`` (optional): each pair's source record's own value of ``attr``. Then ``factual_correct`` is the
    judge's accuracy on the side whose prompt keeps the record's value (a scene as photographed) and
    ``edited_correct`` on the side that states the edit (a scene the training set may never show that way):
    which side a failed swap fails on. Pairs whose record holds neither value count in neither.
    """
    if len(feats_a) != len(feats_b) or len(values_a) != len(feats_a) or len(values_b) != len(feats_b):
        raise ValueError("swap_report: both sides need one feature row and one value per pair")
    if real_values is not None and len(real_values) != len(values_a):
        raise ValueError("swap_report: real_values needs one value per pair")
    classes = judge.heads[attr]["classes"]
    pa, pb = judge.predict_proba(feats_a)[attr], judge.predict_proba(feats_b)[attr]
    va, vb = pa.argmax(1), pb.argmax(1)
    ia = np.array([classes.index(v) for v in values_a])
    ib = np.array([classes.index(v) for v in values_b])
    rows = np.arange(len(ia))
    n = len(ia)
    out = {
        "attribute": attr, "pairs": n,
        "follows": float(((va == ia) & (vb == ib)).mean()) if n else float("nan"),
        "moved": float((pb[rows, ib] > pa[rows, ib]).mean()) if n else float("nan"),
        "verdict_changed": float((va != vb).mean()) if n else float("nan"),
        "a_correct": float((va == ia).mean()) if n else float("nan"),
        "b_correct": float((vb == ib).mean()) if n else float("nan"),
    }
    if real_values is not None:
        ok_a, ok_b = va == ia, vb == ib
        fact, edit = [], []
        for i, r in enumerate(real_values):
            if r in (values_a[i], values_b[i]):
                fact.append(ok_a[i] if r == values_a[i] else ok_b[i])
                edit.append(ok_b[i] if r == values_a[i] else ok_a[i])
        out["factual_correct"] = float(np.mean(fact)) if fact else float("nan")
        out["edited_correct"] = float(np.mean(edit)) if edit else float("nan")
        out["pairs_with_real_value"] = len(fact)
    return out


def swap_kept(judge: AttributeJudge, swapped: str, feats_a: np.ndarray, feats_b: np.ndarray,
              expected: Mapping[str, Sequence[str | None]], factual_is_a: Sequence[bool]) -> dict[str, dict[str, float]]:
    """Does a one-fact swap keep the rest of the scene? For every attribute but ``swapped`` (both sides state
    the record's own value, ``expected[attr]``, one per pair): the judge's accuracy on the side whose prompt keeps
    the record's value of ``swapped`` (``factual``) and on the side that states the edit (``edited``), and how
    often its two verdicts agree (``agree``). A model that honours the swap by painting another kind of scene
    shows it here: the edited side's accuracy falls below the factual side's."""
    fa = np.asarray(factual_is_a, dtype=bool)
    if not (len(feats_a) == len(feats_b) == len(fa)):
        raise ValueError("swap_kept: both sides need one feature row per pair and factual_is_a one flag per pair")
    pa, pb = judge.predict(feats_a), judge.predict(feats_b)
    out = {}
    for attr in judge.attributes:
        if attr == swapped or attr not in expected:
            continue
        exp = list(expected[attr])
        if len(exp) != len(fa):
            raise ValueError(f"swap_kept: expected[{attr!r}] needs one value per pair")
        keep = [i for i, v in enumerate(exp) if v is not None]
        if not keep:
            continue
        fact = [(pa if fa[i] else pb)[attr][i] == exp[i] for i in keep]
        edit = [(pb if fa[i] else pa)[attr][i] == exp[i] for i in keep]
        out[attr] = {"n": len(keep), "factual": float(np.mean(fact)), "edited": float(np.mean(edit)),
                     "agree": float(np.mean([pa[attr][i] == pb[attr][i] for i in keep]))}
    return out


def seed_diversity(per_seed: Sequence[np.ndarray], seed: int = 0) -> dict[str, float]:
    """How much a generated image changes with the seed, for a fixed prompt, against how much it changes with
    the prompt.

    ``per_seed``: S >= 2 feature arrays (N, D) (e.g. the judge's Inception features), row i generated from
    prompt i under each seed. ``within``: mean L2 feature distance between two seeds' images of one prompt;
    ``across``: mean distance between images of two different prompts under one seed (each prompt paired with
    another by a seeded derangement); ``ratio`` = within / across: near 0 the seed barely matters (one image per
    prompt, a model that recalls training layouts), near 1 the seed varies the image as much as the prompt does.
    """
    if len(per_seed) < 2:
        raise ValueError(f"seed_diversity needs images of at least 2 seeds, got {len(per_seed)}")
    feats = [np.asarray(f, dtype=np.float64) for f in per_seed]
    n = feats[0].shape[0]
    if n < 2 or any(f.shape != feats[0].shape for f in feats):
        raise ValueError(f"seed_diversity: every seed needs the same >= 2 prompts, got {[f.shape for f in feats]}")
    within = np.mean([np.linalg.norm(feats[a] - feats[b], axis=1).mean()
                      for a in range(len(feats)) for b in range(a + 1, len(feats))])
    perm = np.random.default_rng(seed).permutation(n)
    other = np.empty(n, dtype=int)
    other[perm] = np.roll(perm, 1)  # prompt perm[k] meets prompt perm[k-1]: never itself
    across = np.mean([np.linalg.norm(f - f[other], axis=1).mean() for f in feats])
    return {"within": float(within), "across": float(across), "ratio": float(within / across) if across > 0 else float("nan"),
            "seeds": len(feats), "prompts": int(n)}


def mean_std(values: Sequence[float]) -> dict[str, float]:
    v = np.asarray([x for x in values if x is not None and not np.isnan(x)], dtype=np.float64)
    return {"mean": float(v.mean()) if len(v) else float("nan"), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
            "n": int(len(v))}
