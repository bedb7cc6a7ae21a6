"""The attribute judge: train it on real images, grade generated ones (independent of T-CLIP).

Train on a manifest's real training split (labels from metadata and annotations only), choose each head's
L2 strength on the validation split, and report the ceiling on the real test split::

    python -m thermgen.judge train --manifest RUN/manifest.jsonl --resolution 64 --out RUN/judge

Grade a folder of generated images against the attributes their prompts stated. The folder's
``generation.json`` (written by the recipe and by ``python -m thermgen.generate --record-ids``) names, per
image, the manifest record whose captions were the prompt (``record_id``); the record's metadata gives the
expected attributes. The recipe's evaluation folders (``RUN/eval/<conditioner>/images``) are written so::

    python -m thermgen.judge eval --judge RUN/judge --manifest RUN/manifest.jsonl --images RUN/eval/tclip/images \\
        --out RUN/reports/attributes.json

The ceiling an autoencoder leaves a latent diffusion model: FID and judge accuracy of its reconstructions of a
held-out split, beside the originals (no generator can do better than its decoder)::

    python -m thermgen.judge autoencoder --judge RUN/judge --manifest RUN/manifest.jsonl --vae RUN/vae \
        --split val --reference test --out RUN/reports/autoencoder.json

Can the conditioner read the facts at all? A linear probe per attribute on the text encoder's prompt embeddings
(pooled, and token states averaged) of the split's captions, trained on the train captions, L2 chosen on val, read on
test; a generator cannot follow a fact its text encoder does not carry::

    python -m thermgen.judge text --text-encoder RUN/pipeline/text_encoder --manifest RUN/manifest.jsonl \
        --out RUN/reports/text_probe.json

How much does the seed change the image, for a fixed prompt? Folders of the same prompts under different seeds
(e.g. the recipe's ``RUN/eval/tclip/seed<S>/images``), compared in the judge's feature space
(:func:`thermgen.metrics.attributes.seed_diversity`)::

    python -m thermgen.judge diversity --judge RUN/judge --images RUN/eval/tclip/seed0/images \
        RUN/eval/tclip/seed42/images RUN/eval/tclip/seed123/images --out RUN/reports/diversity.json

Does the judge read the attribute or recognise the place? HIT-UAV's splits share flights; refit the heads without
each flight in turn and grade that flight's test images (frames numbered along the recording, ``meta.frame``)::

    python -m thermgen.judge flights --judge RUN/judge --manifest RUN/manifest.jsonl --out RUN/reports/judge_flights.json

All write JSON and a Markdown table beside it. Method: :mod:`thermgen.metrics.attributes`.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from thermgen.metrics.judging import (  # noqa: F401  (re-exported: the command's library half)
    autoencoder_ceiling,
    ceiling_markdown,
    confusion_markdown,
    diversity_folders,
    eval_folder,
    flights_markdown,
    held_out_flights,
    split_features,
    text_probe,
    text_probe_markdown,
    train_judge,
)

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m thermgen.judge", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="train the judge on real images and report its ceiling on the test split",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    t.add_argument("--manifest", required=True, help="IR-Cap manifest (.jsonl) with the real splits")
    t.add_argument("--resolution", type=int, required=True, help="the generator's output size in px (images are resized to it)")
    t.add_argument("--out", required=True, help="judge folder")
    t.add_argument("--train-split", default="train")
    t.add_argument("--val-split", default="val", help="split that chooses each head's L2 strength")
    t.add_argument("--test-split", default="test", help="split of the ceiling measurement")
    t.add_argument("--cache-dir", default=None, help="real-feature cache shared with thermgen.fid (default: "
                   "$THERMGEN_CACHE/fid or ~/.cache/thermgen/fid)")
    t.add_argument("--no-cache", action="store_true", help="do not read or write the feature cache")
    e = sub.add_parser("eval", help="grade generated images against the attributes their prompts stated",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    e.add_argument("--judge", required=True, help="judge folder (from `train`)")
    e.add_argument("--manifest", required=True, help="manifest holding the records named in the images' generation.json")
    e.add_argument("--images", required=True, help="folder with generated images and generation.json (entries with file and record_id)")
    e.add_argument("--out", required=True, help="report JSON path (.md beside it)")
    a = sub.add_parser("autoencoder", help="FID and judge accuracy of an autoencoder's reconstructions of a split",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    a.add_argument("--judge", required=True, help="judge folder")
    a.add_argument("--manifest", required=True, help="manifest with the splits")
    a.add_argument("--vae", required=True, help="autoencoder folder (AutoencoderKL or PatchAutoencoder)")
    a.add_argument("--split", default="val", help="split whose images are reconstructed")
    a.add_argument("--reference", default="test", help="split the FID compares against")
    a.add_argument("--out", required=True, help="report JSON path (.md beside it)")
    x = sub.add_parser("text", help="linear probes: can the text encoder's prompt embeddings tell each attribute?",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    x.add_argument("--text-encoder", required=True, help="a pipeline's text_encoder/ folder or a T-CLIP folder")
    x.add_argument("--manifest", required=True, help="manifest with the train/val/test captions")
    x.add_argument("--out", required=True, help="report JSON path (.md beside it)")
    d = sub.add_parser("diversity", help="how much the seed changes the image for a fixed prompt (same prompts, "
                       "several seeds)", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    d.add_argument("--judge", required=True, help="judge folder (its feature network and resolution)")
    d.add_argument("--images", required=True, nargs="+", help="2 or more folders with generation.json, the same "
                   "prompts in the same order, one seed each")
    d.add_argument("--out", required=True, help="report JSON path (.md beside it)")
    f = sub.add_parser("flights", help="the judge's ceiling on flights it never saw (HIT-UAV: frames numbered along "
                       "the recording): reads it the attribute, or the site?",
                       description="Refit the judge's heads without each flight in turn and grade that flight's test "
                       "images; beside the plain ceiling on the same images.")
    f.add_argument("--judge", required=True, help="judge folder (from `train`)")
    f.add_argument("--manifest", required=True, help="the manifest the judge was trained on (records need meta.frame)")
    f.add_argument("--train-split", default="train")
    f.add_argument("--test-split", default="test")
    f.add_argument("--out", required=True, help="report JSON path (.md beside it)")
    f.add_argument("--cache-dir", default=None, help="real-feature cache shared with thermgen.fid (default: "
                   "thermgen's cache folder)")
    f.add_argument("--no-cache", action="store_true", help="do not read or write the feature cache")
    for q in (t, e, a, x, d, f):
        q.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
        q.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def _write_report(path: str | Path, rep: dict[str, Any], markdown: str) -> None:
    """``rep`` as JSON at ``path`` and ``markdown`` beside it (.md); the Markdown is printed too."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rep, indent=2))
    out.with_suffix(".md").write_text(markdown)
    print(markdown)
    print(f"wrote {out} and {out.with_suffix('.md')}")


def main(argv: list[str] | None = None) -> int:
    from thermgen.metrics.fid import default_cache_dir

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.cmd == "train":
            rep = train_judge(args.manifest, args.out, resolution=args.resolution, train_split=args.train_split,
                              val_split=args.val_split, test_split=args.test_split, device=args.device,
                              progress=not args.quiet, cache_dir=None if args.no_cache else (
                                  args.cache_dir or default_cache_dir()))
            print(ceiling_markdown(rep))
            print(f"wrote {args.out}/judge.json, judge.safetensors, report.json, report.md")
        elif args.cmd == "flights":
            rep = held_out_flights(args.judge, args.manifest, train_split=args.train_split, test_split=args.test_split,
                                   device=args.device, progress=not args.quiet,
                                   cache_dir=None if args.no_cache else (args.cache_dir or default_cache_dir()))
            _write_report(args.out, rep, flights_markdown(rep))
        elif args.cmd == "text":
            rep = text_probe(args.text_encoder, args.manifest, device=args.device)
            _write_report(args.out, rep, text_probe_markdown(rep))
        elif args.cmd == "diversity":
            rep = diversity_folders(args.judge, args.images, device=args.device, progress=not args.quiet)
            _write_report(args.out, rep, f"# Seed diversity: {rep['prompts']} prompts x {rep['seeds']} seeds\n\n"
                          "| within (same prompt, two seeds) | across (two prompts, one seed) | ratio |\n"
                          f"| --- | --- | --- |\n| {rep['within']:.2f} | {rep['across']:.2f} | {rep['ratio']:.3f} |\n")
        elif args.cmd == "autoencoder":
            rep = autoencoder_ceiling(args.judge, args.manifest, args.vae, split=args.split, reference=args.reference,
                                      device=args.device, progress=not args.quiet, cache_dir=default_cache_dir())
            attrs = list(rep["originals"]["attributes"])
            md = [f"# {rep['vae_class']} `{rep['vae']}`: {rep['split']} images ({rep['n']}) and their reconstructions", "",
                  f"| images | FID vs {rep['reference']} | " + " | ".join(attrs) + " |", "| --- | --- |" + " --- |" * len(attrs)]
            for name in ("originals", "reconstructions"):
                r = rep[name]
                md.append(f"| {name} | {r['fid_vs_reference']:.1f} | " + " | ".join(
                    f"{r['attributes'][x]['accuracy']:.3f}" for x in attrs) + " |")
            md.append("| majority class | - | " + " | ".join(
                f"{rep['originals']['attributes'][x]['majority_rate']:.3f}" for x in attrs) + " |")
            _write_report(args.out, rep, "\n".join(md) + "\n")
        else:
            rep = eval_folder(args.judge, args.manifest, args.images, device=args.device, progress=not args.quiet)
            md = ["| attribute | accuracy | majority rate | balanced accuracy | n |", "| --- | --- | --- | --- | --- |"]
            md += [f"| {a} | {r['accuracy']:.3f} | {r['majority_rate']:.3f} | {r['balanced_accuracy']:.3f} | {r['n']} |"
                   for a, r in rep["attributes"].items()]
            _write_report(args.out, rep, f"# Attributes of {rep['images']}\n\n" + "\n".join(md) + "\n\n"
                          + confusion_markdown(rep["attributes"]))
    except (FileNotFoundError, ValueError) as e:  # DataError is a ValueError
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
