"""Sanity benchmark of the FID pipeline on real thermal data: real-vs-real must be far below real-vs-noise.

    python -m thermgen.bench.fid_sanity --root ../shared/data/hit-uav --sizes native,64 --out bench_out/fid_sanity

For each resolution it computes, with the standard Inception features in clean-fid's "clean" mode
(thermgen.metrics.compute_metrics):

- FID/KID(HIT-UAV test vs HIT-UAV val): two real splits of the same dataset, the floor any
  generator is judged against at these set sizes;
- FID/KID(HIT-UAV test vs uniform noise): as many noise images as val, same size, seeded.

It prints a table, writes ``fid_sanity.json`` + ``.md`` and a bar chart ``fid_sanity.png``, and
exits non-zero if real-vs-real is not at least ``--min-ratio`` times below real-vs-noise.
HIT-UAV: Suo et al., Scientific Data 10, 227 (2023), CC BY 4.0.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from thermgen.data.sample import DataError
from thermgen.metrics import compute_metrics
from thermgen.metrics.fid import list_images
from thermgen.io import image_size


def write_noise(folder: Path, n: int, size: tuple[int, int], seed: int = 0) -> Path:
    """``n`` 8-bit grey PNGs of i.i.d. uniform noise, ``size = (width, height)``."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (size[1], size[0]), dtype=np.uint8)).save(folder / f"noise_{i:04d}.png")
    return folder


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m thermgen.bench.fid_sanity", description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--root", default="../shared/data/hit-uav", help="HIT-UAV root (holds normal_json/{test,val})")
    p.add_argument("--real-split", default="test", help="split used as the real reference")
    p.add_argument("--other-split", default="val", help="second real split, compared against the reference")
    p.add_argument("--sizes", default="native", help="comma-separated resolutions: 'native' (the images' own size), PX or WxH")
    p.add_argument("--out", default="bench_out/fid_sanity", help="folder for fid_sanity.json/.md/.png")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--batch-size", type=int, default=32, help="images per feature batch")
    p.add_argument("--kid-subsets", type=int, default=100, help="KID subsets")
    p.add_argument("--seed", type=int, default=0, help="seed of the noise images and KID subsets")
    p.add_argument("--cache-dir", default=None, help="reference-feature cache (default: thermgen's)")
    p.add_argument("--min-ratio", type=float, default=3.0, help="fail unless FID(noise) >= min-ratio * FID(real vs real)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def _parse_size(s: str) -> tuple[int, int] | None:
    s = s.strip().lower()
    if s == "native":
        return None
    if "x" in s:
        w, h = s.split("x")
        return int(w), int(h)
    return int(s), int(s)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    base = Path(args.root) / "normal_json"
    try:
        real = base / args.real_split
        other = base / args.other_split
        other_set = list_images(other)
        list_images(real)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    native = image_size(other_set.files[0])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    kw = dict(device=args.device, batch_size=args.batch_size, kid_subsets=args.kid_subsets, seed=args.seed,
              cache_dir=args.cache_dir, progress=not args.quiet)
    with tempfile.TemporaryDirectory(prefix="fid_noise_") as tmp:
        noise = write_noise(Path(tmp) / "noise", len(other_set), native, args.seed)
        for s in args.sizes.split(","):
            size = _parse_size(s) or native
            for label, fake in ((f"{args.real_split} vs {args.other_split}", other), (f"{args.real_split} vs uniform noise", noise)):
                t0 = time.perf_counter()
                r = compute_metrics(real, fake, size=size, **kw)
                rows.append({"pair": label, "resolution": r["resolution"], "fid": r["fid"], "kid_mean": r["kid_mean"], "kid_std": r["kid_std"],
                             "n_real": r["n_real"], "n_fake": r["n_fake"], "feature": r["feature"], "warnings": r["warnings"],
                             "seconds": round(time.perf_counter() - t0, 1)})
                print(f"{label:<28} {r['resolution'][0]}x{r['resolution'][1]:<5} FID {r['fid']:9.2f}  KID {r['kid_mean']:.5f} ± {r['kid_std']:.5f}"
                      f"  ({r['n_real']} vs {r['n_fake']} images, {rows[-1]['seconds']} s)", flush=True)
    ok = True
    lines = ["# FID sanity: real vs real against real vs noise", "",
             f"Inception ({rows[0]['feature']}), clean-fid clean mode; HIT-UAV (Suo et al. 2023, CC BY 4.0) from `{args.root}`.", "",
             "| pair | resolution | FID | KID | n_real | n_fake |", "| --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['pair']} | {r['resolution'][0]}x{r['resolution'][1]} | {r['fid']:.2f} | {r['kid_mean']:.5f} ± {r['kid_std']:.5f} | {r['n_real']} | {r['n_fake']} |")
    for rr, rn in zip(rows[0::2], rows[1::2]):
        ratio = rn["fid"] / max(rr["fid"], 1e-9)
        good = ratio >= args.min_ratio
        ok &= good
        msg = f"{rr['resolution'][0]}x{rr['resolution'][1]}: FID(noise) / FID(real) = {ratio:.1f} ({'ok' if good else 'FAIL'}, need >= {args.min_ratio})"
        print(msg)
        lines += ["", msg]
    warnings = sorted({w for r in rows for w in r["warnings"]})
    if warnings:
        lines += ["", "Warnings:"] + [f"- {w}" for w in warnings]
    (out / "fid_sanity.json").write_text(json.dumps({"root": str(args.root), "rows": rows, "ok": ok}, indent=2) + "\n")
    (out / "fid_sanity.md").write_text("\n".join(lines) + "\n")
    _plot(rows, out / "fid_sanity.png")
    print(f"wrote {out / 'fid_sanity.json'}, .md and .png")
    return 0 if ok else 1


def _plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1.6 + 1.3 * len(rows), 3.2))
    labels = [f"{r['pair']}\n{r['resolution'][0]}x{r['resolution'][1]}" for r in rows]
    colours = ["tab:blue" if "noise" not in r["pair"] else "tab:red" for r in rows]
    bars = ax.bar(range(len(rows)), [r["fid"] for r in rows], color=colours)
    ax.bar_label(bars, fmt="%.1f", fontsize=7)
    ax.set_xticks(range(len(rows)), labels, fontsize=6)
    ax.set_ylabel("FID (Inception, clean-fid)")
    ax.set_title("real vs real must be far below real vs noise", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
