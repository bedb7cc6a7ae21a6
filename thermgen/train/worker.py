"""``python -m thermgen.train.worker --spec WORK/worker_spec.json``: one training stage in a process of its own.

The recipe runner (``python -m thermgen.train``) prepares a stage in its own process (folders, the UNet's training
cache), writes a spec (the config as the runner holds it, the run and work folders, the text-encoder mode, the
stage hash, what to resume) and launches this command for the training loop itself: once, or under
``torch.distributed.run`` for ``run.num_processes`` data-parallel processes. Every process runs the same loop; the
main one writes the loop's report to the spec's ``report`` path. The runner then packages the result.

Not meant to be run by hand: see :func:`thermgen.train.recipe.run_worker`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

logger = logging.getLogger("thermgen.train.worker")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m thermgen.train.worker",
                                description="Run one training stage of a prepared recipe run (started by "
                                            "python -m thermgen.train; see thermgen.train.recipe.run_worker).")
    p.add_argument("--spec", type=Path, required=True, help="the worker_spec.json the runner wrote")
    args = p.parse_args(argv)
    try:
        spec = json.loads(args.spec.read_text())
    except (OSError, ValueError) as e:
        print(f"error: --spec {args.spec}: {e}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    import torch

    from thermgen.train.recipe import Context, train_unet_stage, train_vae_stage

    cfg = spec["cfg"]
    rank = int(os.environ.get("RANK", "0"))
    if cfg["run"]["threads"] and "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(cfg["run"]["threads"])
    ctx = Context(cfg=cfg, run=Path(spec["run"]), resume=bool(spec["resume"]), progress=bool(spec["progress"]),
                  current_hash=spec["hash"])
    try:
        if spec["stage"] == "vae":
            report = train_vae_stage(ctx, spec["resume"])
        elif spec["stage"] == "unet":
            report = train_unet_stage(ctx, spec["mode"], Path(spec["work"]), spec["resume"])
        else:
            raise ValueError(f"{args.spec}: unknown stage {spec['stage']!r} (vae, unet)")
    except Exception:
        logger.exception("stage %s (rank %d) failed", spec["stage"], rank)  # into the runner's log of this stage
        return 1
    if rank == 0:
        out = Path(spec["report"])
        tmp = out.with_suffix(".tmp")
        tmp.write_text(json.dumps(report, indent=2, default=str) + "\n")
        tmp.replace(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
