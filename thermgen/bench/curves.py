"""Do two recipe runs train alike? Their per-stage loss curves, side by side.

For two run folders of ``python -m thermgen.train`` (e.g. one with ``--num-processes 2`` and one without), reads each
training stage's CSV log (T-CLIP ``tclip/logs/loss.csv``, VAE ``vae/vae_log.csv``, UNet
``unet/logs/train_log.csv``), prints per stage the steps both logged and the largest absolute and relative difference
of the loss over them, writes ``OUT/curves.json`` and ``OUT/curves.png`` (one panel per stage, both runs' curves)::

    python -m thermgen.bench.curves --a runs/one --b runs/two --out runs/curves --label-a "1 process" --label-b "2 processes"

A stage without a log in either run is listed as missing.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

#: stage -> its loss log inside a run folder (the recipe's layout)
STAGE_LOGS = {"tclip": "tclip/logs/loss.csv", "vae": "vae/vae_log.csv", "unet": "unet/logs/train_log.csv"}


def _series(rows: list[dict[str, Any]]) -> dict[tuple, float]:
    """(stage label, step) -> loss. T-CLIP logs its base and adapter stages in one file, told apart by their
    ``stage`` column when there is one."""
    out = {}
    for r in rows:
        loss = r.get("loss")
        if isinstance(loss, float):
            out[(str(r.get("stage", "")), int(r["step"]))] = loss
    return out


def compare_runs(a: Path, b: Path) -> dict[str, Any]:
    """Per stage: logged steps in common, and the largest absolute / relative loss difference over them."""
    from tclip.scaffold import read_csv_log

    out: dict[str, Any] = {}
    for stage, rel in STAGE_LOGS.items():
        sa, sb = _series(read_csv_log(a / rel)), _series(read_csv_log(b / rel))
        if not sa or not sb:
            out[stage] = {"missing": [str(p / rel) for p, s in ((a, sa), (b, sb)) if not s]}
            continue
        common = sorted(set(sa) & set(sb))
        diffs = [abs(sa[k] - sb[k]) for k in common]
        rels = [abs(sa[k] - sb[k]) / max(abs(sa[k]), 1e-12) for k in common]
        out[stage] = {"log": rel, "steps_a": len(sa), "steps_b": len(sb), "common": len(common),
                      "max_abs_diff": max(diffs) if diffs else None, "max_rel_diff": max(rels) if rels else None,
                      "a": [[k[0], k[1], sa[k]] for k in sorted(sa)], "b": [[k[0], k[1], sb[k]] for k in sorted(sb)]}
    return out


def plot(report: dict[str, Any], path: Path, label_a: str, label_b: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stages = [s for s, r in report.items() if "missing" not in r and r["common"]]
    if not stages:
        return
    fig, axes = plt.subplots(1, len(stages), figsize=(4.5 * len(stages), 3.6), squeeze=False)
    for ax, s in zip(axes[0], stages):
        r = report[s]
        for key, label, style in (("a", label_a, "-"), ("b", label_b, "--")):
            parts = dict.fromkeys(p for p, _, _ in r[key])
            offset = 0
            for part in parts:  # T-CLIP: base, then adapter stages, one after another on the x axis
                pts = [(st, v) for p, st, v in r[key] if p == part]
                ax.plot([offset + st for st, _ in pts], [v for _, v in pts], style,
                        label=f"{label}{' ' + part if part else ''}", lw=1)
                offset += max(st for st, _ in pts)
        ax.set_title(f"{s}: max |diff| {r['max_abs_diff']:.2e} (rel {r['max_rel_diff']:.2e})", fontsize=8)
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.legend(fontsize=6)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m thermgen.bench.curves", description=__doc__.split("\n\n")[0])
    p.add_argument("--a", required=True, type=Path, help="first run folder")
    p.add_argument("--b", required=True, type=Path, help="second run folder")
    p.add_argument("--out", required=True, type=Path, help="output folder (curves.json, curves.png)")
    p.add_argument("--label-a", default="run A", help="legend label of the first run")
    p.add_argument("--label-b", default="run B", help="legend label of the second run")
    args = p.parse_args(argv)
    for run in (args.a, args.b):
        if not run.is_dir():
            print(f"error: run folder not found: {run}")
            return 2
    report = compare_runs(args.a, args.b)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "curves.json").write_text(json.dumps(report, indent=1))
    plot(report, args.out / "curves.png", args.label_a, args.label_b)
    for stage, r in report.items():
        if "missing" in r:
            print(f"{stage}: no loss log in {', '.join(r['missing'])}")
        elif not r["common"]:
            print(f"{stage}: no logged step in common ({r['steps_a']} / {r['steps_b']} steps): nothing to compare")
        else:
            print(f"{stage}: {r['common']} logged steps in common ({r['steps_a']} / {r['steps_b']}); max |loss diff| "
                  f"{r['max_abs_diff']:.3g}, relative {r['max_rel_diff']:.3g}")
    print(f"wrote {args.out}/curves.json, curves.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
