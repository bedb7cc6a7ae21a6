"""Physical facts from measurements: explicit rules, documented thresholds, evidence kept.

Every fact is a :class:`Fact` that names its subject (the scene or one object), its value, the
rule that produced it and the measured numbers (``evidence``) the rule read. A rule whose inputs
are missing (``None``: not measurable, no metadata) or whose inputs fall between its thresholds
yields **no fact**: the captioner then says nothing about it. That is the whole point of IR-Cap
here: the paper's captions were written from the RGB twin and failed on motion state, heat
distribution and emissivity; these rules only say what the thermal pixels (and the metadata) show.

Contrasts are in units of the image's robust spread (``p95 - p5``, see
:mod:`thermgen.ircap.measure`), so the same thresholds hold for 8-bit AGC frames and for
radiometric ones. ``C``, ``HI``, ``LO``, ``TOP`` below are an object's ``contrast_rel`` (box median
vs ring median), ``hi_rel`` (box p90 vs ring), ``lo_rel`` (box p10 vs ring) and ``top_rel`` (box p98
vs ring); ``TOPZ`` is ``top_z`` (box p98 vs ring, in robust sigmas of the ring); ``PEAK`` is
``peak_rel`` (box p98 vs box median) and ``OFF`` the hot-spot offset from the box centre (0 centre,
1 edge).

Object rules (thresholds are the module constants; numbers below are their values)
------------------------------------------------------------------------------------
No fact at all for a box under ``MIN_OBJECT_PX`` (8) pixels: optics blur and noise dominate it.
``polarity`` (any object):
    warm    : C >= 0.10, or HI >= 0.35 and LO >= -0.25, or TOP >= 0.45 and TOPZ >= 4 and LO >= -0.30
              (small warm bodies fill only part of a loose box: a person seen from 100 m)
    cold    : C <= -0.10 and HI <= 0.15
    mixed   : HI >= 0.35 and LO <= -0.35                  (warm parts and cold parts)
    neutral : |C| <= 0.05 and HI <= 0.15 and LO >= -0.15   (blends with its surroundings)
    otherwise undecided (no fact).
``vehicle_state`` (Car, OtherVehicle and other motor-vehicle labels):
    running : polarity warm, PEAK >= 0.25 and OFF >= 0.30 (a concentrated, off-centre hot spot:
              engine bay or exhaust at one end, tyres/undercarriage low in an oblique view), and
              the heat is real engine heat: with radiometric data the hottest part (box p98) is at
              least ``RUNNING_MIN_K`` (5 K) above the background, whatever the time; without it,
              only at night (in daylight on AGC data a warm car may simply be sun-heated metal).
    parked  : C <= 0.03, HI <= 0.20 and TOP <= 0.20 (at or below its surroundings, no warm part),
              at night only, and with radiometric data the hottest part at most ``PARKED_MAX_K``
              (2 K) above the background: parked and cooled to ambient or below (metal and glass
              radiate to the cold night sky). In daylight a car body below sun-heated pavement says
              nothing about its engine (seen from above the engine bay may be hidden), so no claim.
    Both need a box of at least ``MIN_STATE_PX`` pixels (a smaller box cannot resolve an engine).
    otherwise undecided.
``person_heat`` (Person): polarity warm -> "warm"
    (body heat; at night "against the cool night ground"); cold or neutral -> "not_warm" (in
    daylight sun-heated ground can exceed skin temperature).
``heat_distribution`` (any object larger than ``MIN_PATTERN_PX`` pixels):
    hot_spot : PEAK >= 0.30, OFF >= 0.35 and TOP >= 0.20 (the spot is warmer than the
               surroundings, not just than the object's own cold body), with ``where`` = the side of
               the box that holds the hot spot's centroid (top / bottom / left / right);
    even     : PEAK <= 0.15;
    otherwise undecided.

Scene rules
-----------
``time_of_day``, ``weather``, ``altitude``, ``view``: copied from metadata; absent -> no fact.
``contrast``: low if spread <= 0.18 (AGC) / spread_k <= 3 K (radiometric); high if spread >= 0.55
    (AGC) / >= 20 K. The cause of low contrast is stated only when the metadata gives one
    (rain or fog); thermal crossover is not guessed.
``wet_surface``: weather is rain (metadata, e.g. HIT-UAV's file-name flag). Ground-truth surface
    states of synthetic scenes are never read (they are what the report checks claims against).
    Wet pavement has a higher emissivity (~0.97) than dry (~0.92-0.95): it emits closer to a
    blackbody and mirrors less of the cold sky, which evens out surface contrast.
``cold_sky``: view not near nadir (view_angle_deg unknown or <= ``SKY_MAX_VIEW_DEG`` = 35) and the
    top band of the frame is uniform (robust sigma <= 0.20 of the image's) and cold: on AGC data
    the coldest part of the image (median <= p5 + 0.05 spread); on radiometric data with a known
    air temperature (``ambient_k``), no warmer than the air + 1 K with a robust sigma <= 0.12 K
    (nothing but sensor noise: the sky has no texture). Near the horizon the sky approaches air
    temperature, so "cold" there means a radiative sink, not necessarily the darkest pixels.
``warm_areas``: share of hot pixels (``hot_fraction``, > 2 robust sigmas above the median) >= 0.10.

Not implemented: pavement vs vegetation needs a surface segmentation that no adapter provides;
guessing surfaces from texture would state what the measurements do not support.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

# ---- thresholds (see the module docstring) ----
WARM_C, WARM_HI, WARM_LO = 0.10, 0.35, -0.25
WARM_TOP, WARM_TOPZ, WARM_TOP_LO = 0.45, 4.0, -0.30
COLD_C, COLD_HI = -0.10, 0.15
MIXED_HI, MIXED_LO = 0.35, -0.35
NEUTRAL_C, NEUTRAL_HI, NEUTRAL_LO = 0.05, 0.15, -0.15
RUN_PEAK, RUN_OFF, RUNNING_MIN_K = 0.25, 0.30, 5.0
PARKED_C, PARKED_HI, PARKED_TOP, PARKED_MAX_K = 0.03, 0.20, 0.20, 2.0
MIN_STATE_PX = 48
SPOT_PEAK, SPOT_OFF, SPOT_TOP, EVEN_PEAK, MIN_PATTERN_PX = 0.30, 0.35, 0.20, 0.15, 64
LOW_SPREAD, HIGH_SPREAD, LOW_SPREAD_K, HIGH_SPREAD_K = 0.18, 0.55, 3.0, 20.0
SKY_MAX_VIEW_DEG, SKY_COLD_MARGIN, SKY_UNIFORM = 35.0, 0.05, 0.20
SKY_MAX_SIGMA_K, SKY_MAX_ABOVE_AMBIENT_K = 0.12, 1.0
MIN_OBJECT_PX = 8
WARM_AREA_FRACTION = 0.10

VEHICLE_LABELS = {"car", "othervehicle", "other vehicle", "truck", "bus", "van", "motorcycle", "motorbike", "vehicle"}
PERSON_LABELS = {"person", "people", "pedestrian", "cyclist", "rider"}
#: Labels that mark "ignore" regions, not objects: never counted or described.
IGNORE_LABELS = {"dontcare", "dont care", "ignore", "ignored"}


@dataclass
class Fact:
    """One physical fact about the scene or an object.

    name: fact kind (``"polarity"``, ``"vehicle_state"``, ``"cold_sky"`` ...).
    value: the decided value (``"warm"``, ``"running"``, ``True`` ...).
    subject: ``"scene"`` or ``"object:<index>"`` (index into the sample's boxes).
    rule: the rule that fired, as text.
    evidence: the measurements (or metadata) the rule read.
    """

    name: str
    value: Any
    subject: str = "scene"
    rule: str = ""
    evidence: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def norm_label(label: str) -> str:
    return label.strip().lower().replace("_", " ")


def is_vehicle(label: str) -> bool:
    return norm_label(label) in VEHICLE_LABELS or norm_label(label).replace(" ", "") in VEHICLE_LABELS


def is_person(label: str) -> bool:
    return norm_label(label) in PERSON_LABELS


def is_ignored(label: str) -> bool:
    return norm_label(label) in IGNORE_LABELS or norm_label(label).replace(" ", "") in IGNORE_LABELS


def _polarity(m: dict[str, Any]) -> tuple[str | None, str]:
    c, hi, lo = m.get("contrast_rel"), m.get("hi_rel"), m.get("lo_rel")
    if c is None or hi is None or lo is None:
        return None, "no background ring"
    top, topz = m.get("top_rel"), m.get("top_z")
    small_warm = top is not None and topz is not None and top >= WARM_TOP and topz >= WARM_TOPZ and lo >= WARM_TOP_LO
    if c >= WARM_C or (hi >= WARM_HI and lo >= WARM_LO) or small_warm:
        if hi >= MIXED_HI and lo <= MIXED_LO and c < WARM_C:
            return "mixed", f"HI>={MIXED_HI} and LO<={MIXED_LO}"
        return "warm", f"C>={WARM_C} or (HI>={WARM_HI} and LO>={WARM_LO}) or (TOP>={WARM_TOP} and TOPZ>={WARM_TOPZ} and LO>={WARM_TOP_LO})"
    if c <= COLD_C and hi <= COLD_HI:
        return "cold", f"C<={COLD_C} and HI<={COLD_HI}"
    if hi >= MIXED_HI and lo <= MIXED_LO:
        return "mixed", f"HI>={MIXED_HI} and LO<={MIXED_LO}"
    if abs(c) <= NEUTRAL_C and hi <= NEUTRAL_HI and lo >= NEUTRAL_LO:
        return "neutral", f"|C|<={NEUTRAL_C} and HI<={NEUTRAL_HI} and LO>={NEUTRAL_LO}"
    return None, "between thresholds"


def _hotspot_side(hs: list[float]) -> str:
    u, v = hs
    du, dv = u - 0.5, v - 0.5
    if abs(dv) >= abs(du):
        return "bottom" if dv > 0 else "top"
    return "right" if du > 0 else "left"


def object_facts(index: int, label: str, m: dict[str, Any], meta: dict[str, Any]) -> list[Fact]:
    """Facts about one object from its measurements ``m`` (an entry of ``measurements["objects"]``)."""
    subj = f"object:{index}"
    if is_ignored(label) or not m.get("measurable"):
        return []
    facts: list[Fact] = []
    ev = {k: m.get(k) for k in ("contrast_rel", "hi_rel", "lo_rel", "top_rel", "top_z", "peak_rel", "hotspot_offset", "hotspot")}
    if m["box"][2] * m["box"][3] < MIN_OBJECT_PX:
        return []  # a few pixels of optics blur and noise: nothing decidable about the object itself
    pol, why = _polarity(m)
    if pol is not None:
        facts.append(Fact("polarity", pol, subj, why, dict(ev)))
    night = meta.get("time_of_day") == "night"

    big_enough = m["box"][2] * m["box"][3] >= MIN_STATE_PX
    if is_vehicle(label) and pol is not None and big_enough:
        peak, off = m.get("peak_rel"), m.get("hotspot_offset")
        c, hi, top = m["contrast_rel"], m["hi_rel"], m.get("top_rel")
        top_k = m.get("top_k")  # present only for radiometric data
        if pol == "warm" and peak is not None and peak >= RUN_PEAK and off is not None and off >= RUN_OFF:
            if top_k is not None:
                if top_k >= RUNNING_MIN_K:
                    facts.append(Fact("vehicle_state", "running", subj,
                                      f"warm, PEAK>={RUN_PEAK}, OFF>={RUN_OFF}, hottest part >= {RUNNING_MIN_K} K above background",
                                      dict(ev, top_k=top_k)))
            elif night:
                facts.append(Fact("vehicle_state", "running", subj,
                                  f"warm, PEAK>={RUN_PEAK}, OFF>={RUN_OFF}, night (no solar load)",
                                  dict(ev, time_of_day="night")))
        elif (night and c <= PARKED_C and hi <= PARKED_HI and top is not None and top <= PARKED_TOP
              and (top_k is None or top_k <= PARKED_MAX_K)):
            facts.append(Fact("vehicle_state", "parked", subj,
                              f"night, C<={PARKED_C}, HI<={PARKED_HI}, TOP<={PARKED_TOP}"
                              + (f", hottest part <= {PARKED_MAX_K} K above background" if top_k is not None else ""),
                              dict(ev, time_of_day="night", top_k=top_k)))

    if is_person(label) and pol in ("warm", "cold", "neutral"):
        val = "warm" if pol == "warm" else "not_warm"
        facts.append(Fact("person_heat", val, subj, f"polarity {pol}", dict(ev, time_of_day=meta.get("time_of_day"))))

    w, h = m["box"][2], m["box"][3]
    peak, off, hs = m.get("peak_rel"), m.get("hotspot_offset"), m.get("hotspot")
    # Patterns are only described for objects measured against a background (polarity decidable).
    if w * h >= MIN_PATTERN_PX and peak is not None and m.get("contrast_rel") is not None:
        top = m.get("top_rel")
        if (peak >= SPOT_PEAK and off is not None and off >= SPOT_OFF and hs is not None
                and top is not None and top >= SPOT_TOP):
            facts.append(Fact("heat_distribution", "hot_spot", subj, f"PEAK>={SPOT_PEAK}, OFF>={SPOT_OFF}, TOP>={SPOT_TOP}",
                              dict(ev, where=_hotspot_side(hs))))
        elif peak <= EVEN_PEAK:
            facts.append(Fact("heat_distribution", "even", subj, f"PEAK<={EVEN_PEAK}", dict(ev)))
    return facts


def scene_facts(meas: dict[str, Any], meta: dict[str, Any]) -> list[Fact]:
    """Scene-level facts from image measurements and metadata."""
    facts: list[Fact] = []
    for key in ("time_of_day", "weather"):
        if meta.get(key) is not None:
            facts.append(Fact(key, meta[key], "scene", "metadata", {key: meta[key]}))
    if meta.get("altitude_m") is not None:
        facts.append(Fact("altitude", float(meta["altitude_m"]), "scene", "metadata", {"altitude_m": meta["altitude_m"]}))
    if meta.get("view_angle_deg") is not None:
        a = float(meta["view_angle_deg"])
        view = "nadir" if a >= 80 else ("steep" if a >= 55 else "oblique")
        facts.append(Fact("view", view, "scene", "metadata: >=80 nadir, >=55 steep, else oblique",
                          {"view_angle_deg": a}))
    if meta.get("scene"):
        facts.append(Fact("scene", str(meta["scene"]), "scene", "metadata", {"scene": meta["scene"]}))

    st = meas["image"]
    spread, spread_k = st.get("spread"), st.get("spread_k")
    if spread_k is not None:
        lvl = "low" if spread_k <= LOW_SPREAD_K else ("high" if spread_k >= HIGH_SPREAD_K else None)
        rule = f"spread_k<={LOW_SPREAD_K} low, >={HIGH_SPREAD_K} high"
    elif spread is not None:
        lvl = "low" if spread <= LOW_SPREAD else ("high" if spread >= HIGH_SPREAD else None)
        rule = f"spread<={LOW_SPREAD} low, >={HIGH_SPREAD} high"
    else:
        lvl = None
    if lvl is not None:
        ev = {"spread": spread, "spread_k": spread_k}
        cause = meta.get("weather") if lvl == "low" and meta.get("weather") in ("rain", "fog") else None
        facts.append(Fact("contrast", lvl, "scene", rule, dict(ev, cause=cause)))

    if meta.get("weather") == "rain":
        facts.append(Fact("wet_surface", True, "scene", "weather rain (metadata)", {"weather": "rain"}))

    angle = meta.get("view_angle_deg")
    top = st.get("top_band") or {}
    if (angle is None or float(angle) <= SKY_MAX_VIEW_DEG) and top.get("median") is not None and spread:
        uniform = top["sigma"] <= SKY_UNIFORM * max(st["sigma"], 1e-6)
        if top.get("sigma_k") is not None and meta.get("ambient_k") is not None:
            # Radiometric: the sky shows only sensor noise and is never warmer than the air
            # (near the horizon it approaches air temperature, towards the zenith it is far colder).
            cold = top["median_k"] <= float(meta["ambient_k"]) + SKY_MAX_ABOVE_AMBIENT_K
            uniform = uniform and top["sigma_k"] <= SKY_MAX_SIGMA_K
        else:
            cold = top["median"] <= st["p5"] + SKY_COLD_MARGIN * spread
        if cold and uniform:
            facts.append(Fact("cold_sky", True, "scene",
                              f"view <= {SKY_MAX_VIEW_DEG} deg or unknown, top band uniform and no warmer than the air/coldest",
                              {"top_band": top, "p5": st["p5"], "sigma": st["sigma"], "view_angle_deg": angle,
                               "ambient_k": meta.get("ambient_k")}))

    hf = st.get("hot_fraction")
    if hf is not None and hf >= WARM_AREA_FRACTION:
        facts.append(Fact("warm_areas", True, "scene", f"hot_fraction>={WARM_AREA_FRACTION}", {"hot_fraction": hf}))
    return facts


def infer_facts(measurements: dict[str, Any], labels: list[str], meta: dict[str, Any]) -> tuple[list[Fact], list[list[Fact]]]:
    """All facts of one image.

    Args:
        measurements: output of :func:`thermgen.ircap.measure.measure_image`.
        labels: one label per box, same order as ``measurements["objects"]``.
        meta: the sample's scene metadata.

    Returns:
        ``(scene_facts, per_object_facts)``; ``per_object_facts[i]`` belongs to box ``i``.
    """
    objs = measurements["objects"]
    if len(objs) != len(labels):
        raise ValueError(f"{len(labels)} labels for {len(objs)} measured objects")
    return scene_facts(measurements, meta), [object_facts(i, lab, m, meta) for i, (lab, m) in enumerate(zip(labels, objs))]
