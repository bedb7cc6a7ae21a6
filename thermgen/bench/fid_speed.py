"""``python -m thermgen.fid`` against clean-fid's own ``compute_fid`` on the same two folders, side by side.

    OMP_NUM_THREADS=2 python -m thermgen.bench.fid_speed --real ../shared/data/hit-uav/normal_json/val \\
        --fake ../shared/data/hit-uav/normal_json/test --out bench_out/fid_speed

Both compute the FID of the same files with the same Inception network (clean-fid is handed it as
``custom_feat_extractor``: it cannot download its own here; the TorchScript file as it is, in NCHW, as clean-fid's
``InceptionV3W`` runs it, where thermgen runs it channels-last with its batch norms folded into the convolutions) in
clean-fid's "clean" mode, on the same device, batch size and data-loader
workers. Timed per repeat, in alternating order (so neither side always reads the
files from a warm page cache first):

- ``cleanfid``: ``cleanfid.fid.compute_fid(real, fake, mode="clean", ...)``;
- ``thermgen``: ``thermgen.fid.main`` (the command without the interpreter start) with ``--no-cache``: every
  image read and embedded, FID, KID, the sample sheet and the report written;
- ``thermgen_warm`` (once, last): the same command with the reference-feature cache filled, as a second
  evaluation against the same real set runs.

Prints a table and writes ``OUT/fid_speed.json`` and ``.md``: wall seconds per run, the ratio to clean-fid's, both
FIDs and their relative difference. The features clean-fid computes are also kept (a recording wrapper around the
network it is handed) and thermgen's Fréchet distance is computed on them, which separates the two sources of a
difference: the distance computation, and the float rounding of thermgen's faster convolutions (its FID against the
distance of clean-fid's features). Exits 1 when either exceeds 1e-6 relative.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path


#: Each of the two sources of a difference from clean-fid's FID must stay within this (relative): thermgen's Fréchet
#: distance against clean-fid's on the same features, and thermgen's FID against that same-feature distance (the
#: float rounding of its channels-last, batch-norm-folded convolutions).
RTOL = 1e-6


class _Recording:
    """Passes batches to the network clean-fid is handed and keeps its features (in call order: real, then fake)."""

    def __init__(self, model):
        self.model, self.features = model, []

    def __call__(self, x):
        out = self.model(x)
        self.features.append(out.detach().cpu().double().numpy())
        return out

    def eval(self):
        return self


def _cleanfid_count(folder: Path) -> int:
    """How many files clean-fid's ``get_folder_features`` embeds from ``folder`` (its own glob and extensions)."""
    from glob import glob

    from cleanfid.utils import EXTENSIONS

    return len({f for ext in EXTENSIONS for f in glob(os.path.join(str(folder), f"**/*.{ext}"), recursive=True)})


def time_cleanfid(real: Path, fake: Path, device: str, batch_size: int, workers: int
                  ) -> tuple[float, float, float, float]:
    """clean-fid's FID and wall seconds, thermgen's Fréchet distance of the very features clean-fid computed (so
    that the distance's own difference is told apart from the convolutions' float rounding), and the same features'
    distance through a D x D symmetric eigendecomposition (``frechet_distance``), a second route to compare."""
    import cleanfid.fid as cfid
    import numpy as np
    import torch

    from thermgen.metrics.fid import fid_from_features, frechet_distance, list_images
    from thermgen.metrics.inception import InceptionFeatures

    t0 = time.perf_counter()
    model = InceptionFeatures(device=device, channels_last=False, fold_batchnorm=False)  # as clean-fid's InceptionV3W runs it
    rec = _Recording(model)
    fid = cfid.compute_fid(str(real), str(fake), mode="clean", custom_feat_extractor=rec, device=torch.device(device),
                           batch_size=batch_size, num_workers=workers, verbose=False)
    seconds = time.perf_counter() - t0
    feats = np.concatenate(rec.features)
    # clean-fid's own listing (its extensions, case and hidden-file rules differ from thermgen's list_images)
    n_real, n_fake = _cleanfid_count(real), _cleanfid_count(fake)
    if len(feats) != n_real + n_fake:
        raise SystemExit(f"clean-fid embedded {len(feats)} images; its listing of the folders gives {n_real} + {n_fake}")
    if (n_real, n_fake) != (len(list_images(real)), len(list_images(fake))):
        raise SystemExit(f"clean-fid lists {n_real} + {n_fake} images in the folders, thermgen {len(list_images(real))} + "
                         f"{len(list_images(fake))}: the two commands would not compare the same files")
    a, b = feats[:n_real], feats[n_real:]
    dxd = frechet_distance(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))
    return float(fid), seconds, fid_from_features(a, b), dxd


def time_thermgen(real: Path, fake: Path, out: Path, device: str, batch_size: int, workers: int, cache: Path | None
                  ) -> tuple[float, float]:
    from thermgen.fid import main as fid_main

    argv = ["--real", str(real), "--fake", str(fake), "--out", str(out), "--device", device, "--batch-size",
            str(batch_size), "--workers", str(workers), "--quiet"]
    argv += ["--cache-dir", str(cache)] if cache else ["--no-cache"]
    from thermgen.metrics.features import clear_shared_inception

    clear_shared_inception()  # each timed run builds its network, as the command run on its own does
    t0 = time.perf_counter()
    rc = fid_main(argv)
    seconds = time.perf_counter() - t0
    if rc != 0:
        raise SystemExit(f"thermgen.fid failed (exit {rc}) on {argv}")
    return float(json.loads(out.read_text())["fid"]), seconds


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m thermgen.bench.fid_speed", description=__doc__.split("\n\n")[0])
    p.add_argument("--real", type=Path, required=True, help="folder of real images")
    p.add_argument("--fake", type=Path, required=True, help="second folder (generated or another real split)")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--device", default="cpu", help="torch device for both (default: cpu)")
    p.add_argument("--batch-size", type=int, default=32, help="images per batch, both sides (default: 32)")
    p.add_argument("--workers", type=int, default=0, help="data-loader workers, both sides (default: 0)")
    p.add_argument("--repeats", type=int, default=1, help="timed runs of each (default: 1)")
    args = p.parse_args(argv)
    for d in (args.real, args.fake):
        if not d.is_dir():
            p.error(f"not a folder: {d}")
    import torch

    args.out.mkdir(parents=True, exist_ok=True)
    env = {"torch_threads": torch.get_num_threads(), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
           "cpu_count": os.cpu_count(), "device": args.device, "batch_size": args.batch_size, "workers": args.workers}
    print(f"[fid_speed] {env}", flush=True)
    runs: dict[str, list[dict]] = {"cleanfid": [], "thermgen": []}
    same_features = dxd = float("nan")  # thermgen's distances of clean-fid's features, from the first repeat
    for k in range(args.repeats):
        order = ("cleanfid", "thermgen") if k % 2 == 0 else ("thermgen", "cleanfid")
        for name in order:
            if name == "cleanfid":
                fid, s, same, route2 = time_cleanfid(args.real, args.fake, args.device, args.batch_size, args.workers)
                if k == 0:  # the first repeat's, as the reference FID
                    same_features, dxd = same, route2
            else:
                fid, s = time_thermgen(args.real, args.fake, args.out / "thermgen_fid.json", args.device,
                                       args.batch_size, args.workers, None)
            runs[name].append({"fid": fid, "seconds": round(s, 2)})
            print(f"[fid_speed] repeat {k + 1}/{args.repeats} {name}: FID {fid:.6f} in {s:.1f} s", flush=True)
    cache = args.out / "cache"
    time_thermgen(args.real, args.fake, args.out / "thermgen_fid_warm.json", args.device, args.batch_size,
                  args.workers, cache)  # fills the cache
    fid, s = time_thermgen(args.real, args.fake, args.out / "thermgen_fid_warm.json", args.device, args.batch_size,
                           args.workers, cache)
    runs["thermgen_warm"] = [{"fid": fid, "seconds": round(s, 2)}]
    print(f"[fid_speed] thermgen, reference features cached: FID {fid:.6f} in {s:.1f} s", flush=True)

    base = statistics.median(r["seconds"] for r in runs["cleanfid"])
    ref_fid = runs["cleanfid"][0]["fid"]
    distance_rel_diff = abs(same_features - ref_fid) / max(abs(ref_fid), 1e-12)
    rows = {}
    for name, rs in runs.items():
        sec = statistics.median(r["seconds"] for r in rs)
        rows[name] = {"seconds_median": sec, "seconds": [r["seconds"] for r in rs], "ratio_to_cleanfid": round(sec / base, 3),
                      "fid": rs[0]["fid"], "fid_rel_diff": abs(rs[0]["fid"] - ref_fid) / max(abs(ref_fid), 1e-12),
                      # thermgen's own features against the distance of clean-fid's: the convolutions' rounding
                      "rounding_rel_diff": 0.0 if name == "cleanfid" else
                      abs(rs[0]["fid"] - same_features) / max(abs(same_features), 1e-12)}
    report = {"real": str(args.real), "fake": str(args.fake), "environment": env, "repeats": args.repeats, "rows": rows,
              "same_features": {"fid": same_features, "fid_rel_diff": distance_rel_diff, "fid_dxd_eigh": dxd}}
    lines = ["# thermgen.fid vs clean-fid's compute_fid, same folders", "",
             f"`{args.real}` vs `{args.fake}`; {env['device']}, {env['torch_threads']} torch threads, batch "
             f"{args.batch_size}, {args.workers} workers, {args.repeats} repeat(s), median wall seconds.", "",
             "| run | seconds | × clean-fid | FID | relative difference to clean-fid's FID |", "| --- | --- | --- | --- | --- |"]
    for name, r in rows.items():
        lines.append(f"| {name} | {r['seconds_median']:.1f} | {r['ratio_to_cleanfid']:.2f} | {r['fid']:.6f} | "
                     f"{r['fid_rel_diff']:.1e} |")
    lines += ["", f"thermgen's Fréchet distance of the features clean-fid computed: {same_features:.6f}, "
              f"{distance_rel_diff:.1e} relative to clean-fid's FID (the distance computation alone); thermgen's own "
              f"features move its FID from that by {rows['thermgen']['rounding_rel_diff']:.1e} (the float rounding of "
              "its faster convolutions). The same features through a D x D symmetric eigendecomposition: "
              f"{dxd:.6f}."]
    (args.out / "fid_speed.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "fid_speed.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines[4:]))
    status = 0
    if distance_rel_diff > RTOL:
        print(f"error: on the same features thermgen's FID differs from clean-fid's by {distance_rel_diff:.2e} relative "
              f"(more than {RTOL:g}). With fewer images than feature dimensions (2048) this can be clean-fid's own "
              "error: its scipy sqrtm of a singular covariance product loses about 1e-6 (docs/results-fid.md)",
              file=sys.stderr)
        status = 1
    bad = [n for n, r in rows.items() if r["rounding_rel_diff"] > RTOL]
    if bad:
        print(f"error: thermgen's features move its FID by more than {RTOL:g} (relative) from the distance of clean-fid's "
              f"features for {bad}: more than float rounding in the convolutions explains", file=sys.stderr)
        status = 1
    return status


if __name__ == "__main__":
    raise SystemExit(main())
