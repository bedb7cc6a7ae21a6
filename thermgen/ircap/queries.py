"""Search queries in a user's own words: held-out phrasings of an image's facts, for retrieval tests.

People searching thermal footage do not write IR-Cap sentences. This module states the facts of a
manifest record that a user would search by (time of day, flight altitude, camera angle, and how
many people, cars and other annotated objects are in view) in phrasings that IR-Cap never renders:

``keywords``  a comma list in random order: ``"night, 60 m, 30° down, 5 cars, no people"``
``request``   an instruction: ``"Find drone thermal footage from 60 metres, at night, camera pitched 30 degrees down, with five cars."``
``question``  a question: ``"Which frame shows five cars and two people at night, 60m up, looking down at 30 degrees?"``

Numbers are drawn as digits or as words per query (counts and the altitude alike; IR-Cap's sentences
write altitudes as digits, its terse variants in either form). Absent people or cars ("no people") are stated only when the record has no
"don't care" boxes, which may hide either. The facts come from the record's metadata and annotations (the same
facts its global caption states), never from its caption text. Object positions are not stated,
so images with equal facts are indistinguishable to a query: :func:`fact_ceiling` gives the best
text-to-image R@1 any model could reach on a query set.

:func:`heldout_overlap` checks a query set against a training corpus: exact matches (must be none)
and the share of the queries' word 4-grams that occur anywhere in the training captions.

Deterministic: query i of a record is drawn from ``random.Random(f"{seed}:{style}:{record id}")``.

Command: ``python -m thermgen.ircap.queries --manifest M --split val --out DIR`` writes one manifest per style
(``DIR/val.keywords.jsonl`` ...: the split's records with both captions replaced by the query), ready for
``python -m tclip.eval --manifest DIR/val.keywords.jsonl --split val``, and prints the fact ceiling and the
overlap with the manifest's training captions (all their phrasings).
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Sequence

from .facts import is_ignored, norm_label
from .render import NUMBER_WORDS, noun, spell_number

__all__ = ["STYLES", "query_facts", "render_query", "build_queries", "fact_ceiling", "heldout_overlap", "word_ngrams",
           "write_query_manifests", "caption_texts", "main"]

STYLES = ("keywords", "request", "question")


def query_facts(rec: dict[str, Any]) -> dict[str, Any]:
    """The searchable facts of a manifest record: time, altitude (m), camera angle (deg), counts per label.

    Missing metadata is left out (a query then does not mention it). Counts cover every annotated,
    non-ignored label, as the global caption's do.
    """
    meta = rec.get("meta") or {}
    facts: dict[str, Any] = {}
    tod = meta.get("time_of_day")
    if tod in ("day", "night"):
        facts["time"] = tod
    if isinstance(meta.get("altitude_m"), (int, float)):
        facts["altitude"] = int(round(float(meta["altitude_m"])))
    if isinstance(meta.get("view_angle_deg"), (int, float)):
        facts["angle"] = int(round(float(meta["view_angle_deg"])))
    counts: Counter = Counter()
    ignored = 0
    for o in rec.get("objects") or []:
        if is_ignored(o["label"]):
            ignored += 1
        else:
            counts[_canonical_label(o["label"])] += 1
    facts["counts"] = dict(counts)
    # "don't care" regions (crowds, unclear objects) may hold people or cars: then nothing is said to be absent
    facts["absence_known"] = ignored == 0
    return facts


def _canonical_label(label: str) -> str:
    key = norm_label(label)
    return {"person": "Person", "car": "Car", "bicycle": "Bicycle", "othervehicle": "OtherVehicle",
            "other vehicle": "OtherVehicle"}.get(key, label)


def _num(n: int, words: bool) -> str:
    return NUMBER_WORDS[n] if words and 0 <= n < len(NUMBER_WORDS) else str(n)


def _altitude(m: int, words: bool, rng: random.Random) -> str:
    if words:
        return f"{spell_number(m)} {rng.choice(['metres', 'meters'])}"
    return rng.choice([f"{m} m", f"{m}m", f"{m} metres", f"{m} meters"])


def _count_items(counts: dict[str, int], words: bool, rng: random.Random, zeros: bool) -> list[str]:
    items = [f"{_num(n, words)} {noun(lab, n)}" for lab, n in sorted(counts.items(), key=lambda kv: -kv[1]) if n > 0]
    if zeros:  # an absent class people look for is worth saying ("no people"), when the annotation is complete
        for lab in ("Person", "Car"):
            if counts.get(lab, 0) == 0:
                items.append(f"no {noun(lab, 2)}")
    return items


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


# Angles are the camera's depression below the horizon (IR-Cap's convention: 90 = straight down; 80 and
# more is "nadir" there too, so those queries say top-down without a number).
def _angle_kw(angle: int, rng: random.Random) -> str:
    if angle >= 80:
        return rng.choice(["top-down", "nadir", "overhead", "straight down"])
    return rng.choice([f"{angle}° down", f"{angle} deg down", f"pitch -{angle}°", f"looking down {angle}°"])


def _angle_phrase(angle: int, rng: random.Random) -> str:
    if angle >= 80:
        return rng.choice(["camera pointing straight at the ground", "top-down", "overhead shot", "looking vertically down"])
    return rng.choice([f"looking down at {angle} degrees", f"camera pitched {angle} degrees down", f"{angle} degree downward camera pitch",
                       f"pitched {angle}° down"])


def render_query(facts: dict[str, Any], style: str, rng: random.Random, words: bool | None = None) -> str:
    """One query in `style` (see the module docstring) stating every fact in `facts`."""
    if style not in STYLES:
        raise ValueError(f"unknown query style {style!r}; known: {list(STYLES)}")
    words = rng.random() < 0.5 if words is None else words
    tod = facts.get("time")
    alt = facts.get("altitude")
    ang = facts.get("angle")
    counts = facts.get("counts") or {}
    zeros = rng.random() < 0.5 and facts.get("absence_known", True)
    items = _count_items(counts, words, rng, zeros)
    if style == "keywords":
        parts = list(items)
        if tod:
            parts.append(rng.choice({"day": ["day", "daylight", "daytime"], "night": ["night", "nighttime", "dark"]}[tod]))
        if alt is not None:
            parts.append(_altitude(alt, words, rng))
        if ang is not None:
            parts.append(_angle_kw(ang, rng))
        rng.shuffle(parts)
        return ", ".join(parts) if parts else "thermal"
    when = {"day": rng.choice(["in daylight", "during daylight hours", "in the daytime"]),
            "night": rng.choice(["at night", "in the dark", "at nighttime"])}.get(tod, "")
    alt_s = ""
    if alt is not None:
        alt_s = rng.choice([f"from {_altitude(alt, words, rng)}", f"{_altitude(alt, words, rng)} up", f"at {_altitude(alt, words, rng)} altitude"])
    ang_s = _angle_phrase(ang, rng) if ang is not None else ""
    what = _join(items) if items else ("nothing annotated" if not facts.get("absence_known", True) else "no people or vehicles")
    if style == "request":
        lead = rng.choice(["Find drone thermal footage", "Show me IR drone frames", "Get thermal shots from a UAV", "Search for drone infrared frames"])
        bits = [b for b in (alt_s, when, ang_s) if b]
        return f"{lead}{''.join((' ' if i == 0 else ', ') + b for i, b in enumerate(bits))}, with {what}."
    lead = rng.choice(["Which frame shows", "Any thermal frame with", "Where is the shot with", "Is there footage of"])
    bits = [b for b in (when, alt_s, ang_s) if b]
    return f"{lead} {what}{''.join(', ' + b for b in bits)}?"


def build_queries(records: Sequence[dict[str, Any]], seed: int = 0, styles: Iterable[str] = STYLES) -> dict[str, list[str]]:
    """One query per record and style: ``{style: [query per record, in record order]}``."""
    out: dict[str, list[str]] = {}
    for style in styles:
        if style not in STYLES:
            raise ValueError(f"unknown query style {style!r}; known: {list(STYLES)}")
        out[style] = [render_query(query_facts(r), style, random.Random(f"{seed}:{style}:{r['id']}")) for r in records]
    return out


def _fact_key(facts: dict[str, Any]) -> tuple:
    """What a query can tell apart: angles of 80 and more all read as top-down."""
    angle = facts.get("angle")
    angle = "nadir" if angle is not None and angle >= 80 else angle
    return (facts.get("time"), facts.get("altitude"), angle, tuple(sorted(facts.get("counts", {}).items())))


def fact_ceiling(records: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Best expected text-to-image R@1 from these facts alone: each query's image ties with every other
    image of equal facts, so a perfect fact reader finds it first with probability 1 / (group size).

    Returns {"r1": ceiling, "distinct": share of records whose facts no other record shares}.
    """
    keys = [_fact_key(query_facts(r)) for r in records]
    sizes = Counter(keys)
    n = max(1, len(keys))
    return {"r1": sum(1.0 / sizes[k] for k in keys) / n, "distinct": sum(1 for k in keys if sizes[k] == 1) / n}


_WORD = re.compile(r"[a-z0-9°]+")


def word_ngrams(text: str, n: int = 4) -> set[tuple[str, ...]]:
    words = _WORD.findall(text.lower())
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


def heldout_overlap(queries: Iterable[str], training_texts: Iterable[str], n: int = 4) -> dict[str, Any]:
    """How held-out a query set is: exact matches with training texts, and the share of the queries'
    word n-grams (lower case) found in any training text."""
    train = set()
    train_exact = set()
    for t in training_texts:
        train_exact.add(t.strip().lower())
        train |= word_ngrams(t, n)
    qs = list(queries)
    grams = [g for q in qs for g in word_ngrams(q, n)]
    exact = sum(1 for q in qs if q.strip().lower() in train_exact)
    return {
        "queries": len(qs),
        "exact_matches": exact,
        f"word_{n}grams": len(grams),
        f"word_{n}grams_in_training": sum(1 for g in grams if g in train),
        f"word_{n}gram_overlap": (sum(1 for g in grams if g in train) / len(grams)) if grams else 0.0,
    }


def write_query_manifests(manifest: str | Path, split: str, out: str | Path, seed: int = 0,
                          records: Sequence[dict[str, Any]] | None = None) -> dict[str, Path]:
    """One manifest per query style, ``OUT/{split}.{style}.jsonl``: the split's records (absolute image paths)
    with both captions replaced by the style's query. ``records``: the split's records when already read.
    Returns {style: path}."""
    from .manifest import read_manifest, resolve_image, write_manifest

    manifest, out = Path(manifest), Path(out)
    recs = list(records) if records is not None else [r for r in read_manifest(manifest) if r["split"] == split]
    if not recs:
        raise ValueError(f"{manifest}: no records with split {split!r}")
    paths = {}
    for style, qs in build_queries(recs, seed=seed).items():
        rows = []
        for r, q in zip(recs, qs):
            row = {k: v for k, v in r.items() if k not in ("caption_variants", "facts", "stated", "tokens")}
            rows.append(dict(row, image=str(resolve_image(r, manifest)), global_caption=q, fine_caption=q))
        paths[style] = out / f"{split}.{style}.jsonl"
        write_manifest(paths[style], rows)
    return paths


def caption_texts(manifest: str | Path, split: str | None = None) -> list[str]:
    """Every caption of a manifest's records (of ``split`` when given): global and fine, with all their
    phrasings (``caption_variants``), i.e. every text a model trained on them sees."""
    from .manifest import iter_manifest

    return [t for _, r in iter_manifest(manifest) if split is None or r["split"] == split for kind in ("global", "fine")
            for t in [r[f"{kind}_caption"], *((r.get("caption_variants") or {}).get(kind, []))]]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m thermgen.ircap.queries",
                                description="Held-out search queries in a user's own words for a manifest split "
                                            "(keywords, requests, questions), one manifest per style.")
    p.add_argument("--manifest", required=True, help="IR-Cap manifest (JSONL) with metadata and boxes")
    p.add_argument("--split", default="test", help="split to write queries for")
    p.add_argument("--out", required=True, help="folder for SPLIT.STYLE.jsonl")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train-split", default="train", help="split whose captions the overlap is measured against")
    args = p.parse_args(argv)
    from .manifest import read_manifest

    try:
        recs = [r for r in read_manifest(args.manifest) if r["split"] == args.split]
        paths = write_query_manifests(args.manifest, args.split, args.out, seed=args.seed, records=recs)
    except (ValueError, FileNotFoundError) as exc:
        print(f"queries: error: {exc}", file=sys.stderr)
        return 2
    summary = {"split": args.split, "records": len(recs), "fact_ceiling": fact_ceiling(recs), "manifests": {k: str(v) for k, v in paths.items()}}
    train = caption_texts(args.manifest, args.train_split)
    if train:
        queries = [q for qs in build_queries(recs, seed=args.seed).values() for q in qs]
        summary["heldout"] = heldout_overlap(queries, train)
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
