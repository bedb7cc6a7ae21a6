"""Reproduce the HIT-UAV T-CLIP retrieval table: `python -m tclip.bench_hituav --manifests DIR --out OUT`.

DIR holds the IR-Cap manifests of HIT-UAV's splits, made with thermgen's captioner (`--variants 8`
stores eight other phrasings of every caption, which training draws from as text augmentation):

    for s in train val test; do
      python -m thermgen.caption --source hit-uav --root ../shared/data/hit-uav --split $s --variants 8 --out DIR/$s.jsonl
    done

Protocol (no pretrained weights offline, so every seed runs the whole `tclip.train` command):

1. every seed: `tclip.train` on train with the CPU config trains the whole CLIP from scratch (stage
   "base"), then the two adapters on that frozen base (OUT/seed<N>); the base row is each seed's base
   without adapters, so the std covers the base training too;
2. the untrained base (random init, one per seed): the lower bound ("zero-shot" has no meaning here);
3. the fusion alpha is chosen on val (dual, mean of I2T and T2I R@1, `--alpha-sweep`), never on test;
4. test: every variant, mean +- std over the seeds, with that alpha.

With `--queries QDIR` (held-out queries in a user's own words, one manifest per style, from
`python -m thermgen.ircap.queries --manifest DIR/test.jsonl --split test --out QDIR`), every
`QDIR/test.<style>.jsonl` is evaluated too, with the same models and alpha: query R@1 beside caption R@1.

Writes OUT/results.md (the table), OUT/results.json, and the eval reports (JSON/MD/PNG) under
OUT/reports/. Completed steps are skipped when rerun.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from . import eval as tclip_eval
from . import train as tclip_train
from .data import read_manifest
from .model import TCLIP, load

__all__ = ["main"]

PROTOCOL = 2  # 1: one shared base for all seeds; 2: every seed trains its own base


def _train(args_list: list[str], out: Path) -> None:
    if tclip_train.run_finished(out):
        print(f"[bench] {out}: already trained, skipped")
        return
    code = tclip_train.main([*args_list, "--out", str(out), *(["--resume"] if (out / "train_state.json").is_file() else [])])
    if code != 0:
        raise RuntimeError(f"tclip.train failed for {out} (exit {code})")


def _row(name: str, v: dict, ks: list[int]) -> str:
    cells = [f"{v['mean'][d][str(k)]:.3f} ± {v['std'][d][str(k)]:.3f}" for d in ("i2t", "t2i") for k in ks]
    return f"| {name} | " + " | ".join(cells) + " |"


def run(manifests: Path, out: Path, seeds: list[int], config: str, progress: bool, queries: Path | None = None) -> dict:
    train_m, val_m, test_m = (manifests / f"{s}.jsonl" for s in ("train", "val", "test"))
    for m in (train_m, val_m, test_m):
        if not m.is_file():
            raise FileNotFoundError(f"{m} missing: caption HIT-UAV first (see --help)")
    out.mkdir(parents=True, exist_ok=True)
    # Finished runs are skipped on a rerun: only when they were made by this protocol and config.
    marker = out / "bench.json"
    stamp = {"protocol": PROTOCOL, "config": str(config), "manifests": str(manifests)}
    if marker.is_file():
        if json.loads(marker.read_text()) != stamp:
            raise ValueError(f"{out} holds a bench run with other settings ({marker.read_text().strip()}); use another --out")
    elif any(out.glob("seed*")):
        raise ValueError(f"{out} holds runs of an older bench protocol (no {marker.name}); use another --out")
    marker.write_text(json.dumps(stamp) + "\n")
    common = ["--manifest", str(train_m), "--split", "train", "--config", config, *([] if progress else ["--no-progress"])]
    if not any(r.global_variants for r in read_manifest(train_m, split="train")):
        print(f"[bench] warning: {train_m} has no caption_variants; caption with --variants 8 for the published settings", file=sys.stderr)
    seed_dirs = []
    for s in seeds:
        seed_dirs.append(out / f"seed{s}")
        _train([*common, "--seed", str(s)], seed_dirs[-1])
    arch = load(seed_dirs[0]).base_info["arch"]

    untrained = []
    for s in seeds:
        d = out / f"untrained_seed{s}"
        if not (d / "tclip_config.json").is_file():
            torch.manual_seed(s)
            TCLIP.from_base(arch).save(d)
        untrained.append(d)

    reports = out / "reports"
    val_report = tclip_eval.evaluate(seed_dirs, val_m, split="val", alpha_sweep=True, progress=progress)
    val_report["command"] = "(tclip.bench_hituav) val, --alpha-sweep"
    tclip_eval.write_report(val_report, reports / "val.json")
    sweep = val_report["alpha_sweep"]["mean_R@1"]
    alpha = tclip_eval.choose_alpha(val_report)  # best on val

    test_report = tclip_eval.evaluate(seed_dirs, test_m, split="test", alpha=alpha, progress=progress)
    test_report["command"] = f"(tclip.bench_hituav) test, --alpha {alpha}"
    tclip_eval.write_report(test_report, reports / "test.json")
    untrained_report = tclip_eval.evaluate(untrained, test_m, split="test", alpha=alpha, progress=progress)
    untrained_report["command"] = "(tclip.bench_hituav) untrained base, test"
    tclip_eval.write_report(untrained_report, reports / "test_untrained.json")

    ks = test_report["ks"]
    v = test_report["variants"]
    singles = {n: (v[n]["mean"]["i2t"]["1"] + v[n]["mean"]["t2i"]["1"]) / 2 for n in ("global", "fine")}
    best_single = max(singles, key=singles.get)
    dual = (v["dual"]["mean"]["i2t"]["1"] + v["dual"]["mean"]["t2i"]["1"]) / 2
    lines = [
        f"T-CLIP retrieval on HIT-UAV test ({test_report['n_images']} images, chance R@1 = 1/{test_report['n_images']}), "
        f"positives by image id, mean ± std over seeds {seeds}; fusion alpha {alpha} chosen on val "
        f"(val sweep, dual mean R@1: " + ", ".join(f"{a}: {x:.3f}" for a, x in sweep.items()) + ").",
        "",
        "| variant | " + " | ".join(f"I2T R@{k}" for k in ks) + " | " + " | ".join(f"T2I R@{k}" for k in ks) + " |",
        "| --- |" + " --- |" * (2 * len(ks)),
        _row("untrained base (random init)", untrained_report["variants"]["base"], ks),
    ]
    labels = {
        "base": "base (trained from scratch, no adapter)",
        "global": "global adapter",
        "fine": "fine adapter",
        "tclip-global": "T-CLIP global (one caption, both adapters)",
        "tclip-fine": "T-CLIP fine (one caption, both adapters)",
        "dual": "**T-CLIP dual**",
    }
    lines += [_row(labels[n], v[n], ks) for n in labels if n in v]
    verdict = "beats" if dual > singles[best_single] else "does not beat"
    lines += [
        "",
        f"Dual (mean R@1 {dual:.3f}) {verdict} the best single adapter ({best_single}, {singles[best_single]:.3f}).",
    ]
    query_reports = {}
    if queries is not None:
        paths = sorted(Path(queries).glob("test.*.jsonl"))
        if not paths:
            raise FileNotFoundError(f"{queries}: no test.<style>.jsonl query manifests (python -m thermgen.ircap.queries)")
        cap = {d: v["dual"]["mean"][d]["1"] for d in ("i2t", "t2i")}
        lines += ["", f"Held-out queries ({queries}), T-CLIP dual, alpha {alpha}, mean ± std over the seeds:", "",
                  "| queries | I2T R@1 | I2T R@5 | T2I R@1 | T2I R@5 | R@1 / caption R@1 (I2T / T2I) |", "| --- |" + " --- |" * 5]
        for qp in paths:
            style = qp.name[len("test."):-len(".jsonl")]
            rep = tclip_eval.evaluate(seed_dirs, qp, split="test", alpha=alpha, progress=progress)
            rep["command"] = f"(tclip.bench_hituav) queries {style}, --alpha {alpha}"
            tclip_eval.write_report(rep, reports / f"queries_{style}.json")
            q = rep["variants"]["dual"]
            query_reports[style] = {"report": str(reports / f"queries_{style}.json"),
                                    "R@1": {d: q["mean"][d]["1"] for d in ("i2t", "t2i")},
                                    "ratio": {d: q["mean"][d]["1"] / cap[d] if cap[d] else None for d in ("i2t", "t2i")}}
            r = query_reports[style]["ratio"]
            lines.append(f"| {style} | {q['mean']['i2t']['1']:.3f} ± {q['std']['i2t']['1']:.3f} | {q['mean']['i2t']['5']:.3f} | "
                         f"{q['mean']['t2i']['1']:.3f} ± {q['std']['t2i']['1']:.3f} | {q['mean']['t2i']['5']:.3f} | "
                         + " / ".join("n/a" if r[d] is None else f"{r[d]:.2f}" for d in ("i2t", "t2i")) + " |")
    (out / "results.md").write_text("\n".join(lines) + "\n")
    result = {
        "alpha": alpha,
        "seeds": seeds,
        "val_sweep": sweep,
        "dual_mean_R@1": dual,
        "best_single": best_single,
        "best_single_mean_R@1": singles[best_single],
        "dual_beats_best_single": dual > singles[best_single],
        "reports": {"val": str(reports / "val.json"), "test": str(reports / "test.json"), "untrained": str(reports / "test_untrained.json")},
        "queries": query_reports,
    }
    (out / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    print("\n".join(lines))
    return result


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m tclip.bench_hituav",
        description=__doc__.split("\n\n")[0] + " Trains per seed (the base from scratch, then both adapters on it), "
        "chooses the fusion alpha on val, and writes the test table (results.md).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--manifests", required=True, type=Path, help="folder with train.jsonl, val.jsonl and test.jsonl (thermgen.caption output)")
    p.add_argument("--out", required=True, type=Path, help="output folder (runs, reports, results.md)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 42, 123], help="seeds; each trains its own base and adapters")
    p.add_argument("--config", default="hituav-cpu", help="training config name (tclip/train_configs) or file")
    p.add_argument("--queries", type=Path, default=None,
                   help="folder of held-out query manifests test.<style>.jsonl (python -m thermgen.ircap.queries) to evaluate too")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        run(args.manifests, args.out, args.seeds, args.config, not args.no_progress, queries=args.queries)
    except (FileNotFoundError, RuntimeError, ValueError) as exc:
        print(f"tclip.bench_hituav: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
