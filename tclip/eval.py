"""Retrieval evaluation of T-CLIP folders: `python -m tclip.eval --model DIR [DIR ...] --manifest M --out report.json`.

Image -> text and text -> image Recall@K (K = 1, 5, 10, 25, 50, 100) over the whole split as the
gallery, positives by image id (`tclip.metrics`), for every variant:

    variant        image side                    text side
    base           no adapter                    global caption, no adapter
    global         global adapter                global caption, global adapter
    fine           fine adapter                  fine caption, fine adapter
    tclip-global   fused (alpha g + (1-alpha) f) global caption through both adapters, fused
    tclip-fine     fused                         fine caption through both adapters, fused
    dual           fused                         global caption via global + fine caption via fine, fused

Several `--model` folders (e.g. seeds) give mean +- std (sample std, ddof=1). Outputs: the JSON
report (keys below, stable), a Markdown table (`.md`) and a PNG of the R@K curves (`.png`) beside it;
`--save-embeddings` writes every embedding with its image ids (`.npz`), so anyone can recompute.

Report keys: schema_version, command, manifest, split, n_images, n_texts, ks, ties, alpha, models,
chance (R@K of a random ranking), variants.<name>.{image, text, runs[{i2t,t2i}], mean, std} with
recall dicts keyed by str(K), skipped (variant -> reason), and with --alpha-sweep: alpha_sweep.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .data import iter_batches, read_manifest, split_images
from .metrics import DEFAULT_KS, mean_std, recall_at_k
from .model import fuse, load

__all__ = ["main", "evaluate", "choose_alpha", "VARIANTS", "embed_split", "variant_embeddings"]

# name -> (image side, text side, needed adapters). Text side: (caption kind via global, caption kind via fine)
VARIANTS = {
    "base": {"image": "base", "text": "base:global", "needs": ()},
    "global": {"image": "global", "text": "global:global", "needs": ("global",)},
    "fine": {"image": "fine", "text": "fine:fine", "needs": ("fine",)},
    "tclip-global": {"image": "fused", "text": "fused:global+global", "needs": ("global", "fine")},
    "tclip-fine": {"image": "fused", "text": "fused:fine+fine", "needs": ("global", "fine")},
    "dual": {"image": "fused", "text": "fused:global+fine", "needs": ("global", "fine")},
}
SWEEP_ALPHAS = tuple(round(a * 0.1, 1) for a in range(11))


@torch.no_grad()
def embed_split(model, images, captions: dict[str, list[str]], batch_size: int = 64, progress: bool = True, workers: int = 2) -> dict:
    """Normalised embeddings of a split for every adapter of `model` (and the plain base).

    images: (N, 1, H, W) in [0, 1], or a `tclip.data.ThermalImages` (streamed from disk by `workers`
    DataLoader processes, so memory does not grow with N). captions: {"global": [...N], "fine": [...N]}.
    Returns {"image": {adapter: (N, D)}, "text": {(adapter, kind): (N, D)}}; adapter None = base.
    Each distinct caption string is embedded once, so equal captions get identical embeddings.
    """
    from tqdm.auto import tqdm

    adapters = [None, *model.adapters]
    out = {"image": {}, "text": {}}
    total = len(adapters) * (len(images) + sum(len(set(c)) for c in captions.values()))
    bar = tqdm(total=total, desc="embed", disable=not progress, leave=False)
    for adapter in adapters:
        feats = []
        for chunk in iter_batches(images, batch_size, workers):
            feats.append(F.normalize(model.image_features(model.preprocess(chunk), adapter), dim=-1).cpu())
            bar.update(chunk.shape[0])
        out["image"][adapter] = torch.cat(feats)
        for kind, caps in captions.items():
            unique = list(dict.fromkeys(caps))
            index = {c: i for i, c in enumerate(unique)}
            feats = []
            for i in range(0, len(unique), batch_size):
                chunk = unique[i : i + batch_size]
                feats.append(F.normalize(model.text_features(model.tokenize(chunk), adapter), dim=-1).cpu())
                bar.update(len(chunk))
            emb = torch.cat(feats)
            out["text"][(adapter, kind)] = emb[torch.tensor([index[c] for c in caps])]
    bar.close()
    return out


def variant_embeddings(emb: dict, variant: str, alpha: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(image (N, D), text (N, D)) embeddings of one variant from `embed_split`'s output."""
    img, txt = emb["image"], emb["text"]
    if variant == "base":
        return img[None], txt[(None, "global")]
    if variant == "global":
        return img["global"], txt[("global", "global")]
    if variant == "fine":
        return img["fine"], txt[("fine", "fine")]
    fused_img = fuse(img["global"], img["fine"], alpha)
    if variant == "tclip-global":
        return fused_img, fuse(txt[("global", "global")], txt[("fine", "global")], alpha)
    if variant == "tclip-fine":
        return fused_img, fuse(txt[("global", "fine")], txt[("fine", "fine")], alpha)
    if variant == "dual":
        return fused_img, fuse(txt[("global", "global")], txt[("fine", "fine")], alpha)
    raise ValueError(f"unknown variant {variant!r}; known: {list(VARIANTS)}")


def _recall_strkeys(rec: dict) -> dict:
    return {d: {str(k): v for k, v in rec[d].items()} for d in ("i2t", "t2i")}


def evaluate(
    model_dirs: list[str | Path],
    manifest: str | Path,
    split: str = "test",
    alpha: float | None = None,
    ks=DEFAULT_KS,
    ties: str = "expected",
    alpha_sweep: bool = False,
    save_embeddings: str | Path | None = None,
    batch_size: int = 64,
    progress: bool = True,
    image_cache_mb: float | None = 4096,
    workers: int = 2,
) -> dict:
    """Evaluate one or more T-CLIP folders on a manifest split; returns the report dict (module docstring)."""
    if not model_dirs:
        raise ValueError("no --model folder given")
    records = read_manifest(manifest, split=split)
    if not records:
        raise ValueError(f"{manifest}: no records with split {split!r}")
    ids = [r.id for r in records]
    captions = {"global": [r.global_caption for r in records], "fine": [r.fine_caption for r in records]}
    ks = [int(k) for k in ks]
    runs: dict[str, list] = {v: [] for v in VARIANTS}
    skipped: dict[str, str] = {}
    sweep_runs: list[dict] = []
    arrays: dict[str, np.ndarray] = {"image_ids": np.array(ids), "text_ids": np.array(ids)}
    images_cache: dict[tuple, object] = {}
    alphas_used = []
    for r, model_dir in enumerate(model_dirs):
        model = load(model_dir)
        a = model.fusion_alpha if alpha is None else float(alpha)
        alphas_used.append(a)
        size = tuple(model.image_size)
        if size not in images_cache:  # decoded once for all models when it fits in image_cache_mb, else streamed
            images_cache[size] = split_images([rec.image for rec in records], size, image_cache_mb, workers=workers, progress=progress)
        emb = embed_split(model, images_cache[size], captions, batch_size=batch_size, progress=progress, workers=workers)
        for variant, spec in VARIANTS.items():
            missing = [n for n in spec["needs"] if n not in model.adapters]
            if missing:
                skipped[variant] = f"{model_dir}: no {' / '.join(missing)} adapter"
                continue
            img, txt = variant_embeddings(emb, variant, a)
            runs[variant].append(_recall_strkeys(recall_at_k(img, txt, ids, ids, ks, ties)))
            if save_embeddings:
                arrays[f"run{r}__{variant}__image"] = img.numpy()
                arrays[f"run{r}__{variant}__text"] = txt.numpy()
        if alpha_sweep and all(n in model.adapters for n in ("global", "fine")):
            sweep = {}
            for sa in SWEEP_ALPHAS:
                img, txt = variant_embeddings(emb, "dual", sa)
                sweep[str(sa)] = _recall_strkeys(recall_at_k(img, txt, ids, ids, ks, ties))
            sweep_runs.append(sweep)
        del model

    n = len(records)
    report = {
        "schema_version": 1,
        "command": None,  # filled in by main()
        "manifest": str(manifest),
        "split": split,
        "n_images": n,
        "n_texts": n,
        "ks": ks,
        "ties": ties,
        "alpha": alphas_used[0] if len(set(alphas_used)) == 1 else alphas_used,
        "models": [str(d) for d in model_dirs],
        "chance": {str(k): min(1.0, k / n) for k in ks},
        "variants": {},
        "skipped": {v: skipped[v] for v in skipped if not runs[v]},
    }
    for variant, spec in VARIANTS.items():
        if not runs[variant]:
            continue
        stats = {"mean": {}, "std": {}}
        for d in ("i2t", "t2i"):
            for key in ("mean", "std"):
                stats[key][d] = {}
            for k in ks:
                m, s = mean_std([run[d][str(k)] for run in runs[variant]])
                stats["mean"][d][str(k)], stats["std"][d][str(k)] = m, s
        report["variants"][variant] = {"image": spec["image"], "text": spec["text"], "runs": runs[variant], **stats}
    if sweep_runs:
        report["alpha_sweep"] = {
            "variant": "dual",
            "alphas": list(SWEEP_ALPHAS),
            "mean_R@1": {
                str(sa): float(np.mean([(run[str(sa)]["i2t"]["1"] + run[str(sa)]["t2i"]["1"]) / 2 for run in sweep_runs]))
                for sa in SWEEP_ALPHAS
            },
            "runs": sweep_runs,
        }
    if save_embeddings:
        save_embeddings = Path(save_embeddings)
        save_embeddings.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(save_embeddings, **arrays)
    return report


def choose_alpha(val_report: dict) -> float:
    """The fusion alpha of a validation report's `--alpha-sweep`: best mean R@1 of I2T and T2I; ties go to the
    paper's 0.8, then to the larger alpha."""
    sweep = val_report["alpha_sweep"]["mean_R@1"]
    return float(max(sweep, key=lambda a: (round(sweep[a], 12), a == "0.8", float(a))))


def markdown_table(report: dict) -> str:
    """Markdown table: one row per variant, I2T and T2I R@K as mean +- std over the runs."""
    ks = report["ks"]
    nruns = max(len(v["runs"]) for v in report["variants"].values()) if report["variants"] else 0
    lines = [
        f"Retrieval on `{report['manifest']}` split `{report['split']}`: {report['n_images']} images, "
        f"positives by image id, ties: {report['ties']}, alpha {report['alpha']}, {nruns} run(s) (mean ± std).",
        "",
        "| variant | " + " | ".join(f"I2T R@{k}" for k in ks) + " | " + " | ".join(f"T2I R@{k}" for k in ks) + " |",
        "| --- |" + " --- |" * (2 * len(ks)),
    ]
    for name, v in report["variants"].items():
        cells = []
        for d in ("i2t", "t2i"):
            for k in ks:
                m, s = v["mean"][d][str(k)], v["std"][d][str(k)]
                cells.append(f"{m:.3f} ± {s:.3f}" if len(v["runs"]) > 1 else f"{m:.3f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    chance = " | ".join(f"{report['chance'][str(k)]:.3f}" for k in ks)
    lines.append(f"| chance | {chance} | {chance} |")
    if report.get("skipped"):
        lines += ["", "Skipped: " + "; ".join(f"{k} ({v})" for k, v in report["skipped"].items())]
    if "alpha_sweep" in report:
        sw = report["alpha_sweep"]["mean_R@1"]
        lines += ["", "Alpha sweep (dual, mean of I2T and T2I R@1): " + ", ".join(f"{a}: {v:.3f}" for a, v in sw.items())]
    return "\n".join(lines) + "\n"


def plot_curves(report: dict, path: str | Path) -> None:
    """PNG of the R@K curves (I2T and T2I panels, one line per variant, std band)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ks = report["ks"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for ax, d, title in zip(axes, ("i2t", "t2i"), ("image → text", "text → image")):
        for name, v in report["variants"].items():
            m = np.array([v["mean"][d][str(k)] for k in ks])
            s = np.array([v["std"][d][str(k)] for k in ks])
            ax.plot(ks, m, marker="o", label=name)
            ax.fill_between(ks, np.clip(m - s, 0, 1), np.clip(m + s, 0, 1), alpha=0.15)
        ax.plot(ks, [report["chance"][str(k)] for k in ks], "k--", lw=1, label="chance")
        ax.set_xscale("log")
        ax.set_xticks(ks)
        ax.set_xticklabels([str(k) for k in ks])
        ax.set_xlabel("K")
        ax.set_title(f"{title}, {report['split']} ({report['n_images']} images)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("Recall@K")
    axes[1].legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(report: dict, out: str | Path) -> tuple[Path, Path, Path]:
    """Write report JSON, the Markdown table (.md) and the curves (.png) side by side."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    md, png = out.with_suffix(".md"), out.with_suffix(".png")
    md.write_text(markdown_table(report))
    plot_curves(report, png)
    return out, md, png


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m tclip.eval",
        description="Image<->text retrieval Recall@K of T-CLIP folders on a manifest split (whole split as gallery, positives by "
        "image id), for the variants base / global / fine / tclip-global / tclip-fine / dual; mean ± std over several --model folders.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--model", nargs="+", required=True, help="T-CLIP folder(s), e.g. one per seed")
    p.add_argument("--manifest", required=True, help="JSONL manifest (thermgen contract 1)")
    p.add_argument("--split", default="test", help="manifest split to evaluate on")
    p.add_argument("--out", required=True, help="report JSON path; the .md table and .png curves are written beside it")
    p.add_argument("--save-embeddings", default=None, help="also write all embeddings with their image ids to this .npz")
    p.add_argument("--alpha-sweep", action="store_true", help="also sweep the dual fusion alpha over 0, 0.1, ..., 1")
    p.add_argument("--alpha", type=float, default=None, help="fusion alpha for the fused variants (default: each model's own, 0.8)")
    p.add_argument("--ks", type=int, nargs="+", default=list(DEFAULT_KS), help="the K of Recall@K")
    p.add_argument(
        "--ties",
        choices=["expected", "pessimistic"],
        default="expected",
        help="tied scores: expected recall under a random order of the tied items, or tied negatives ranked first",
    )
    p.add_argument("--batch-size", type=int, default=64, help="embedding batch size")
    p.add_argument("--image-cache-mb", type=float, default=4096,
                   help="decode the split's images into memory once when they fit in this many MB, else stream them "
                        "from disk (0: always stream); the same embeddings either way")
    p.add_argument("--workers", type=int, default=2, help="image-reading workers")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        report = evaluate(
            args.model,
            args.manifest,
            split=args.split,
            alpha=args.alpha,
            ks=args.ks,
            ties=args.ties,
            alpha_sweep=args.alpha_sweep,
            save_embeddings=args.save_embeddings,
            batch_size=args.batch_size,
            progress=not args.no_progress,
            image_cache_mb=args.image_cache_mb,
            workers=args.workers,
        )
    except (ValueError, FileNotFoundError) as exc:
        print(f"tclip.eval: error: {exc}", file=sys.stderr)
        return 2
    report["command"] = "python -m tclip.eval " + " ".join(argv if argv is not None else sys.argv[1:])
    paths = write_report(report, args.out)
    print(markdown_table(report))
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0


if __name__ == "__main__":
    sys.exit(main())
