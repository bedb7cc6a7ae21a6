"""Caption a thermal dataset with IR-Cap and write a validated manifest (contract 1).

    python -m thermgen.caption --source hit-uav --root ../shared/data/hit-uav --split test \\
        --out runs/hituav/manifest.jsonl

For every image: read the pixels (``thermgen.io``, "fixed" normalisation), measure them
(:mod:`thermgen.ircap.measure`), derive facts (:mod:`thermgen.ircap.facts`), write the two
captions (:mod:`thermgen.ircap.render`, or an optional model backend validated against the facts,
:mod:`thermgen.ircap.backends`), then write one manifest line. A caption report (JSON + Markdown +
token-length histogram PNG) is written beside the manifest unless ``--report`` says elsewhere.

Library entry point (the recipe runner, the demo): :func:`thermgen.ircap.captioner.caption_samples`.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from thermgen.data import SOURCES
from thermgen.data.sample import DataError
from thermgen.ircap.captioner import (  # noqa: F401  (re-exported: the command's library half)
    CAPTIONER_VERSION,
    caption_one,
    caption_samples,
    read_for_measurement,
)

logger = logging.getLogger("thermgen.caption")


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Show defaults, except for required flags and ``None`` defaults (their help says what happens)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.required or action.default is None or action.default is False or action.default == argparse.SUPPRESS:
            return action.help or ""
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m thermgen.caption",
        description="Caption thermal images with IR-Cap (measured heat facts -> two captions) into a validated "
                    "JSON Lines manifest, plus a caption report.",
        formatter_class=_HelpFormatter,
    )
    p.add_argument("--source", required=True, choices=SOURCES, help="dataset format of --root")
    p.add_argument("--root", required=True, type=Path, help="dataset folder")
    p.add_argument("--split", default=None, help="only this split (e.g. test); default: every split")
    p.add_argument("--out", required=True, type=Path, help="manifest to write (.jsonl)")
    p.add_argument("--backend", default="rules", choices=("rules", "transformers", "openai"),
                   help="caption writer: measured-fact rules, a local transformers model, or an OpenAI-compatible "
                        "HTTP endpoint (model output is validated; failures fall back to rules and are counted)")
    p.add_argument("--model", default=None,
                   help="transformers: local model folder; openai: model name (required for those backends)")
    p.add_argument("--base-url", default=None,
                   help="openai backend: base URL of the endpoint, e.g. http://localhost:8000/v1")
    p.add_argument("--api-key-env", default="OPENAI_API_KEY",
                   help="openai backend: environment variable holding the API key (may be unset for local servers)")
    p.add_argument("--seed", type=int, default=0, help="seed for the choice of phrasings")
    p.add_argument("--variants", type=int, default=0,
                   help="also store K other phrasings of each caption (same facts, phrasing seeds seed+1..seed+K) "
                        "under 'caption_variants'; tclip.train draws from them as text augmentation")
    p.add_argument("--terse-variants", type=int, default=0,
                   help="also store K terse global variants (the facts as fragments in random order, part of them, counts as "
                        "digits or words) under 'caption_variants', for retrieval by a user's own words")
    p.add_argument("--report", type=Path, default=None,
                   help="report JSON path (a .md and a token-length .png are written beside it); "
                        "default: <out stem>.report.json beside the manifest")
    p.add_argument("--skip-invalid", action="store_true",
                   help="skip bad dataset records and unreadable images (truncated, true colour, ...; counted with reasons "
                        "and files in the report) instead of stopping at the first one")
    p.add_argument("--limit", type=int, default=None, help="caption at most this many images (for quick looks); default: all")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar (shown by default)")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.variants < 0 or args.terse_variants < 0:
        parser.error(f"--variants and --terse-variants must be >= 0, got {args.variants}, {args.terse_variants}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    # A log file beside the manifest keeps the run's settings and outcome with its output.
    args.out.parent.mkdir(parents=True, exist_ok=True)
    log_file = logging.FileHandler(args.out.with_name(args.out.stem + ".log"), mode="w", encoding="utf-8")
    log_file.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s"))
    logger.addHandler(log_file)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    logger.info("thermgen.caption %s", " ".join(argv if argv is not None else sys.argv[1:]))
    from thermgen.data import load_samples

    try:
        samples, skipped = load_samples(args.source, args.root, split=args.split, skip_invalid=args.skip_invalid)
        if args.limit is not None:
            samples = samples[: args.limit]
        if not samples:
            raise DataError(f"{args.root}: no images found for source {args.source!r}"
                            + (f" split {args.split!r}" if args.split else ""))
        opts: dict[str, Any] = {}
        if args.backend != "rules":
            opts = {"model": args.model, "base_url": args.base_url, "api_key_env": args.api_key_env}
        report = caption_samples(samples, args.out, backend=args.backend, seed=args.seed,
                                 progress=not args.no_progress, report_path=args.report, backend_options=opts,
                                 skip_report=skipped.to_dict(), variants=args.variants, terse_variants=args.terse_variants,
                                 skip_invalid=args.skip_invalid)
    except (DataError, ValueError) as e:
        logger.error("%s", e)
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        logger.removeHandler(log_file)
        logger.setLevel(old_level)
        log_file.close()
    s = report["summary"]
    be = report["backend"]
    if args.backend != "rules" and s["records"] and be["fallbacks"] == s["records"]:
        reasons = "; ".join(f"{k} ({v})" for k, v in be["fallback_reasons"].items())
        print(f"error: every caption ({s['records']}) fell back to the rules, so the {args.backend} backend produced "
              f"nothing usable: {reasons}. The manifest {args.out} holds the rule captions.", file=sys.stderr)
        return 3
    gt = report.get("ground_truth")
    if gt and gt["agreement"] is not None:
        print(f"synthetic ground truth: {gt['agree']}/{gt['claims']} state claims agree ({gt['agreement']:.1%}); "
              f"people/vehicles with a state claim: {gt['state_claim_share']:.1%}")
    print(f"{s['records']} records -> {args.out} ({report['elapsed_s']:.1f} s); "
          f"distinct global captions {s['distinct_global_share']:.1%}, fine {s['distinct_fine_share']:.1%}; "
          f"max tokens {s['max_tokens_global']}/{s['max_tokens_fine']}; "
          f"skipped {(report.get('skipped') or {}).get('total', 0)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
