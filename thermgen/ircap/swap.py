"""Prompt pairs that differ in exactly one fact, for the generation swap test.

A swap is built by editing IR-Cap's *facts* of a real record and rendering the captions again with the
same phrasing seed (:func:`thermgen.ircap.render.render_captions`), never by replacing words in a caption.
So side A and side B state the same scene, viewpoint, weather and objects except for one fact:

``time_of_day``  the scene fact ``time_of_day`` set to "day" on one side and "night" on the other (object
                 facts, measured on the real frame, are kept as they are on both sides);
``person``       a record with people (side A: as annotated) against the same record with every Person box
                 removed (side B: "no people");
``cars``         a record with 6 or more cars (side A: "many") against the same record keeping only its first
                 :data:`FEW_CARS` cars (side B: "few"; the 1-5 band of the attribute judge).

Each pair carries the attribute values that the judge (:mod:`thermgen.metrics.attributes`) should see on
each side.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from thermgen.ircap.facts import Fact, infer_facts, is_person
from thermgen.ircap.render import render_captions

SWAP_KINDS = ("time_of_day", "person", "cars")
FEW_CARS = 2
MANY_CARS = 6


@dataclass
class SwapPair:
    """One record rendered twice, with one fact edited. ``stated_a`` / ``stated_b``: the facts each side states.
    ``real_value``: the record's own value of the attribute (one of ``value_a`` / ``value_b``), so that a report
    can tell the side that states the scene as photographed from the side that states the edit."""

    record_id: str
    attribute: str
    value_a: str
    value_b: str
    global_a: str
    fine_a: str
    global_b: str
    fine_b: str
    stated_a: list[dict[str, Any]] = field(default_factory=list)
    stated_b: list[dict[str, Any]] = field(default_factory=list)
    real_value: str | None = None


def _labels(rec: Mapping[str, Any]) -> list[str]:
    return [str(o["label"]) for o in rec["objects"]]


def _render(rec: Mapping[str, Any], scene: list[Fact], per_obj: list[list[Fact]], labels: list[str], meas: dict):
    seed = int((rec.get("captioner") or {}).get("seed", 0))
    return render_captions(scene, per_obj, labels, meas, seed=seed, key=rec["id"])


def _facts(rec: Mapping[str, Any]):
    meas = rec["measurements"]
    labels = _labels(rec)
    if len(meas.get("objects", [])) != len(labels):
        raise ValueError(f"record {rec['id']}: {len(labels)} objects but {len(meas.get('objects', []))} measured "
                         "objects (field 'measurements.objects')")
    scene, per_obj = infer_facts(meas, labels, rec["meta"])
    return scene, per_obj, labels, meas


def _keep_objects(labels, per_obj, meas, keep: Sequence[int]):
    meas2 = copy.deepcopy(meas)
    meas2["objects"] = [meas["objects"][i] for i in keep]
    return [per_obj[i] for i in keep], [labels[i] for i in keep], meas2


def _pair(rec, attr, va, vb, ca, cb, real) -> SwapPair:
    return SwapPair(rec["id"], attr, va, vb, ca.global_caption, ca.fine_caption, cb.global_caption, cb.fine_caption,
                    list(ca.stated), list(cb.stated), real)


def swap_record(rec: Mapping[str, Any], kind: str) -> SwapPair | None:
    """The one-fact swap ``kind`` of ``rec`` (a manifest record), or None when the record does not qualify."""
    if kind not in SWAP_KINDS:
        raise ValueError(f"swap kind must be one of {SWAP_KINDS}, got {kind!r}")
    scene, per_obj, labels, meas = _facts(rec)
    if kind == "time_of_day":
        tod = next((f for f in scene if f.name == "time_of_day"), None)
        if tod is None or tod.value not in ("day", "night"):
            return None
        sides = []
        for value in ("day", "night"):
            edited = [Fact(f.name, value, f.subject, "swap test: edited", {"time_of_day": value})
                      if f.name == "time_of_day" else f for f in scene]
            sides.append(_render(rec, edited, per_obj, labels, meas))
        return _pair(rec, kind, "day", "night", sides[0], sides[1], tod.value)
    if kind == "person":
        people = [i for i, lab in enumerate(labels) if is_person(lab)]
        if not people:
            return None
        keep = [i for i in range(len(labels)) if i not in people]
        a = _render(rec, scene, per_obj, labels, meas)
        b = _render(rec, scene, *_keep_objects(labels, per_obj, meas, keep))
        return _pair(rec, kind, "present", "absent", a, b, "present")  # side A: the record as annotated
    cars = [i for i, lab in enumerate(labels) if lab.strip().lower() == "car"]
    if len(cars) < MANY_CARS:
        return None
    dropped = set(cars[FEW_CARS:])
    keep = [i for i in range(len(labels)) if i not in dropped]
    a = _render(rec, scene, per_obj, labels, meas)
    b = _render(rec, scene, *_keep_objects(labels, per_obj, meas, keep))
    return _pair(rec, kind, "6+", "1-5", a, b, "6+")


def _about_edit(entry: Mapping[str, Any], kind: str) -> bool:
    """Whether a stated-fact entry is about the edited attribute (and so may differ between the sides)."""
    if kind == "time_of_day":
        return entry.get("fact") == "time_of_day"
    label = str(entry.get("label", "")).strip().lower()
    return is_person(label) if kind == "person" else label == "car"


def _key(entry: Mapping[str, Any]) -> str:
    import json

    return json.dumps({k: v for k, v in entry.items() if k != "objects"}, sort_keys=True)


def other_differences(pair: SwapPair) -> list[dict[str, Any]]:
    """Stated facts that differ between the two sides but are *not* about the edited attribute.

    Empty for a clean one-fact swap. Not empty when a caption had to drop a clause to stay within 77 tokens
    on one side only (a longer phrase at night, say): such a pair states more than one change.
    """
    a = {_key(e): e for e in pair.stated_a}
    b = {_key(e): e for e in pair.stated_b}
    return [e for k, e in {**a, **b}.items() if (k in a) != (k in b) and not _about_edit(e, pair.attribute)]


def swap_pairs(records: Sequence[Mapping[str, Any]], kind: str, max_pairs: int | None = None,
               clean_only: bool = True) -> list[SwapPair]:
    """Swap pairs of ``kind`` for the qualifying records (at most ``max_pairs``, spread evenly over the list).

    clean_only: keep only pairs whose captions state no other difference (:func:`other_differences`).
    """
    pairs = [p for p in (swap_record(r, kind) for r in records) if p is not None]
    if clean_only:
        pairs = [p for p in pairs if not other_differences(p)]
    if max_pairs is not None and len(pairs) > max_pairs:
        step = len(pairs) / max_pairs
        pairs = [pairs[int(i * step)] for i in range(max_pairs)]
    return pairs


def contrast_captions(rec: Mapping[str, Any], kind: str = "time_of_day", clean_only: bool = True) -> tuple[str, str] | None:
    """(global, fine) captions of ``rec`` with its ``kind`` fact set to the other value, rendered from its edited
    facts as the swap test does: the *contrast prompt* of contrastive guidance (the pipeline's ``contrast_prompt``,
    or the negative prompt), so that guidance pushes along the one fact rather than only away from the empty
    prompt. None when the record does not qualify (for ``time_of_day``:
    no day/night fact; ``person``: no people to remove; ``cars``: fewer than :data:`MANY_CARS` cars), and with
    ``clean_only`` when the edited captions state another difference too (:func:`other_differences`: a clause
    dropped on one side only to fit 77 tokens), since guidance would then push along that clause as well; 5 of
    HIT-UAV test's 579 day/night contrasts."""
    pair = swap_record(rec, kind)
    if pair is None or (clean_only and other_differences(pair)):
        return None
    if pair.real_value == pair.value_a:
        return pair.global_b, pair.fine_b
    return pair.global_a, pair.fine_a


# Time-of-day phrases of IR-Cap's captions, its terse phrasings and the held-out queries, each with the phrase that
# states the other time of day; longest first, so that "at night" is swapped as one phrase, not as "night".
_TIME_SWAPS = {
    "at night-time": "in daytime", "at nighttime": "in the daytime", "at night": "by day", "after dark": "by day",
    "in the dark": "in daylight", "night-time": "daytime", "nighttime": "daytime", "night": "day",
    "during daylight hours": "at night", "during the day": "at night", "in the daytime": "at nighttime",
    "in daytime": "at night-time", "in the day": "at night", "in daylight": "in the dark", "by day": "at night",
    "daytime": "nighttime", "daylight": "night", "day": "night",
}
_TIME_RE = re.compile(r"\b(" + "|".join(re.escape(k) for k in sorted(_TIME_SWAPS, key=len, reverse=True)) + r")\b",
                      re.IGNORECASE)


def swap_time_words(text: str) -> str | None:
    """``text`` with every time-of-day phrase swapped for one stating the other time ("a road at night" -> "a road
    by day"; "day, 60 m, five cars" -> "night, 60 m, five cars"), for a contrast prompt written in a user's own words.
    None when the text states no time of day. A word-level edit, so unlike :func:`contrast_captions` it cannot
    re-render facts that depend on the time of day; prompts built from IR-Cap facts should use that instead."""
    if not _TIME_RE.search(text):
        return None

    def repl(m: re.Match) -> str:
        out = _TIME_SWAPS[m.group(0).lower()]
        return out[0].upper() + out[1:] if m.group(0)[0].isupper() else out

    return _TIME_RE.sub(repl, text)
