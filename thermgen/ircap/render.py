"""Render facts into the two IR-Cap captions, within the CLIP token budget.

* **global** caption, begins ``"An infrared thermal image of"``: scene, viewpoint (altitude and camera
  angle), time of day, weather, and the annotated objects with their counts and layout
  ("five people, three in the upper left and two near the centre").
* **fine** caption, begins ``"Thermal infrared image"``: heat signatures per object group with
  positions and their physical causes (running vs parked vehicles, body heat, hot spots), then
  scene physics (cold sky, wet surfaces, contrast).

Only facts produced by :mod:`thermgen.ircap.facts` are stated; objects whose facts were undecidable
are counted in the global caption (the annotation says they exist) but get no heat claim.

Wording varies: each clause has several phrasings and the choice is drawn from
``random.Random(f"{seed}:{key}")``, so the same (seed, image) always gives the same captions and
different images do not share one fixed sentence. Counts use number words up to twenty
(one token each) and digits above.

Length: each caption is at most ``MAX_TOKENS`` (77) tokens of open_clip's tokenizer, counted with
start/end tokens. When a caption is too long, whole clauses are dropped, lowest priority first
(never cut mid-word); object counts are the last thing ever dropped from the global caption.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from .facts import Fact, is_ignored, is_person, is_vehicle, norm_label
from .measure import grid_cell

MAX_TOKENS = 77
GLOBAL_PREFIX = "An infrared thermal image of"
FINE_PREFIX = "Thermal infrared image"

NUMBER_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
                "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen", "twenty"]
_WORD_TO_NUM = {w: i for i, w in enumerate(NUMBER_WORDS)}

#: (singular, plural) noun per normalised label; other labels fall back to a naive plural.
NOUNS = {
    "person": ("person", "people"),
    "car": ("car", "cars"),
    "bicycle": ("bicycle", "bicycles"),
    "othervehicle": ("other vehicle", "other vehicles"),
    "other vehicle": ("other vehicle", "other vehicles"),
    "motorcycle": ("motorcycle", "motorcycles"),
    "bus": ("bus", "buses"),
    "truck": ("truck", "trucks"),
    "dog": ("dog", "dogs"),
}

# Colour words never appear in IR-Cap captions (thermal images have none); backends are checked too.
COLOUR_WORDS = {"red", "green", "blue", "yellow", "orange", "purple", "pink", "brown", "colorful", "colourful",
                "colored", "coloured", "violet", "magenta", "cyan", "turquoise", "beige"}


@lru_cache(maxsize=1)
def _tokenizer():
    """open_clip's ``SimpleTokenizer`` (the ViT-B-16 tokenizer; its BPE ships in the wheel, no network).

    ``import open_clip`` pulls in torchvision and timm (seconds, more on a busy machine) although
    only the tokenizer module is needed; load that one file directly unless open_clip is already
    imported. Building the BPE tables takes ~2-3 s, so it is done once per process.
    """
    import importlib.util
    import sys

    mod = sys.modules.get("open_clip.tokenizer")
    if mod is None:
        spec = importlib.util.find_spec("open_clip")
        if spec is None or not spec.submodule_search_locations:
            raise ImportError("open_clip_torch is required to count caption tokens")
        path = Path(list(spec.submodule_search_locations)[0]) / "tokenizer.py"
        tspec = importlib.util.spec_from_file_location("_thermgen_open_clip_tokenizer", path)
        mod = importlib.util.module_from_spec(tspec)
        tspec.loader.exec_module(mod)
    return mod.SimpleTokenizer()


def count_tokens(text: str) -> int:
    """Number of open_clip (ViT-B-16) tokens of ``text`` including the start and end tokens."""
    return len(_tokenizer().encode(text)) + 2


def noun(label: str, n: int) -> str:
    """The caption noun for ``n`` objects of ``label`` ("Person", 2 -> "people"; "TrafficSign", 1 -> "traffic sign")."""
    key = norm_label(label)
    if key not in NOUNS:
        key = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", label.strip()).lower().replace("_", " ")
    sing, plur = NOUNS.get(key) or (key, key + ("es" if key.endswith(("s", "x", "ch", "sh")) else "s"))
    return sing if n == 1 else plur


def number(n: int) -> str:
    """Number word up to twenty (one CLIP token each), digits above."""
    return NUMBER_WORDS[n] if 0 <= n < len(NUMBER_WORDS) else str(n)


_TENS = ["", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]


def spell_number(n: int) -> str:
    """An integer 0-999 in English words ("one hundred and twenty", "sixty-five"); digits outside that range."""
    if 0 <= n < 20:
        return NUMBER_WORDS[n]
    if 20 <= n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else "-" + NUMBER_WORDS[n % 10])
    if 100 <= n < 1000:
        rest = n % 100
        return NUMBER_WORDS[n // 100] + " hundred" + ("" if rest == 0 else " and " + spell_number(rest))
    return str(n)


def parse_counts(text: str, labels: list[str]) -> dict[str, list[int]]:
    """Find every ``"<count> <noun>"`` phrase for the given labels in a caption.

    Returns ``{label: [count, ...]}`` in order of appearance (labels never mentioned are absent).
    Used by tests, the report and the model-backend validator to read counts back from text.
    """
    out: dict[str, list[int]] = {}
    num = r"(\d+|" + "|".join(NUMBER_WORDS) + r")"
    for lab in dict.fromkeys(labels):
        sing, plur = noun(lab, 1), noun(lab, 2)
        pat = re.compile(rf"\b{num}\s+(?:{re.escape(plur)}|{re.escape(sing)})\b", re.IGNORECASE)
        for m in pat.finditer(text):
            tok = m.group(1).lower()
            out.setdefault(lab, []).append(int(tok) if tok.isdigit() else _WORD_TO_NUM[tok])
    return out


_WHERE = {
    "upper left": "in the upper left", "upper centre": "at the top", "upper right": "in the upper right",
    "middle left": "on the left", "centre": "near the centre", "middle right": "on the right",
    "lower left": "in the lower left", "lower centre": "at the bottom", "lower right": "in the lower right",
}


def where(cell: str) -> str:
    """Prepositional phrase for a 3x3 grid cell ("upper left" -> "in the upper left")."""
    return _WHERE.get(cell, f"in the {cell}")


def _cell_of(c: list[float]) -> str:
    return grid_cell(c[0], c[1])


def layout_phrase(centres: list[list[float]], rng: random.Random) -> tuple[str, str]:
    """Where a group of objects lies: returns ``(detailed, compact)`` phrases.

    centres: ``[x, y]`` in [0, 1] of the frame per object. The detailed phrase may break the group
    down by grid cell ("three in the upper left and two near the centre"); the compact one only
    names the dominant place or "across the frame".
    """
    n = len(centres)
    cells = Counter(_cell_of(c) for c in centres)
    (top_cell, top_n), = cells.most_common(1)
    if n == 1 or len(cells) == 1:
        p = where(top_cell)
        return p, p
    pts = np.asarray(centres, dtype=float)
    compact = f"mostly {where(top_cell)}" if top_n / n >= 0.6 else rng.choice(["across the frame", "spread over the frame", "scattered across the scene"])
    if n >= 3:
        # A row (parked cars, a queue of people): the points lie close to one line.
        centred = pts - pts.mean(0)
        _, s, vt = np.linalg.svd(centred, full_matrices=False)
        extent = np.ptp(centred @ vt[0])
        thickness = s[1] / np.sqrt(n) if len(s) > 1 else 0.0
        if extent >= 0.3 and thickness <= 0.04:
            a, b = pts[np.argmin(centred @ vt[0])], pts[np.argmax(centred @ vt[0])]
            ca, cb = _cell_of(a.tolist()), _cell_of(b.tolist())
            if ca != cb:
                a_name = "the centre" if ca == "centre" else f"the {ca}"
                b_name = "the centre" if cb == "centre" else f"the {cb}"
                row = rng.choice([f"in a row from {a_name} to {b_name}", f"lined up from {a_name} to {b_name}"])
                return row, row
    if top_n / n >= 0.8:
        return compact, compact
    parts = cells.most_common()
    if len(parts) > 3:
        shown = parts[:2]
        rest = n - sum(k for _, k in shown)
        detailed = ", ".join(f"{number(k)} {where(c)}" for c, k in shown) + f" and {number(rest)} elsewhere"
    else:
        detailed = ", ".join(f"{number(k)} {where(c)}" for c, k in parts[:-1]) + f" and {number(parts[-1][1])} {where(parts[-1][0])}"
    return detailed, compact


@dataclass
class Clause:
    text: str
    priority: int  # lower = more important, dropped last
    facts: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Captions:
    """The two captions of one image and the facts they actually state."""

    global_caption: str
    fine_caption: str
    stated: list[dict[str, Any]]
    tokens_global: int
    tokens_fine: int
    dropped: int = 0


def _fit(parts_fn, clauses: list[Clause]) -> tuple[str, list[Clause], int]:
    """Join clauses with ``parts_fn``; drop the lowest-priority clause until within MAX_TOKENS."""
    kept = list(clauses)
    dropped = 0
    while True:
        text = parts_fn(kept)
        if count_tokens(text) <= MAX_TOKENS or not kept:
            return text, kept, dropped
        droppable = [c for c in kept if c.priority >= 0]
        if not droppable:
            return text, kept, dropped
        worst = max(droppable, key=lambda c: (c.priority, kept.index(c)))
        kept.remove(worst)
        dropped += 1


def _fmt_alt(a: float) -> str:
    return f"{int(round(a))} m"


def _view_clause(facts: dict[str, Fact], rng: random.Random) -> Clause | None:
    alt = facts.get("altitude")
    view = facts.get("view")
    if alt is None and view is None:
        return None
    ang = view.evidence["view_angle_deg"] if view else None
    alt_s = _fmt_alt(alt.value) if alt else None
    if view is not None and view.value == "nadir":
        opts = [f"looking straight down from {alt_s}" if alt_s else "looking straight down",
                f"in a top-down view from {alt_s}" if alt_s else "in a top-down view",
                f"seen from directly above at {alt_s}" if alt_s else "seen from directly above"]
    elif view is not None:
        a = int(round(ang))
        kind = "steep" if view.value == "steep" else "oblique"
        art = "an" if kind == "oblique" else "a"
        opts = [f"seen from {alt_s} at {art} {kind} {a}° angle" if alt_s else f"seen at {art} {kind} {a}° angle",
                f"in {art} {kind} view from {alt_s}, camera tilted {a}°" if alt_s else f"in {art} {kind} view, camera tilted {a}°",
                f"viewed from {alt_s} with the camera {a}° below the horizon" if alt_s else f"viewed with the camera {a}° below the horizon"]
    else:
        opts = [f"seen from {alt_s} above the ground", f"taken from {alt_s} up"]
    return Clause(rng.choice(opts), 2, [{"fact": "altitude", "value": alt.value} if alt else {},
                                        {"fact": "view", "value": view.value} if view else {}])


def _scene_noun(facts: dict[str, Fact], rng: random.Random) -> str:
    if "scene" in facts:
        s = facts["scene"].value.replace("_", " ")
        if not s.endswith(("scene", "area")):
            s += rng.choice([" scene", "", " area"])
        return ("an " if s[:1].lower() in "aeiou" else "a ") + s
    if "altitude" in facts:  # a sensor height is given: an aerial platform
        return rng.choice(["an aerial scene", "a scene below a drone", "the ground below a drone"])
    return rng.choice(["a scene", "an outdoor scene"])


_TIME = {"day": ["in daytime", "by day", "during the day"], "night": ["at night", "after dark", "at night-time"]}
_WEATHER = {"clear": ["in clear weather", "under a clear sky"], "rain": ["in the rain", "in rainy weather"],
            "fog": ["in fog", "in foggy weather"], "snow": ["in snow", "in snowy weather"], "overcast": ["under overcast skies", "on an overcast day"]}


def _weather_text(w: str, tod: str | None, rng: random.Random) -> str:
    opts = [o for o in _WEATHER.get(w, [f"in {w} weather"]) if not (tod is not None and "day" in o)]
    return rng.choice(opts or [f"in {w} weather"])


def _objects_clause(groups: dict[str, list[int]], centres: dict[int, list[float]], rng: random.Random,
                    detail_for: set[str], omitted: int = 0) -> str:
    """"five people, three in the upper left and two near the centre, and one car on the right".

    omitted: objects of labels left out to fit the token limit, summarised as "N other objects".
    """
    items = []
    for lab, idx in groups.items():
        n = len(idx)
        pts = [centres[i] for i in idx if centres.get(i) is not None]
        detailed, compact = layout_phrase(pts, rng) if pts else ("", "")
        # A breakdown must add up to the count; with unmeasurable boxes only the compact phrase does.
        loc = detailed if lab in detail_for and len(pts) == n else compact
        item = f"{number(n)} {noun(lab, n)}"
        if loc:
            item += (", " + loc if loc[0].isdigit() or loc.split()[0] in _WORD_TO_NUM else " " + loc)
        items.append(item)
    if omitted:
        items.append(f"{number(omitted)} other {'object' if omitted == 1 else 'objects'}")
    if not items:
        return ""
    if len(items) == 1:
        return items[0]
    # Items may contain commas of their own; "; " would read oddly, so use ", and" / ","
    return ", ".join(items[:-1]) + " and " + items[-1] if all("," not in it for it in items) else "; ".join(items[:-1]) + "; and " + items[-1]


def render_captions(
    scene: list[Fact],
    per_object: list[list[Fact]],
    labels: list[str],
    measurements: dict[str, Any],
    seed: int = 0,
    key: str = "",
) -> Captions:
    """Write the global and fine captions of one image.

    Args:
        scene: scene facts (:func:`thermgen.ircap.facts.scene_facts`).
        per_object: facts per box, same order as ``labels``.
        labels: one label per box.
        measurements: the image's measurements (for object positions).
        seed, key: phrasing is drawn from ``random.Random(f"{seed}:{key}")``; pass the record id as key.
    """
    rng = random.Random(f"{seed}:{key}")
    sf = {f.name: f for f in scene}
    objs = measurements["objects"]
    centres = {i: o.get("center") for i, o in enumerate(objs) if o.get("measurable")}
    groups: dict[str, list[int]] = {}
    for i, lab in enumerate(labels):
        if not is_ignored(lab):
            groups.setdefault(lab, []).append(i)
    groups = dict(sorted(groups.items(), key=lambda kv: -len(kv[1])))
    tod = sf["time_of_day"].value if "time_of_day" in sf else None

    # ---------------- global ----------------
    view_c = _view_clause(sf, rng)
    scene_np = _scene_noun(sf, rng)
    time_c = Clause(rng.choice(_TIME.get(tod, [f"at {tod}"])), 1, [{"fact": "time_of_day", "value": tod}]) if tod else None
    weather_c = (Clause(_weather_text(sf["weather"].value, tod, rng), 1, [{"fact": "weather", "value": sf["weather"].value}])
                 if "weather" in sf else None)
    extras: list[Clause] = []
    if "contrast" in sf:
        lvl = sf["contrast"].value
        extras.append(Clause(rng.choice([f"The scene has {lvl} thermal contrast.", f"Thermal contrast is {lvl} overall.",
                                         f"Overall the frame shows {lvl} contrast."]), 4, [{"fact": "contrast", "value": lvl}]))
    if "warm_areas" in sf:
        extras.append(Clause(rng.choice(["Large areas of the ground are markedly warm.", "Warm surfaces cover much of the frame."]), 5,
                             [{"fact": "warm_areas", "value": True}]))
    if "cold_sky" in sf:
        extras.append(Clause(rng.choice(["The cold sky fills the top of the frame.", "Cold sky is visible at the top."]), 3,
                             [{"fact": "cold_sky", "value": True}]))
    # Layout detail per label is a droppable clause of its own: (label, detailed?) toggles.
    detail_clauses = [Clause(lab, 3 + k, []) for k, lab in enumerate(groups)]
    # Counts go last, smallest group first (only datasets with very many labels ever need it):
    # a dropped label is summarised as "N other objects".
    count_clauses = [Clause(lab, 0, [{"fact": "count", "label": lab, "value": len(idx)}]) for lab, idx in groups.items()]
    verb = rng.choice([", with", ", showing", ". It shows", ", containing"])
    empty = rng.choice(["with no annotated people or vehicles", "with no annotated objects"])
    order = rng.random() < 0.5
    head = [Clause(GLOBAL_PREFIX + " " + scene_np, -1)]
    core = [c for c in ([view_c, time_c, weather_c] if order else [time_c, weather_c, view_c]) if c]

    def global_text(kept: list[Clause]) -> str:
        details = {c.text for c in kept if c in detail_clauses}
        # Time and weather read as one phrase ("at night under a clear sky"); the viewpoint is set
        # off by commas because it may carry its own ("in a steep view from 60 m, camera tilted 60°").
        when = " ".join(c.text for c in (time_c, weather_c) if c is not None and c in kept)
        view = view_c.text if view_c is not None and view_c in kept else ""
        parts = [p for p in ((view, when) if order else (when, view)) if p]
        ctx = head[0].text + "".join((" " if k == 0 and p == when else ", ") + p for k, p in enumerate(parts))
        if groups:
            shown = {c.text for c in count_clauses if c in kept}
            omitted = sum(len(idx) for lab, idx in groups.items() if lab not in shown)
            objs_txt = _objects_clause({lab: idx for lab, idx in groups.items() if lab in shown}, centres,
                                       rng=random.Random(f"{seed}:{key}:layout"), detail_for=details, omitted=omitted)
            s = ctx + verb + " " + objs_txt + "."
        else:
            s = ctx + ", " + empty + "."
        tail = " ".join(c.text for c in extras if c in kept)
        return s + (" " + tail if tail else "")

    g_text, g_kept, g_drop = _fit(global_text, count_clauses + core + detail_clauses + extras)
    stated = [dict(f, caption="global") for c in g_kept if c not in detail_clauses for f in c.facts if f]

    # ---------------- fine ----------------
    fine_clauses = _fine_group_clauses(groups, per_object, sf, centres, rng)
    fine_clauses += _fine_scene_clauses(sf, rng)
    opener = FINE_PREFIX + (" " + rng.choice(_TIME[tod]) if tod in _TIME and rng.random() < 0.5 else "")
    if tod in _TIME and opener == FINE_PREFIX:
        opener = FINE_PREFIX + rng.choice([f", {tod} scene", f" of a {tod}time scene"]).replace("nighttime", "night-time")

    nothing = rng.choice([": no object stands out thermally and no scene-wide heat pattern is measurable.",
                          ": no measurable heat signature stands out."])

    def fine_text(kept: list[Clause]) -> str:
        if not kept:
            return opener + nothing
        body = "; ".join(c.text for c in kept)
        return opener + ": " + body[0].lower() + body[1:] + "."

    f_text, f_kept, f_drop = _fit(fine_text, fine_clauses)
    if tod in _TIME:
        stated.append({"fact": "time_of_day", "value": tod, "caption": "fine"})
    stated += [dict(f, caption="fine") for c in f_kept for f in c.facts]
    return Captions(g_text, f_text, stated, count_tokens(g_text), count_tokens(f_text), g_drop + f_drop)


def _group_phrase(label: str, kind: str, value: Any, tod: str | None, n: int, rng: random.Random) -> str | None:
    """Verb phrase for a group of ``n`` objects sharing one heat fact."""
    pl = n != 1
    are, sits, shows, stands, glows = ("are", "sit", "show", "stand", "glow") if pl else ("is", "sits", "shows", "stands", "glows")
    blends = "blend" if pl else "blends"
    their = "their" if pl else "its"
    if kind == "vehicle_state" and value == "running":
        return rng.choice([f"{shows} engine heat, a hot spot at one end: running or just driven",
                           f"{are} warmer than the road with a concentrated hot spot, recently driven",
                           f"{are} running or only just stopped, with a hot engine or exhaust area"])
    if kind == "vehicle_state" and value == "parked":
        opts = [f"{sits} at or below the road temperature, parked and cooled",
                f"{are} no warmer than the ground around {'them' if pl else 'it'}, parked with cold engines"]
        if tod == "night":  # at night nothing offsets the metal's radiative loss to the sky
            opts.append(f"{are} parked and cooled, metal and glass radiating to the cold night sky")
        return rng.choice(opts)
    if kind == "person_heat" and value == "warm":
        if tod == "night":
            return rng.choice([f"{glows} warm against the cool night ground from body heat",
                               f"{stands} out warm against the cool night ground, body heat",
                               (f"{are} bright warm figures on the cool ground, body heat" if pl
                                else "is a bright warm figure on the cool ground, body heat")])
        return rng.choice([f"{stands} out warm from body heat", f"{are} warmer than {their} surroundings, body heat"])
    if kind == "person_heat" and value == "not_warm":
        if tod == "day":
            return rng.choice([f"{are} no warmer than the sun-warmed ground", f"barely {'stand' if pl else 'stands'} out against the sun-heated ground"])
        return rng.choice([f"{are} no warmer than {their} surroundings", f"barely {'stand' if pl else 'stands'} out thermally"])
    if kind == "polarity":
        if value == "warm":
            return rng.choice([f"{are} warmer than {their} surroundings", f"{stands} out warm against the ground"])
        if value == "cold":
            return rng.choice([f"{are} colder than the ground around {'them' if pl else 'it'}", f"{are} darker, cooler than {their} surroundings"])
        if value == "neutral":
            return rng.choice([f"{blends} in at the ground temperature", f"{are} at the temperature of {their} surroundings"])
        if value == "mixed":
            opts = [f"{are} partly cooler, partly warmer than the ground", f"{shows} a mix of cold and warm parts"]
            if is_vehicle(label):  # glass and bare metal mirror the cold sky; tyres, engine stay warmer
                opts.append(f"{shows} cold glass and metal with warmer parts")
            return rng.choice(opts)
    return None


def _group_key(label: str, facts: list[Fact]) -> tuple[str, Any] | None:
    by = {f.name: f for f in facts}
    if is_vehicle(label) and "vehicle_state" in by:
        return ("vehicle_state", by["vehicle_state"].value)
    if is_person(label) and "person_heat" in by:
        return ("person_heat", by["person_heat"].value)
    if "polarity" in by:
        return ("polarity", by["polarity"].value)
    return None


def _fine_group_clauses(groups, per_object, sf, centres, rng) -> list[Clause]:
    tod = sf["time_of_day"].value if "time_of_day" in sf else None
    oblique = "view" in sf and sf["view"].value != "nadir"
    out: list[tuple[int, Clause]] = []
    for lab, idx in groups.items():
        sub: dict[tuple[str, Any], list[int]] = {}
        for i in idx:
            k = _group_key(lab, per_object[i])
            if k is not None:
                sub.setdefault(k, []).append(i)
        total = len(idx)
        for (kind, value), members in sub.items():
            n = len(members)
            phrase = _group_phrase(lab, kind, value, tod, n, rng)
            if phrase is None:
                continue
            pts = [centres[i] for i in members if centres.get(i) is not None]
            _, loc = layout_phrase(pts, rng) if pts else ("", "")
            if n == total and n == 2:
                subj = rng.choice([f"both {noun(lab, n)}", f"the two {noun(lab, n)}"])
            elif n == total and n > 1:
                subj = rng.choice([f"all {number(n)} {noun(lab, n)}", f"the {number(n)} {noun(lab, n)}"])
            elif n == total:
                subj = f"the {number(n)} {noun(lab, n)}" if rng.random() < 0.5 else f"{number(n)} {noun(lab, n)}"
            else:
                subj = f"{number(n)} {noun(lab, n)}"
            text = f"{subj} {loc} {phrase}".replace("  ", " ") if loc else f"{subj} {phrase}"
            facts = [{"fact": kind, "value": value, "label": lab, "count": n, "objects": members}]
            if kind == "vehicle_state" and value == "running":
                # Radiometric data: say how hot, in kelvin above the surroundings (measured, box p98 vs ring).
                ks = [f.evidence.get("top_k") for i in members for f in per_object[i] if f.name == "vehicle_state"]
                if ks and all(k is not None for k in ks):
                    k = int(round(max(ks)))
                    text += rng.choice([f", up to {k} K above the road", f", hottest parts {k} K above their surroundings"]) if n > 1 \
                        else rng.choice([f", {k} K above the road at its hottest", f", its hottest part {k} K above the surroundings"])
            # Heat distribution: stated when most of the group shares it.
            dists = [next((f for f in per_object[i] if f.name == "heat_distribution"), None) for i in members]
            spots = [d.evidence["where"] for d in dists if d is not None and d.value == "hot_spot"]
            evens = [d for d in dists if d is not None and d.value == "even"]
            if spots and len(spots) * 2 > n:
                side, cnt = Counter(spots).most_common(1)[0]
                if cnt * 2 > n:
                    if is_vehicle(lab) and oblique and side == "bottom":
                        extra = rng.choice(["with heat low on the body at tyres and undercarriage", "hottest low down, at the tyres"])
                    elif is_vehicle(lab):
                        extra = rng.choice([f"hottest toward the {side} end", f"with heat concentrated at the {side}"])
                    else:
                        extra = rng.choice([f"with a hot spot at the {side}", f"hottest at the {side}"])
                    text += ", " + extra
                    facts.append({"fact": "heat_distribution", "value": "hot_spot", "where": side, "label": lab,
                                  "objects": [i for i, d in zip(members, dists) if d is not None and d.value == "hot_spot" and d.evidence["where"] == side]})
            elif evens and len(evens) * 2 > n:
                text += ", " + rng.choice(["uniform in temperature", "with an even temperature across the body"])
                facts.append({"fact": "heat_distribution", "value": "even", "label": lab,
                              "objects": [i for i, d in zip(members, dists) if d is not None and d.value == "even"]})
            out.append((n, Clause(text, 0, facts)))
    out.sort(key=lambda t: -t[0])
    # Priority by group size: the largest group is the last to go.
    return [Clause(c.text, 10 + k, c.facts) for k, (_, c) in enumerate(out)]


def _fine_scene_clauses(sf: dict[str, Fact], rng: random.Random) -> list[Clause]:
    out = []
    if "cold_sky" in sf:
        out.append(Clause(rng.choice(["the sky at the top is a cold radiative sink", "the cold sky acts as a radiative heat sink"]), 20,
                          [{"fact": "cold_sky", "value": True}]))
    if "wet_surface" in sf:
        out.append(Clause(rng.choice(["wet ground emits closer to its true temperature (emissivity about 0.97 versus 0.92 dry)",
                                      "rain-wet surfaces have higher emissivity, about 0.97 against 0.92 when dry"]), 21,
                          [{"fact": "wet_surface", "value": True}]))
    if "contrast" in sf:
        f = sf["contrast"]
        if f.value == "low":
            cause = f.evidence.get("cause")
            txt = {"rain": "rain evens out surface temperatures, so contrast is low",
                   "fog": "fog attenuates the signal, so contrast is low"}.get(cause) or rng.choice(
                ["overall thermal contrast is low", "temperatures across the scene are close together"])
        else:
            txt = rng.choice(["temperatures vary strongly across the scene", "overall thermal contrast is high"])
        out.append(Clause(txt, 22, [{"fact": "contrast", "value": f.value}]))
    if "warm_areas" in sf:
        out.append(Clause(rng.choice(["large surface areas are markedly warm", "broad warm patches cover the ground"]), 23,
                          [{"fact": "warm_areas", "value": True}]))
    return out


# ---------------------------------------------------------------------------------------------- terse variants
_TERSE_TIME = {"day": ["day", "daytime", "by day", "daylight", "in the day"],
               "night": ["night", "night-time", "nighttime", "after dark", "at night"]}


def _terse_metres(m: int, rng: random.Random) -> str:
    """An altitude as people write it: digits or words, any common spelling of the unit."""
    if rng.random() < 0.3:
        return f"{spell_number(m)} {rng.choice(['metres', 'meters'])}"
    return rng.choice([f"{m} m", f"{m}m", f"{m} metres", f"{m} meters"])


def _terse_degrees(a: int, rng: random.Random) -> str:
    return rng.choice([f"{a}°", f"{a} degrees", f"{a} deg"])


def render_terse(scene: list[Fact], labels: list[str], measurements: dict[str, Any], seed: int = 0, key: str = "") -> str:
    """A terse global-caption variant: the same facts as fragments, in another structure.

    Text augmentation for retrieval by a user's own words (``thermgen.caption --terse-variants K``): the
    fragments come in random order, counts as digits or words, each object group with or without where it
    lies, and any of time, weather, altitude and view may be left out (counts never are), so the model meets
    captions that state part of the facts in an order of their own. Numbers and units come as people write
    them (altitudes as "100 m", "100m", "100 meters" or "one hundred metres"; angles as "30°", "30 degrees" or
    "30 deg"), so that a text tower trained from scratch meets every common spelling of a fact. Every fragment
    is a fact the global caption states too (an image without annotated people or vehicles says so, as the
    global caption does), except "no people" / "no cars": an absence, said only when the annotation is
    complete (no "don't care" region that may hide one).
    Drawn from ``random.Random(f"{seed}:{key}:terse")``.
    """
    rng = random.Random(f"{seed}:{key}:terse")
    text = _terse(scene, labels, measurements, rng, layout=True)
    # Within the token budget: without the object positions (counts are never dropped).
    return text if count_tokens(text) <= MAX_TOKENS else _terse(scene, labels, measurements, rng, layout=False)


def _terse(scene: list[Fact], labels: list[str], measurements: dict[str, Any], rng: random.Random, layout: bool) -> str:
    sf = {f.name: f for f in scene}
    groups: dict[str, list[int]] = {}
    for i, lab in enumerate(labels):
        if not is_ignored(lab):
            groups.setdefault(lab, []).append(i)
    centres = {i: o.get("center") for i, o in enumerate(measurements["objects"]) if o.get("measurable")}
    digits = rng.random() < 0.5
    items = []
    for lab, idx in sorted(groups.items(), key=lambda kv: -len(kv[1])):
        n = len(idx)
        item = f"{n if digits else number(n)} {noun(lab, n)}"
        pts = [centres[i] for i in idx if centres.get(i) is not None]
        if layout and pts and len(pts) == n and rng.random() < 0.5:  # a place only when every box was measured
            item += " " + layout_phrase(pts, rng)[1]
        items.append(item)
    # Absence is a measured fact only when the annotation is complete (no "don't care" regions that may hide any).
    if not any(is_ignored(lab) for lab in labels):
        present = {norm_label(lab) for lab in labels}
        items += [f"no {noun(lab, 2)}" for lab in ("person", "car") if lab not in present and rng.random() < 0.3]
    context = []
    if "time_of_day" in sf and sf["time_of_day"].value in _TERSE_TIME:
        context.append(rng.choice(_TERSE_TIME[sf["time_of_day"].value]))
    if "weather" in sf:
        context.append(rng.choice({"clear": ["clear sky", "clear"], "overcast": ["overcast"], "rain": ["rain"], "fog": ["fog"],
                                   "snow": ["snow"]}.get(sf["weather"].value, [sf["weather"].value])))
    if "altitude" in sf:
        m = int(round(sf["altitude"].value))
        context.append(rng.choice(["altitude {}", "{} high", "flying at {}", "{} above ground", "from {}"]).format(_terse_metres(m, rng)))
    if "view" in sf:
        a = int(round(sf["view"].evidence.get("view_angle_deg", 90)))
        context.append(rng.choice(["straight down", "top-down", "nadir view", "vertical view"]) if sf["view"].value == "nadir"
                       else rng.choice(["camera at {}", f"{sf['view'].value} view at {{}}", "{} below the horizon", "tilted {} down",
                                        "{} oblique"]).format(_terse_degrees(a, rng)))
    context = [c for c in context if rng.random() >= 0.3]  # a part of the facts, as a user would state them
    parts = items + context
    rng.shuffle(parts)
    if not items:
        parts.append("no annotated objects")
    sep = rng.choice([", ", "; ", ". "])
    if sep == ". ":
        parts = [q[:1].upper() + q[1:] for q in parts]
    text = sep.join(parts)
    if rng.random() < 0.5:
        text = rng.choice(["thermal image: ", "infrared: ", "IR frame, "]) + text
    return text[:1].upper() + text[1:] + "."
