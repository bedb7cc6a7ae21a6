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

All write JSON and a Markdown table beside it. Method: :mod:`thermgen.metrics.attributes`.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from thermgen.data.sample import DataError

logger = logging.getLogger("thermgen.judge")


def _records(manifest: Path, split: str) -> list[dict]:
    from thermgen.ircap.manifest import read_manifest

    recs = sorted((r for r in read_manifest(manifest) if r["split"] == split), key=lambda r: r["id"])
    if not recs:
        raise DataError(f"{manifest}: no records of split {split!r}")
    return recs


def split_features(manifest: str | Path, split: str, resolution: int, *, feature: Any = "inception",
                   device: str | None = None, progress: bool = True, cache_dir: str | Path | None = None):
    """``(records sorted by id, features (N, D))`` of a manifest split's real images at ``resolution`` px.

    Through :func:`thermgen.metrics.fid.reference_features`, so the features are the FID's own real-side
    features and share its cache (``cache_dir``; None: no cache).
    """
    from thermgen.metrics.fid import build_feature_extractor, read_manifest_images, reference_features

    recs = _records(Path(manifest), split)
    images = read_manifest_images(manifest, split)
    if images.keys != [r["id"] for r in recs]:
        raise DataError(f"{manifest}: split {split!r} lists other images than its records")
    model = build_feature_extractor(feature, device=device)
    feats, _ = reference_features(images, model, (resolution, resolution), cache_dir=cache_dir, device=device,
                                  progress=progress)
    return recs, feats


def train_judge(manifest: str | Path, out: str | Path, *, resolution: int, train_split: str = "train",
                val_split: str = "val", test_split: str = "test", feature: Any = "inception",
                device: str | None = None, progress: bool = True, cache_dir: str | Path | None = None) -> dict[str, Any]:
    """Train the judge on ``train_split``, choose L2 on ``val_split``, measure the ceiling on ``test_split``.

    Writes ``out/judge.json`` + ``out/judge.safetensors`` and ``out/report.json`` / ``report.md``; returns the
    report (``ceiling``: :func:`thermgen.metrics.attributes.judge_images` on the real test images).
    """
    from thermgen.metrics.attributes import ATTRIBUTE_HELP, AttributeJudge, attribute_table, judge_images

    manifest, out = Path(manifest), Path(out)
    feats, labels = {}, {}
    for split in (train_split, val_split, test_split):
        recs, feats[split] = split_features(manifest, split, resolution, feature=feature, device=device,
                                            progress=progress, cache_dir=cache_dir)
        labels[split] = attribute_table(recs)
    info = {"manifest": str(manifest), "resolution": resolution, "train_split": train_split, "val_split": val_split,
            "feature": feature if isinstance(feature, str) else getattr(feature, "name", type(feature).__name__),
            "n_train": len(feats[train_split])}
    judge = AttributeJudge.fit(feats[train_split], labels[train_split], val_feats=feats[val_split],
                               val_labels=labels[val_split], info=info)
    judge.save(out)
    ceiling = judge_images(judge, feats[test_split], labels[test_split])
    report = {"schema_version": 1, "judge": str(out), "test_split": test_split, "n_test": len(feats[test_split]),
              "info": info, "attributes": {a: ATTRIBUTE_HELP.get(a, "") for a in judge.attributes},
              "l2": {a: h["l2"] for a, h in judge.heads.items()}, "ceiling": ceiling}
    (out / "report.json").write_text(json.dumps(report, indent=2))
    (out / "report.md").write_text(ceiling_markdown(report))
    return report


def ceiling_markdown(report: dict[str, Any]) -> str:
    lines = [f"# Attribute judge: real {report['test_split']} images ({report['n_test']}), the ceiling", "",
             f"Inception features at {report['info']['resolution']} px + one linear head per attribute, trained on "
             f"{report['info']['n_train']} real {report['info']['train_split']} images (labels from metadata and "
             "annotations, never captions).", "",
             "| attribute | accuracy | balanced accuracy | majority class | majority rate | n |", "| --- | --- | --- | --- | --- | --- |"]
    for a, r in report["ceiling"].items():
        lines.append(f"| {a} | {r['accuracy']:.3f} | {r['balanced_accuracy']:.3f} | {r['majority_class']} | "
                     f"{r['majority_rate']:.3f} | {r['n']} |")
    lines += ["", "Classes: " + "; ".join(f"**{a}**: {h}" for a, h in report["attributes"].items())]
    return "\n".join(lines) + "\n"


def confusion_markdown(graded: dict[str, Any]) -> str:
    out = []
    for a, r in graded.items():
        classes = list(r["confusion"])
        out += [f"**{a}** (rows: stated by the prompt, columns: judged)", "",
                "| stated \\ judged | " + " | ".join(classes) + " |", "|---" * (len(classes) + 1) + "|"]
        out += [f"| {e} | " + " | ".join(str(r["confusion"][e].get(p, 0)) for p in classes) + " |" for e in classes]
        out.append("")
    return "\n".join(out)


def autoencoder_ceiling(judge_dir: str | Path, manifest: str | Path, vae_dir: str | Path, *, split: str = "val",
                        reference: str = "test", device: str | None = None, progress: bool = True,
                        cache_dir: str | Path | None = None) -> dict[str, Any]:
    """Judge accuracy and FID (against ``reference``) of ``split``'s originals and of their reconstructions."""
    import tempfile

    import torch

    from pipelines import decode_thermal, encode_thermal
    from pipelines.patch_autoencoder import load_thermal_vae
    from thermgen.io import write_png16
    from thermgen.ircap.manifest import resolve_image
    from thermgen.metrics.attributes import AttributeJudge, attribute_table, image_features, judge_images
    from thermgen.metrics.fid import fid_from_features, list_images
    from thermgen.train.vae import load_images

    judge = AttributeJudge.load(judge_dir)
    res = int(judge.info["resolution"])
    recs = _records(Path(manifest), split)
    _, ref = split_features(manifest, reference, res, device=device, progress=progress, cache_dir=cache_dir)
    vae = load_thermal_vae(vae_dir).eval()
    x = load_images([resolve_image(r, Path(manifest)) for r in recs], res, center_crop=False)
    with torch.no_grad():
        rec = torch.cat([decode_thermal(vae, encode_thermal(vae, x[i:i + 32], sample=False))
                         for i in range(0, len(x), 32)])
    def feats(images):  # originals and reconstructions reach Inception through the same pixels
        with tempfile.TemporaryDirectory() as tmp:
            for i, im in enumerate(images[:, 0].clamp(0, 1).numpy()):
                write_png16(Path(tmp) / f"{i:05d}.png", (im * 65535 + 0.5).astype("uint16"))
            return image_features(list_images(tmp).files, res, device=device, progress=progress)

    orig, recf = feats(x), feats(rec)
    table = attribute_table(recs)
    out = {"schema_version": 1, "vae": str(vae_dir), "vae_class": type(vae).__name__, "split": split,
           "reference": reference, "resolution": res, "n": len(recs)}
    for name, f in (("originals", orig), ("reconstructions", recf)):
        out[name] = {"fid_vs_reference": fid_from_features(ref, f),
                     "attributes": {a: {k: r[k] for k in ("accuracy", "majority_rate")}
                                    for a, r in judge_images(judge, f, table).items()}}
    return out


def text_probe(text_encoder_dir: str | Path, manifest: str | Path, *, train_split: str = "train",
               val_split: str = "val", test_split: str = "test", device: str | None = None) -> dict[str, Any]:
    """Linear probes of the judge's attributes on a text encoder's embeddings of the captions (see the module doc).

    ``text_encoder_dir``: a pipeline's ``text_encoder/`` folder (its conditioning mode is used) or a T-CLIP folder
    (read in "fused" mode). Returns per embedding ("pooled" when the encoder has one, "mean_tokens") and attribute
    the test accuracy and the majority rate. "mean_tokens" averages the encoder's output states over all token
    positions (padding included).
    """
    from tclip.text_encoder import TCLIPTextEncoder
    from thermgen.metrics.attributes import AttributeJudge, attribute_table, judge_images
    from thermgen.train.unet import encode_texts

    folder = Path(text_encoder_dir)
    if (folder / "tclip_config.json").is_file():
        te = TCLIPTextEncoder.from_tclip(folder, mode="fused")
    elif (folder / "config.json").is_file():
        te = TCLIPTextEncoder.from_pretrained(folder)
    else:
        raise FileNotFoundError(f"{folder}: neither a T-CLIP folder (tclip_config.json) nor a text encoder folder "
                                "(config.json)")
    te = te.to(device or "cpu").eval()
    mode = te.config.mode

    def embed(recs):
        g = [r["global_caption"] for r in recs]
        f = [r["fine_caption"] for r in recs]
        prompts, fine = (f, None) if mode == "fine" else (g, f if mode in ("fused", "concat") else None)
        states, pooled = encode_texts(te, prompts, fine, batch_size=64, progress=False)
        feats = {"mean_tokens": states.mean(1).numpy()}
        if pooled is not None:
            feats["pooled"] = pooled.numpy()
        return feats

    splits = {s: _records(Path(manifest), s) for s in (train_split, val_split, test_split)}
    feats = {s: embed(r) for s, r in splits.items()}
    labels = {s: attribute_table(r) for s, r in splits.items()}
    out: dict[str, Any] = {"schema_version": 1, "text_encoder": str(folder), "mode": mode, "manifest": str(manifest),
                           "splits": {s: len(r) for s, r in splits.items()}, "embeddings": {}}
    for kind in feats[train_split]:
        probe = AttributeJudge.fit(feats[train_split][kind], labels[train_split], val_feats=feats[val_split][kind],
                                   val_labels=labels[val_split], info={"kind": kind})
        graded = judge_images(probe, feats[test_split][kind], labels[test_split])
        out["embeddings"][kind] = {a: {k: r[k] for k in ("accuracy", "majority_rate", "balanced_accuracy", "n")}
                                   for a, r in graded.items()}
    return out


def text_probe_markdown(rep: dict[str, Any]) -> str:
    kinds = list(rep["embeddings"])
    attrs = list(dict.fromkeys(a for k in kinds for a in rep["embeddings"][k]))  # a probe may skip an attribute
    md = [f"# Attributes read from the text encoder `{rep['text_encoder']}` ({rep['mode']}): linear probes, test captions",
          "", "| embedding | " + " | ".join(attrs) + " |", "| --- |" + " --- |" * len(attrs)]
    for k in kinds:
        md.append(f"| {k} | " + " | ".join(f"{rep['embeddings'][k][a]['accuracy']:.3f}" if a in rep["embeddings"][k]
                                          else "-" for a in attrs) + " |")
    majority = {a: r["majority_rate"] for k in reversed(kinds) for a, r in rep["embeddings"][k].items()}
    md.append("| majority class | " + " | ".join(f"{majority[a]:.3f}" for a in attrs) + " |")
    return "\n".join(md) + "\n"


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
    for q in (t, e, a, x, d):
        q.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
        q.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def eval_folder(judge_dir: str | Path, manifest: str | Path, images: str | Path, *, device: str | None = None,
                progress: bool = True, feature: Any = "inception") -> dict[str, Any]:
    """Grade the images listed in ``images/generation.json`` against their records' attributes."""
    from thermgen.ircap.manifest import read_manifest
    from thermgen.metrics.attributes import AttributeJudge, image_features, judge_images, record_attributes

    images = Path(images)
    index = images / "generation.json"
    if not index.is_file():
        raise DataError(f"{index}: not found (the folder must hold generation.json with file and record_id per image)")
    try:
        entries = json.loads(index.read_text())["images"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise DataError(f"{index}: expected an object with an 'images' list ({e})") from None
    by_id = {r["id"]: r for r in read_manifest(manifest)}
    files, expected = [], []
    for i, ent in enumerate(entries):
        rid = ent.get("record_id") if isinstance(ent, dict) else None
        if rid not in by_id:
            raise DataError(f"{index}: images[{i}]: field 'record_id' {rid!r} is not a record of {manifest}")
        f = images / ent["file"]
        if not f.is_file():
            raise DataError(f"{index}: images[{i}]: field 'file': {f} not found")
        files.append(f)
        expected.append(record_attributes(by_id[rid]))
    judge = AttributeJudge.load(judge_dir)
    feats = image_features(files, int(judge.info["resolution"]), feature=feature, device=device, progress=progress)
    table = {a: [e.get(a) for e in expected] for a in judge.attributes}
    return {"schema_version": 1, "judge": str(judge_dir), "images": str(images), "n": len(files),
            "attributes": judge_images(judge, feats, table)}


def diversity_folders(judge_dir: str | Path, folders: list[str | Path], *, device: str | None = None,
                      progress: bool = True, feature: Any = "inception") -> dict[str, Any]:
    """:func:`thermgen.metrics.attributes.seed_diversity` of folders holding the same prompts under other seeds."""
    from thermgen.metrics.attributes import AttributeJudge, image_features, seed_diversity

    if len(folders) < 2:
        raise ValueError(f"--images: need folders of at least 2 seeds, got {len(folders)}")
    lists = []
    for folder in map(Path, folders):
        index = folder / "generation.json"
        try:
            entries = json.loads(index.read_text())["images"]
            lists.append([(folder / e["file"], e.get("prompt"), e.get("prompt_fine")) for e in entries])
        except FileNotFoundError:
            raise DataError(f"{index}: not found (each folder needs generation.json)") from None
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise DataError(f"{index}: expected an object with an 'images' list of entries with 'file' ({err})") from None
    for folder, entries in zip(folders[1:], lists[1:]):
        if [x[1:] for x in entries] != [x[1:] for x in lists[0]]:
            raise DataError(f"{folder}/generation.json: its prompts differ from {folders[0]}'s (same prompts, same "
                            "order, other seeds expected)")
    judge = AttributeJudge.load(judge_dir)
    res = int(judge.info["resolution"])
    feats = [image_features([x[0] for x in entries], res, feature=feature, device=device, progress=progress)
             for entries in lists]
    return {"schema_version": 1, "judge": str(judge_dir), "folders": [str(f) for f in folders],
            **seed_diversity(feats)}


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
