"""``python -m thermgen.train.worker``: one training stage of a recipe run, in a process of its own.

The recipe runner (``python -m thermgen.train``) prepares a stage in its own process (folders, the UNet's training
cache), launches this command for the training loop itself, once or under ``torch.distributed.run`` for
``run.num_processes`` data-parallel processes, and then packages the result (the pipeline folder, reports). Every
process of a launch runs the same loop; the main one writes ``RUN/.stages/<stage>.worker.json``, the loop's report.

Not meant to be run by hand: the config is the run's resolved ``RUN/.stages/config.json`` that the runner wrote.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

STAGES = ("vae", "unet", "ablation")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m thermgen.train.worker",
                                description="Run one training stage of a prepared recipe run (started by "
                                            "python -m thermgen.train; see thermgen.train.recipe).")
    p.add_argument("--run-dir", type=Path, required=True, help="the run folder")
    p.add_argument("--stage", required=True, choices=STAGES, help="the stage to train")
    p.add_argument("--hash", required=True, help="the stage hash the runner computed (stamped on checkpoints)")
    p.add_argument("--resume", default=None, help="'latest' or a checkpoint folder to continue from (default: none)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = p.parse_args(argv)

    import torch

    from thermgen.train.recipe import MARKER_DIR, Context, train_unet_stage, train_vae_stage

    cfg_path = args.run_dir / MARKER_DIR / "config.json"
    if not cfg_path.is_file():
        print(f"error: {cfg_path}: no such file (the runner writes it; start stages with python -m thermgen.train)",
              file=sys.stderr)
        return 2
    cfg = json.loads(cfg_path.read_text())
    rank = int(os.environ.get("RANK", "0"))
    handler = logging.FileHandler(args.run_dir / "recipe.log")
    handler.setFormatter(logging.Formatter(f"%(asctime)s %(levelname)s %(name)s [{args.stage} rank {rank}]: %(message)s"))
    logging.getLogger().addHandler(handler)
    logging.getLogger().setLevel(logging.INFO)
    if cfg["run"]["threads"] and "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(cfg["run"]["threads"])
    ctx = Context(cfg=cfg, run=args.run_dir, resume=bool(args.resume), progress=not args.no_progress,
                  current_hash=args.hash)
    if args.stage == "vae":
        report = train_vae_stage(ctx, args.resume)
    else:
        report = train_unet_stage(ctx, args.stage, args.resume)
    if rank == 0:
        out = args.run_dir / MARKER_DIR / f"{args.stage}.worker.json"
        tmp = out.with_suffix(".tmp")
        tmp.write_text(json.dumps(report, indent=2, default=str) + "\n")
        tmp.replace(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
