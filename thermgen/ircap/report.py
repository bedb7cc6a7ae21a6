"""Caption report: what a manifest says, how long its captions are, and whether its claims are true.

Written as JSON (stable keys below) plus a Markdown summary and a token-length histogram PNG.

Keys
----
``summary``: ``records``, ``splits`` (records per split), ``distinct_global_share`` /
    ``distinct_fine_share`` / ``distinct_pair_share`` (distinct captions / records),
    ``max_tokens_global`` / ``max_tokens_fine``, ``over_limit`` (captions above 77 tokens; must be 0),
    ``clauses_dropped`` (clauses dropped to fit the limit).
``tokens``: per caption kind ``min mean median p95 max`` and ``histogram`` (``edges``, ``counts``).
``facts_stated``: per fact name, the number of records whose captions state it, and per value.
``facts_inferred``: per fact name, the number of records for which the rules decided it (stated or not).
``objects``: ``total`` (annotated objects, ignore-labels excluded), ``with_state_claim`` and its
    ``state_claim_share`` (objects whose running/parked or warm-person state is stated), per label.
``checks``: agreement of the captions with the dataset's own annotation, parsed back from the
    text: ``time_of_day`` (stated time vs metadata), ``counts`` (every "<n> <noun>" in the global
    caption equals the annotation's count of that label, and every label is stated).
``ground_truth`` (synthetic data only): for each physical-state claim kind (``vehicle_running``,
    ``vehicle_parked``, ``person_warm``, ``wet_surface``, ``cold_sky``) the number of claims and how
    many agree with the generator's truth; ``agreement`` over all claims; ``state_claim_share``.
``backend``: name, ``fallbacks`` (count) and ``fallback_reasons``.
``elapsed_s``, ``images_per_s``.
"""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from .facts import is_ignored, is_person, is_vehicle
from .render import parse_counts

#: Physical-state claim kinds checked against synthetic ground truth.
CLAIM_KINDS = ("vehicle_running", "vehicle_parked", "person_warm", "wet_surface", "cold_sky")
_TIME_RE = {"night": re.compile(r"\b(night|night-time|after dark)\b", re.I),
            "day": re.compile(r"\b(daytime|by day|during the day|day scene)\b", re.I)}


def stated_time(text: str) -> str | None:
    """Time of day a caption states (``"day"``, ``"night"``), None when it states none, ``"both"`` if both."""
    hits = [k for k, r in _TIME_RE.items() if r.search(text)]
    return hits[0] if len(hits) == 1 else ("both" if hits else None)


def _dist(values: list[int]) -> dict[str, Any]:
    if not values:
        return {"min": None, "mean": None, "median": None, "p95": None, "max": None, "histogram": {"edges": [], "counts": []}}
    a = np.asarray(values)
    edges = list(range(0, 80, 5)) + [80]
    counts, _ = np.histogram(a, bins=edges)
    return {"min": int(a.min()), "mean": round(float(a.mean()), 2), "median": float(np.median(a)),
            "p95": float(np.percentile(a, 95)), "max": int(a.max()),
            "histogram": {"edges": edges, "counts": counts.tolist()}}


def _claims(rec: dict[str, Any]) -> list[tuple[str, int | None]]:
    """Physical-state claims stated in the record's captions, each once: (kind, object index or None).

    A claim made in both captions (e.g. the cold sky) counts once; a group claim counts once per object.
    """
    out: dict[tuple[str, int | None], None] = {}
    for s in rec.get("stated", []):
        f, v = s.get("fact"), s.get("value")
        if f == "vehicle_state" and v in ("running", "parked"):
            out.update({(f"vehicle_{v}", i): None for i in s.get("objects") or []})
        elif f == "person_heat" and v == "warm":
            out.update({("person_warm", i): None for i in s.get("objects") or []})
        elif f in ("wet_surface", "cold_sky") and v is True:
            out[(f, None)] = None
    return list(out)


def truth_agrees(kind: str, sample, obj_index: int | None) -> bool | None:
    """Whether one claim agrees with a synthetic sample's ground truth; None when the truth is unknown.

    Truth keys (written by :mod:`thermgen.data.synthetic`): ``Box.attrs["state"]`` for vehicles
    (``running`` / ``just_parked`` / ``parked_cold``: a running claim agrees with the first two, a
    parked claim with the last), ``Box.attrs["contrast_k"]`` for people (apparent temperature
    minus that of the ground beneath; a warm claim agrees when > 0), ``meta["surfaces"]`` (list of
    dicts with ``state`` ``"wet"``/``"dry"``) and ``meta["sky"]["visible"]``.
    """
    meta = sample.meta or {}
    if kind in ("vehicle_running", "vehicle_parked", "person_warm"):
        if obj_index is None or obj_index >= len(sample.boxes):
            return None
        attrs = sample.boxes[obj_index].attrs or {}
        if kind.startswith("vehicle"):
            st = attrs.get("state")
            if st is None:
                return None
            return st in ("running", "just_parked") if kind == "vehicle_running" else st == "parked_cold"
        # The generator's apparent contrast of the person against the ground beneath (K).
        if attrs.get("contrast_k") is None:
            return None
        return float(attrs["contrast_k"]) > 0.0
    if kind == "wet_surface":
        surfaces = meta.get("surfaces")
        if surfaces is None:
            return None
        return any((s.get("state") == "wet") for s in (surfaces.values() if isinstance(surfaces, dict) else surfaces))
    if kind == "cold_sky":
        sky = meta.get("sky")
        if isinstance(sky, dict) and "visible" in sky:
            return bool(sky["visible"])
        return None
    return None


def build_report(records: list[dict[str, Any]], extras: list[dict[str, Any]] | None = None,
                 samples: dict[str, Any] | None = None, elapsed_s: float | None = None, backend: str = "rules",
                 skipped: dict[str, Any] | None = None) -> dict[str, Any]:
    """Compute the report of a list of manifest records.

    Args:
        records: manifest records (:mod:`thermgen.ircap.manifest`).
        extras: per-record ``{"fallback": reason | None, "dropped": int}`` from the captioner.
        samples: ``{record id: ThermalSample}`` for ground-truth agreement (synthetic data).
        elapsed_s: wall time of the captioning run.
        backend: the backend name.
        skipped: the data loader's skip report (``SkipReport.to_dict()``).
    """
    extras = extras or [{} for _ in records]
    n = len(records)
    g = [r["global_caption"] for r in records]
    f = [r["fine_caption"] for r in records]
    from .render import count_tokens

    tg = [r.get("tokens", {}).get("global") or count_tokens(r["global_caption"]) for r in records]
    tf = [r.get("tokens", {}).get("fine") or count_tokens(r["fine_caption"]) for r in records]
    summary = {
        "records": n,
        "splits": dict(Counter(r["split"] for r in records)),
        "distinct_global_share": round(len(set(g)) / n, 4) if n else 0.0,
        "distinct_fine_share": round(len(set(f)) / n, 4) if n else 0.0,
        "distinct_pair_share": round(len(set(zip(g, f))) / n, 4) if n else 0.0,
        "max_tokens_global": max(tg, default=0), "max_tokens_fine": max(tf, default=0),
        "over_limit": sum(t > 77 for t in tg) + sum(t > 77 for t in tf),
        "clauses_dropped": sum(int(e.get("dropped") or 0) for e in extras),
    }

    stated: dict[str, dict[str, Any]] = {}
    inferred: Counter = Counter()
    for r in records:
        names = set()
        values: set[tuple[str, str]] = set()
        for s in r.get("stated", []):
            names.add(s["fact"])
            values.add((s["fact"], str(s.get("value"))))
        for name in names:
            stated.setdefault(name, {"records": 0, "values": Counter()})["records"] += 1
        for name, v in values:
            stated[name]["values"][v] += 1
        inferred.update({fa["name"] for fa in r.get("facts", [])})
    facts_stated = {k: {"records": v["records"], "share": round(v["records"] / n, 4) if n else 0.0,
                        "values": dict(v["values"])} for k, v in sorted(stated.items())}

    # Objects with a stated state claim (vehicle running/parked, person warm/not warm).
    obj_total, obj_claimed = Counter(), Counter()
    for r in records:
        claimed = set()
        for s in r.get("stated", []):
            if s.get("fact") in ("vehicle_state", "person_heat") and s.get("objects"):
                claimed.update(s["objects"])
        for i, o in enumerate(r["objects"]):
            if is_ignored(o["label"]):
                continue
            obj_total[o["label"]] += 1
            if i in claimed:
                obj_claimed[o["label"]] += 1
    tot = sum(obj_total.values())
    objects = {"total": tot, "with_state_claim": sum(obj_claimed.values()),
               "state_claim_share": round(sum(obj_claimed.values()) / tot, 4) if tot else 0.0,
               "per_label": {lab: {"total": obj_total[lab], "with_state_claim": obj_claimed[lab]} for lab in sorted(obj_total)}}

    # Checks against the annotation itself (parsed back from the caption text).
    tod_n = tod_ok = cnt_ok = 0
    bad_examples: list[str] = []
    for r in records:
        tod = (r.get("meta") or {}).get("time_of_day")
        st = {stated_time(r["global_caption"]), stated_time(r["fine_caption"])} - {None}
        if tod is not None:
            tod_n += 1
            tod_ok += st == {tod}
        elif st:
            bad_examples.append(f"{r['id']}: states time of day without metadata")
        totals = Counter(o["label"] for o in r["objects"] if not is_ignored(o["label"]))
        parsed = parse_counts(r["global_caption"], list(totals))
        good = all(parsed.get(lab) == [k] for lab, k in totals.items())
        cnt_ok += good
        if not good and len(bad_examples) < 10:
            bad_examples.append(f"{r['id']}: counts {dict(totals)} vs caption {parsed}")
    checks = {"time_of_day": {"with_metadata": tod_n, "agree": tod_ok}, "counts": {"records": n, "agree": cnt_ok},
              "examples_of_disagreement": bad_examples[:10]}

    report: dict[str, Any] = {
        "summary": summary,
        "tokens": {"global": _dist(tg), "fine": _dist(tf)},
        "facts_stated": facts_stated,
        "facts_inferred": dict(sorted(inferred.items())),
        "objects": objects,
        "checks": checks,
        "backend": {"name": backend, "fallbacks": sum(1 for e in extras if e.get("fallback")),
                    "fallback_reasons": dict(Counter(e["fallback"].split(":")[0] + ": " + e["fallback"].split(":", 1)[-1].strip()[:80]
                                                     for e in extras if e.get("fallback")))},
        "elapsed_s": round(elapsed_s, 3) if elapsed_s is not None else None,
        "images_per_s": round(n / elapsed_s, 2) if elapsed_s else None,
        "skipped": skipped,
    }
    if samples:
        report["ground_truth"] = ground_truth_agreement(records, samples)
    return report


def ground_truth_agreement(records: list[dict[str, Any]], samples: dict[str, Any]) -> dict[str, Any] | None:
    """Agreement of stated physical-state claims with the generator's truth (records with known truth only)."""
    kinds = {k: {"claims": 0, "agree": 0, "unknown_truth": 0} for k in CLAIM_KINDS}
    state_objs = claimed_objs = 0
    any_truth = False
    for r in records:
        s = samples.get(r["id"])
        if s is None or s.source != "synthetic":
            continue
        any_truth = True
        claimed = set()
        for kind, i in _claims(r):
            t = truth_agrees(kind, s, i)
            if t is None:
                kinds[kind]["unknown_truth"] += 1
                continue
            kinds[kind]["claims"] += 1
            kinds[kind]["agree"] += bool(t)
            if i is not None:
                claimed.add(i)
        for i, b in enumerate(s.boxes):
            if is_vehicle(b.label) or is_person(b.label):
                state_objs += 1
                claimed_objs += i in claimed
    if not any_truth:
        return None
    total = sum(v["claims"] for v in kinds.values())
    agree = sum(v["agree"] for v in kinds.values())
    for v in kinds.values():
        v["agreement"] = round(v["agree"] / v["claims"], 4) if v["claims"] else None
    return {"kinds": kinds, "claims": total, "agree": agree, "agreement": round(agree / total, 4) if total else None,
            "objects_with_state": state_objs, "objects_claimed": claimed_objs,
            "state_claim_share": round(claimed_objs / state_objs, 4) if state_objs else None}


def to_markdown(report: dict[str, Any]) -> str:
    s = report["summary"]
    lines = ["# IR-Cap caption report", "",
             f"- records: **{s['records']}** ({', '.join(f'{k}: {v}' for k, v in s['splits'].items())})",
             f"- distinct global captions: **{s['distinct_global_share']:.1%}**, fine: **{s['distinct_fine_share']:.1%}**, "
             f"pairs: {s['distinct_pair_share']:.1%}",
             f"- tokens (open_clip, limit 77): global max {s['max_tokens_global']}, fine max {s['max_tokens_fine']}, "
             f"over limit: {s['over_limit']}; clauses dropped to fit: {s['clauses_dropped']}",
             f"- backend: {report['backend']['name']}, fallbacks to rules: {report['backend']['fallbacks']}"]
    if report.get("elapsed_s") is not None:
        lines.append(f"- time: {report['elapsed_s']:.1f} s ({report['images_per_s']} images/s)")
    sk = report.get("skipped") or {}
    if sk.get("total"):
        lines.append(f"- skipped as invalid (`--skip-invalid`): **{sk['total']}**: "
                     + "; ".join(f"{n} x {reason} (e.g. `{sk['examples'][reason][0].split(': ')[0]}`)"
                                 for reason, n in sorted(sk["counts"].items())))
    c = report["checks"]
    lines += [f"- time of day stated in agreement with metadata: {c['time_of_day']['agree']}/{c['time_of_day']['with_metadata']}",
              f"- global-caption counts agreeing with the annotation: {c['counts']['agree']}/{c['counts']['records']}",
              f"- objects with a stated state claim: {report['objects']['with_state_claim']}/{report['objects']['total']} "
              f"({report['objects']['state_claim_share']:.1%})"]
    gt = report.get("ground_truth")
    if gt:
        ag = "n/a" if gt["agreement"] is None else f"{gt['agreement']:.1%}"
        lines += ["", "## Synthetic ground truth", "",
                  f"State claims agreeing with the generator's truth: **{gt['agree']}/{gt['claims']} ({ag})**; "
                  f"objects (people, vehicles) with a state claim: {gt['objects_claimed']}/{gt['objects_with_state']}"
                  + (f" ({gt['state_claim_share']:.1%})" if gt["state_claim_share"] is not None else ""), "",
                  "| claim | claims | agree | agreement |", "| --- | --- | --- | --- |"]
        for k, v in gt["kinds"].items():
            pct = "-" if v["agreement"] is None else f"{v['agreement']:.1%}"
            lines.append(f"| {k} | {v['claims']} | {v['agree']} | {pct} |")
    lines += ["", "## Token lengths", "", "| caption | min | mean | median | p95 | max |", "| --- | --- | --- | --- | --- | --- |"]
    for k, d in report["tokens"].items():
        lines.append(f"| {k} | {d['min']} | {d['mean']} | {d['median']} | {d['p95']} | {d['max']} |")
    lines += ["", "## Facts stated (records whose captions state the fact)", "", "| fact | records | share | values |",
              "| --- | --- | --- | --- |"]
    for k, v in report["facts_stated"].items():
        vals = ", ".join(f"{a}: {b}" for a, b in sorted(v["values"].items(), key=lambda t: -t[1])[:6])
        lines.append(f"| {k} | {v['records']} | {v['share']:.1%} | {vals} |")
    if report["backend"]["fallback_reasons"]:
        lines += ["", "## Backend fallbacks", ""] + [f"- {k}: {v}" for k, v in report["backend"]["fallback_reasons"].items()]
    if c["examples_of_disagreement"]:
        lines += ["", "## Disagreements (examples)", ""] + [f"- {e}" for e in c["examples_of_disagreement"]]
    return "\n".join(lines) + "\n"


def write_report(report: dict[str, Any], json_path: str | Path) -> tuple[Path, Path, Path | None]:
    """Write the report as JSON, Markdown (same stem, ``.md``) and a token-length histogram (``.tokens.png``)."""
    json_path = Path(json_path)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
    md = json_path.with_suffix(".md")
    md.write_text(to_markdown(report), encoding="utf-8")
    png = json_path.with_suffix(".tokens.png")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 3.2))
        for k, d in report["tokens"].items():
            if d["histogram"]["counts"]:
                e = np.asarray(d["histogram"]["edges"])
                ax.stairs(d["histogram"]["counts"], e, label=f"{k} (max {d['max']})")
        ax.axvline(77, color="k", ls="--", lw=1, label="limit 77")
        ax.set_xlabel("open_clip tokens per caption")
        ax.set_ylabel("captions")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(png, dpi=100)
        plt.close(fig)
    except Exception as exc:  # the plot is a convenience; the JSON and Markdown are the report
        logging.getLogger(__name__).warning("caption report: token-length plot not written (%s: %s)", type(exc).__name__, exc)
        png = None
    return json_path, md, png
