"""T-CLIP in the paper's regime: a base pretrained on physics-synthetic thermal scenes, adapted to a real camera
(HIT-UAV) by the two LoRA adapters alone, and tested on queries in a user's own words.

    python -m thermgen.bench.sim2real --hit-root ../shared/data/hit-uav --out runs/sim2real [--seeds 0 42 123] [--fractions 0.1 0.3 1.0]

Steps (each skipped when its output is complete, so a stopped run continues where it stopped):

1. **Synthetic corpus** (``OUT/synthetic``): ``--scenes`` physics-based scenes (:mod:`thermgen.data.synthetic`),
   captioned by IR-Cap with ``--variants`` phrasings each (and ``--base-terse-variants`` terse ones per training
   caption, :func:`thermgen.ircap.render.render_terse`, for a text tower that knows a user's words). The captions
   are measured on the 16-bit radiometric images; the images the base trains on are those frames after an 8-bit automatic gain (a 1-99 percentile
   stretch, ``OUT/synthetic/agc``), which is how a camera like HIT-UAV's delivers its frames: a base that learnt
   fixed-window radiometric grey levels would meet a different pixel distribution on the real camera.
2. **Synthetic base** (``OUT/synthetic-base``): the whole CLIP trained from scratch on the synthetic corpus only
   (``tclip.train``, config ``--base-config``), saved as an ordinary open_clip checkpoint folder
   (``open_clip_config.json`` + ``open_clip_model.safetensors``): ``open_clip.create_model("local-dir:OUT/synthetic-base")``
   and ``tclip.train --base local-dir:OUT/synthetic-base`` load it like any pretrained base.
3. **HIT-UAV captions** (``OUT/hit/{train,val,test}.jsonl``; or ``--manifests DIR`` made the same way).
   With ``--adapt-bn``, the synthetic base's batch-norm statistics are then re-estimated on all of HIT-UAV train's
   frames (:mod:`tclip.adabn`, AdaBN: no labels, no weights changed; ``OUT/synthetic-base-adabn``), and the zero-shot
   row and the adapters (every fraction: the frames are unlabelled, only the labels are subsampled) use that base;
   the zero-shot row of the plain base is reported beside it.
4. **Zero-shot**: the synthetic base with no HIT-UAV training at all, on HIT-UAV test.
5. **Adaptation**: for each ``--fractions`` share of the HIT-UAV training images (a random subset per seed) and
   each seed, the global and fine LoRA adapters on the frozen synthetic base (``--adapter-config``). The fusion
   alpha of T-CLIP dual is chosen on val (full-data runs), never on test. The default config adapts q/k/v only,
   as the paper does; ``--adapter-config sim2real-adapters-convs`` also puts LoRA on the image tower's
   convolutions (``lora.convs``: with a ResNet tower, q/k/v reaches only its attention pool).
6. **Reference**: today's bench, a base trained from scratch on HIT-UAV train then its adapters (the
   ``hituav-cpu`` config), per seed (``--no-reference`` skips it).
7. **Queries in a user's own words** (:mod:`thermgen.ircap.queries`): every row above is also evaluated with the
   HIT-UAV test images' facts in three held-out phrasings (keywords, request, question), each query standing for
   its image in both directions.

Writes ``OUT/results.json`` (``{"zero_shot": R, "fractions": {"1.0": R, ...}, "reference": R, "queries": ...}``, with
``--adapt-bn`` also ``"zero_shot_without_adabn"``;
each R a ``tclip.eval`` report with its ``variants`` over the seeds), ``OUT/results.md`` (tables),
``OUT/label_efficiency.png`` (R@1 against the share of HIT-UAV training images), ``OUT/bench.log`` and the wall
time of each step. Uses both cores; set ``OMP_NUM_THREADS`` on a shared machine and say so.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import re
import sys
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger("thermgen.bench.sim2real")

PROTOCOL = 1
CORPUS_STAMP = "corpus.json"
SPLITS = ("train", "val", "test")
VARIANT_LABELS = {
    "base": "base (no adapter)",
    "global": "global adapter",
    "fine": "fine adapter",
    "dual": "T-CLIP dual",
}


# ---------------------------------------------------------------------------------------------- helpers
class _Steps:
    """Wall time per step, kept in OUT/timing.json across reruns (a skipped step keeps its first time)."""

    def __init__(self, out: Path):
        self.path = out / "timing.json"
        self.times: dict[str, float] = json.loads(self.path.read_text()) if self.path.is_file() else {}

    def run(self, name: str, done: bool, fn, *args, **kwargs):
        if done:
            logger.info("[%s] already done, skipped", name)
            return None
        logger.info("[%s] start", name)
        t0 = time.perf_counter()
        result = fn(*args, **kwargs)
        self.times[name] = round(time.perf_counter() - t0, 1)
        self.path.write_text(json.dumps(self.times, indent=2) + "\n")
        logger.info("[%s] done in %.0f s", name, self.times[name])
        return result


def _caption_shard(args: tuple) -> str:
    """Caption one shard of a synthetic dataset (a worker process)."""
    root, split, index, shards, out, variants, terse_variants = args
    from thermgen.data import load_samples
    from thermgen.ircap.captioner import caption_samples

    samples, _ = load_samples("synthetic", root, split=split)
    # terse variants are text augmentation for training only; the synthetic val split keeps IR-Cap's captions
    caption_samples(samples[index::shards], out, variants=variants, progress=False,
                    terse_variants=terse_variants if split == "train" else 0)
    return str(out)


def _corpus_stamp(n: int, size: int, seed: int, variants: int, terse_variants: int = 0, scene_options: dict | None = None) -> dict:
    stamp: dict[str, Any] = {"n": n, "size": size, "seed": seed, "variants": variants}
    if terse_variants:  # left out at 0, so corpora made before the option stay complete
        stamp["terse_variants"] = terse_variants
    if scene_options:  # likewise left out when empty
        from thermgen.data.synthetic.dataset import scene_options_json

        stamp["scene_options"] = scene_options_json(scene_options)
    return stamp


def corpus_done(out: Path, n: int, size: int, seed: int, variants: int, terse_variants: int = 0,
                scene_options: dict | None = None) -> bool:
    stamp = out / "synthetic" / CORPUS_STAMP
    return stamp.is_file() and json.loads(stamp.read_text()) == _corpus_stamp(n, size, seed, variants, terse_variants, scene_options)


def scene_options_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The corpus's dataset-wide scene options (:func:`thermgen.data.synthetic.generate`) from the command line."""
    options: dict[str, Any] = {}
    if args.altitude is not None:
        options["altitude_range_m"] = tuple(args.altitude)
    if args.view_angle is not None:
        options["view_angle_range_deg"] = tuple(args.view_angle)
    if args.object_scale != 1.0:
        options["object_scale"] = args.object_scale
    return options


def agc8(counts: np.ndarray) -> np.ndarray:
    """8-bit automatic gain of a 16-bit frame: its 1st..99th percentile stretched over 0..255.

    `thermgen.io.percentile_stretch` in float64 throughout: that function returns float32, whose rounding moves
    0.03 % of the pixels by one level, and the published synthetic base was trained on these exact frames.
    """
    lo, hi = np.percentile(counts.astype(np.float64), (1.0, 99.0))
    x = (counts.astype(np.float64) - lo) / max(hi - lo, 1e-6)
    return np.round(np.clip(x, 0.0, 1.0) * 255.0).astype(np.uint8)


def make_synthetic_corpus(out: Path, n: int, size: int, seed: int, variants: int, workers: int, progress: bool,
                          terse_variants: int = 0, scene_options: dict | None = None) -> Path:
    """Step 1: generate, caption (sharded over `workers` processes) and write the AGC manifest. Returns it.

    `terse_variants` > 0 also stores that many terse global variants per training caption
    (:func:`thermgen.ircap.render.render_terse`), so the base's text tower meets facts in a user's words.
    `scene_options` shape every scene (a camera's flight envelope, object density; see
    :func:`thermgen.data.synthetic.generate`).

    `OUT/synthetic/corpus.json` is written last: without it (an interrupted or other corpus) the captions
    and AGC frames are made again, and the scenes too unless their dataset card is complete and matches.
    """
    import shutil

    from thermgen.data.synthetic import generate
    from thermgen.data.synthetic.dataset import scene_options_json
    from thermgen.io import read_raw, write_png8
    from thermgen.ircap.manifest import image_ref, read_manifest, resolve_image, write_manifest

    root = out / "synthetic"
    card = root / "synthetic.json"
    want = {"n": n, "size": size, "seed": seed, "scene_options": scene_options_json(scene_options)}
    have = json.loads(card.read_text()) if card.is_file() else {}
    have.setdefault("scene_options", {})  # cards written before the option
    for stale in (root / CORPUS_STAMP, root / "manifest.jsonl", root / "manifest.agc.jsonl"):
        stale.unlink(missing_ok=True)
    for stale in (root / "shards", root / "agc"):
        shutil.rmtree(stale, ignore_errors=True)
    if not (have.get("complete") and all(have.get(k) == v for k, v in want.items())):
        shutil.rmtree(root, ignore_errors=True)  # an interrupted generation leaves images without a card
        generate(root, n, size=size, seed=seed, splits=(("train", 0.95), ("val", 0.05)), progress=progress, workers=workers,
                 scene_options=scene_options)
    manifest = root / "manifest.jsonl"
    jobs = []
    for split in ("train", "val"):
        k = max(1, workers) if split == "train" else 1
        jobs += [(root, split, i, k, root / "shards" / f"{split}-{i}.jsonl", variants, terse_variants) for i in range(k)]
    with ProcessPoolExecutor(max_workers=max(1, workers)) as pool:
        shard_files = list(pool.map(_caption_shard, jobs))
    write_manifest(manifest, (dict(rec, image=image_ref(resolve_image(rec, f), manifest))
                              for f in shard_files for rec in read_manifest(f)))
    agc_manifest = root / "manifest.agc.jsonl"

    def records():
        for rec in read_manifest(manifest):
            dst = root / "agc" / rec["split"] / (Path(rec["image"]).stem + ".png")
            write_png8(dst, agc8(read_raw(resolve_image(rec, manifest))))
            # captions and measurements stay those of the 16-bit radiometric frame
            yield dict(rec, image=dst.relative_to(root).as_posix())

    write_manifest(agc_manifest, records())
    (root / CORPUS_STAMP).write_text(json.dumps(_corpus_stamp(n, size, seed, variants, terse_variants, scene_options)) + "\n")
    return agc_manifest


def caption_hituav(hit_root: Path, out: Path, variants: int, terse_variants: int, progress: bool) -> None:
    from thermgen.data import load_samples
    from thermgen.ircap.captioner import caption_samples

    for split in SPLITS:
        path = out / f"{split}.jsonl"
        if path.is_file():
            continue
        samples, skipped = load_samples("hit-uav", hit_root, split=split)
        # terse variants are text augmentation for training only; val and test keep IR-Cap's captions
        caption_samples(samples, path, variants=variants, progress=progress, skip_report=skipped.to_dict(),
                        terse_variants=terse_variants if split == "train" else 0)


def subset_size(n: int, fraction: float) -> int:
    return max(1, int(round(fraction * n)))


def subset_manifest(train: Path, fraction: float, seed: int, out: Path) -> Path:
    """A random `fraction` of the training records, drawn from `seed`: the first images of one permutation per
    seed, so a seed's smaller subsets lie inside its larger ones (a label-efficiency curve adds images)."""
    from thermgen.ircap.manifest import read_manifest, resolve_image, write_manifest

    recs = [r for r in read_manifest(train) if r["split"] == "train"]
    order = list(range(len(recs)))
    random.Random(f"sim2real:{seed}").shuffle(order)
    chosen = sorted(order[: subset_size(len(recs), fraction)])
    out.parent.mkdir(parents=True, exist_ok=True)
    write_manifest(out, (dict(recs[i], image=str(resolve_image(recs[i], train))) for i in chosen))
    return out


_WORDS = re.compile(r"[a-z]+")


def vocabulary_overlap(synthetic: list[str], real: list[str]) -> dict[str, Any]:
    """How much of the real captions' wording the synthetic captions use (texts from :func:`thermgen.ircap.queries.caption_texts`)."""

    def counts(texts: list[str]) -> Counter:
        c: Counter = Counter()
        for t in texts:
            c.update(_WORDS.findall(t.lower()))
        return c

    syn, hit = counts(synthetic), counts(real)
    shared = set(syn) & set(hit)
    missing = sorted((w for w in hit if w not in syn), key=lambda w: -hit[w])
    return {
        "synthetic_words": len(syn),
        "real_words": len(hit),
        "shared_words": len(shared),
        "real_vocabulary_covered": len(shared) / max(1, len(hit)),
        "real_tokens_covered": sum(hit[w] for w in shared) / max(1, sum(hit.values())),
        "synthetic_vocabulary_in_real": len(shared) / max(1, len(syn)),
        "real_words_missing_most_frequent": [[w, hit[w]] for w in missing[:15]],
        "synthetic_only_most_frequent": [[w, syn[w]] for w in sorted((w for w in syn if w not in hit), key=lambda w: -syn[w])[:15]],
    }


# ---------------------------------------------------------------------------------------------- training
def _train(manifest: Path, out: Path, *, base: str, config: str, seed: int, progress: bool, overrides: dict | None = None) -> Path:
    from tclip import train as tclip_train

    if tclip_train.run_finished(out):
        return out
    cfg = tclip_train.load_train_config(config, overrides)
    tclip_train.train(manifest, out, split="train", base=base, config=cfg, seed=seed,
                      resume=(out / "train_state.json").is_file(), progress=progress)
    return out


def train_synthetic_base(manifest: Path, out: Path, arch: str, config: str, progress: bool) -> Path:
    """Step 2: the whole CLIP from scratch on the synthetic corpus, exported as an open_clip folder."""
    from tclip.model import load

    folder = out / "synthetic-base"
    if (folder / "open_clip_config.json").is_file():
        return folder
    run = _train(manifest, out / "synthetic-base-train", base=arch, config=config, seed=0, progress=progress,
                 overrides={"adapter_stage": {"steps": 0}})
    model = load(run)
    cfg = json.loads((run / "train_state.json").read_text())["config"]
    model.export_base(folder, extra={"pretrained_on": "thermgen synthetic scenes (IR-Cap captions, 8-bit AGC frames)",
                                     "corpus_manifest": str(Path(manifest).resolve()), "base_stage": cfg["base_stage"], "arch": arch})
    return folder


# ---------------------------------------------------------------------------------------------- evaluation
def _eval(models: list[Path], manifest: Path, split: str, alpha: float | None, progress: bool, command: str, path: Path | None = None) -> dict:
    from tclip import eval as tclip_eval

    if path is not None and path.is_file():
        rep = json.loads(path.read_text())
        if rep.get("models") == [str(m) for m in models] and rep.get("manifest") == str(manifest) and rep.get("command") == command:
            return rep
    rep = tclip_eval.evaluate(models, manifest, split=split, alpha=alpha, alpha_sweep=alpha is None and split == "val", progress=progress)
    rep["command"] = command
    if path is not None:
        tclip_eval.write_report(rep, path)
    return rep


def _r1(rep: dict, variant: str = "dual") -> tuple[float, float]:
    v = rep["variants"][variant]["mean"]
    return v["i2t"]["1"], v["t2i"]["1"]


def _cell(rep: dict, variant: str, d: str, k: int) -> str:
    v = rep["variants"][variant]
    return f"{v['mean'][d][str(k)]:.3f} ± {v['std'][d][str(k)]:.3f}"


def _table(rows: list[tuple[str, dict, str]], ks=(1, 5, 10)) -> list[str]:
    lines = ["| row | " + " | ".join(f"I2T R@{k}" for k in ks) + " | " + " | ".join(f"T2I R@{k}" for k in ks) + " |",
             "| --- |" + " --- |" * (2 * len(ks))]
    for name, rep, variant in rows:
        if variant not in rep["variants"]:
            continue
        lines.append(f"| {name} | " + " | ".join(_cell(rep, variant, d, k) for d in ("i2t", "t2i") for k in ks) + " |")
    return lines


def plot_examples(synthetic: Path, real: Path, path: Path, size: int = 128, n: int = 8) -> None:
    """What the two towers see: n synthetic training frames (8-bit AGC) above n HIT-UAV test frames, at the
    base's input size, each with the first words of its global caption."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from tclip.data import load_thermal_image, resize_square
    from thermgen.ircap.manifest import iter_manifest, resolve_image

    rows = []
    for manifest, split in ((synthetic, "train"), (real, "test")):
        recs = []
        for _, r in iter_manifest(manifest):
            if r["split"] == split:
                recs.append(r)
            if len(recs) >= 50 * n:
                break
        rows.append([recs[i] for i in np.linspace(0, len(recs) - 1, n).astype(int)] if recs else [])
    fig, axes = plt.subplots(2, n, figsize=(2.2 * n, 5.4))
    for r, (recs, manifest, name) in enumerate(zip(rows, (synthetic, real), ("synthetic (AGC)", "HIT-UAV test"))):
        for c in range(n):
            ax = axes[r, c]
            ax.axis("off")
            if c >= len(recs):
                continue
            img = torch.from_numpy(load_thermal_image(resolve_image(recs[c], manifest)))[None, None]
            ax.imshow(resize_square(img, size)[0, 0].numpy(), cmap="gray", vmin=0, vmax=1)
            words = recs[c]["global_caption"].removeprefix("An infrared thermal image of ").split()
            ax.set_title("\n".join(" ".join(words[i:i + 4]) for i in range(0, min(len(words), 12), 4)), fontsize=6)
        axes[r, 0].text(-0.1, 0.5, name, transform=axes[r, 0].transAxes, rotation=90, va="center", ha="right", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_label_efficiency(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fracs = sorted(result["fractions"], key=float)
    xs = [float(f) * 100 for f in fracs]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, d, title in zip(axes, ("i2t", "t2i"), ("image → text", "text → image")):
        for variant, style in (("dual", "-o"), ("global", "--s"), ("fine", ":^")):
            if all(variant in result["fractions"][f]["variants"] for f in fracs):
                m = [result["fractions"][f]["variants"][variant]["mean"][d]["1"] for f in fracs]
                s = [result["fractions"][f]["variants"][variant]["std"][d]["1"] for f in fracs]
                ax.errorbar(xs, m, yerr=s, fmt=style, capsize=3, label=f"synthetic base + {VARIANT_LABELS[variant]}")
        z = result["zero_shot"]["variants"]["base"]["mean"][d]["1"]
        ax.axhline(z, color="grey", ls=":", label="synthetic base, zero-shot")
        if result.get("reference"):
            r = result["reference"]["variants"]["dual"]["mean"][d]["1"]
            ax.axhline(r, color="black", ls="--", label="HIT-UAV from-scratch base + T-CLIP dual (100 %)")
        ax.axhline(1.0 / result["zero_shot"]["n_images"], color="red", lw=0.8, label="chance")
        ax.set_xscale("log")
        ax.set_xticks(xs)
        ax.set_xticklabels([f"{x:g} %" for x in xs])
        ax.set_xlabel("share of HIT-UAV training images (LoRA adapters only)")
        ax.set_title(f"HIT-UAV test, {title}")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("R@1 (mean ± std over seeds)")
    axes[1].legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------- driver
def _config_digest(name: str) -> str:
    """sha256 of a tclip training config as loaded (defaults merged), so an edited config file is a new setting;
    the keys that change only speed and memory, and keys added since at their old behaviour, are left out
    (``tclip.train.result_settings``)."""
    import hashlib

    from tclip.train import load_train_config, result_settings

    cfg = result_settings(load_train_config(name))
    return hashlib.sha256(json.dumps(cfg, sort_keys=True).encode()).hexdigest()[:16]


def settings_stamp(args: argparse.Namespace) -> dict:
    """What the finished steps in OUT depend on; another stamp in the same OUT is refused."""
    stamp: dict[str, Any] = {"protocol": PROTOCOL, "arch": args.arch, "variants": args.variants}
    if args.base is not None:
        stamp["base"] = str(Path(args.base).resolve())
    else:
        stamp.update(scenes=args.scenes, size=args.size, base_config=args.base_config, base_config_sha=_config_digest(args.base_config))
        if args.base_terse_variants:
            stamp["base_terse_variants"] = args.base_terse_variants
        if scene_options_from_args(args):
            from thermgen.data.synthetic.dataset import scene_options_json

            stamp["scene_options"] = scene_options_json(scene_options_from_args(args))
    stamp.update(adapter_config=args.adapter_config, adapter_config_sha=_config_digest(args.adapter_config))
    if not args.no_reference:
        stamp.update(reference_config=args.reference_config, reference_config_sha=_config_digest(args.reference_config))
    stamp["hit"] = str(Path(args.manifests if args.manifests is not None else args.hit_root).resolve())
    if args.terse_variants:
        stamp["terse_variants"] = args.terse_variants
    if args.adapt_bn:
        stamp["adapt_bn"] = True
    return stamp


def run(args: argparse.Namespace) -> dict:
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(out / "bench.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)
    try:
        return _run(args, out)
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()


def _run(args: argparse.Namespace, out: Path) -> dict:
    if args.manifests is None and args.hit_root is None:
        raise ValueError("give --hit-root (HIT-UAV) or --manifests (its IR-Cap manifests)")
    if args.terse_variants < 0 or args.base_terse_variants < 0:
        raise ValueError(f"--terse-variants and --base-terse-variants must be >= 0, got {args.terse_variants}, {args.base_terse_variants}")
    if args.manifests is not None and args.terse_variants:
        raise ValueError("--terse-variants applies when this command captions HIT-UAV (--hit-root), not to --manifests")
    if args.base is not None and args.base_terse_variants:
        raise ValueError("--base-terse-variants applies when this command makes the synthetic corpus, not with --base")
    scene_options = scene_options_from_args(args)
    if args.base is not None and scene_options:
        raise ValueError("--altitude, --view-angle and --object-scale apply when this command makes the synthetic corpus, not with --base")
    from thermgen.data.synthetic.dataset import check_scene_options

    check_scene_options(scene_options)  # a bad envelope fails here, before anything is written
    if args.adapt_bn:  # a tower without batch norms (a ViT) is refused before hours of corpus and base
        from tclip.adabn import has_batchnorm
        from tclip.model import get_arch_config, read_open_clip_folder

        arch_cfg = read_open_clip_folder(args.base)["model_cfg"] if args.base is not None else get_arch_config(args.arch)
        if not has_batchnorm(arch_cfg):
            what = f"the base {args.base}" if args.base is not None else f"--arch {args.arch}"
            raise ValueError(f"--adapt-bn re-estimates batch-norm statistics, and the image tower of {what} has none "
                             "(a ViT); use a ResNet tower (e.g. --arch tclip-cpu-rn) or drop --adapt-bn")
    from tclip.eval import choose_alpha
    from tclip.train import run_finished

    stamp = settings_stamp(args)
    marker = out / "bench.json"
    if marker.is_file() and json.loads(marker.read_text()) != stamp:
        raise ValueError(f"{out} holds a sim2real run with other settings ({marker.read_text().strip()}); use another --out")
    marker.write_text(json.dumps(stamp) + "\n")
    steps = _Steps(out)
    progress = not args.no_progress
    t_start = time.perf_counter()

    if args.base is not None:  # a synthetic base made before (by this command): pretrained once, reused
        from tclip.model import read_open_clip_folder

        base_dir = Path(args.base).resolve()
        syn_manifest = Path(read_open_clip_folder(base_dir).get("thermgen", {}).get("corpus_manifest", ""))
        if not syn_manifest.is_file():
            raise FileNotFoundError(f"{base_dir}: its corpus manifest {str(syn_manifest)!r} (open_clip_config.json thermgen.corpus_manifest) is missing")
    else:
        syn_manifest = (out / "synthetic" / "manifest.agc.jsonl").resolve()
        steps.run("synthetic corpus", corpus_done(out, args.scenes, args.size, 0, args.variants, args.base_terse_variants, scene_options),
                  make_synthetic_corpus, out, args.scenes, args.size, 0, args.variants, args.workers, progress,
                  terse_variants=args.base_terse_variants, scene_options=scene_options)
        base_dir = (out / "synthetic-base").resolve()
        steps.run("synthetic base", (base_dir / "open_clip_config.json").is_file(), train_synthetic_base, syn_manifest, out,
                  args.arch, args.base_config, progress)
    base_spec = f"local-dir:{base_dir}"

    if args.manifests is not None:
        hit = args.manifests
    else:
        hit = out / "hit"
        steps.run("HIT-UAV captions", all((hit / f"{s}.jsonl").is_file() for s in SPLITS), caption_hituav,
                  args.hit_root, hit, args.variants, args.terse_variants, progress)
    train_m, val_m, test_m = (hit / f"{s}.jsonl" for s in SPLITS)
    for m in (train_m, val_m, test_m):
        if not m.is_file():
            raise FileNotFoundError(f"{m} missing (caption HIT-UAV's {m.stem} split with --variants {args.variants})")
    reports = out / "reports"
    if args.adapt_bn:  # AdaBN: the base's batch-norm statistics re-estimated on HIT-UAV train's frames (no labels)
        from tclip.adabn import adapt_base, image_paths

        bn_dir = (out / "synthetic-base-adabn").resolve()
        steps.run("batch-norm statistics (AdaBN)", (bn_dir / "open_clip_config.json").is_file(), adapt_base, base_spec,
                  image_paths(train_m, "train"), bn_dir, source=f"{train_m.resolve()} (split train)", progress=progress,
                  workers=args.workers)
    plain_spec, base_spec = base_spec, (f"local-dir:{bn_dir}" if args.adapt_bn else base_spec)

    # zero-shot: the synthetic base with fresh (identity) adapters, never trained on HIT-UAV (with --adapt-bn: the base
    # with HIT-UAV's batch-norm statistics, and the plain base beside it)
    from tclip.model import TCLIP

    zs_dir = out / "zero-shot"
    if not (zs_dir / "tclip_config.json").is_file():
        TCLIP.from_base(base_spec).save(zs_dir)
    zero_shot = _eval([zs_dir], test_m, "test", 0.8, progress, "(sim2real) synthetic base zero-shot, HIT-UAV test", reports / "zero_shot.json")
    plain_dir = zs_dir
    zero_shot_plain = None
    if args.adapt_bn:
        plain_dir = out / "zero-shot-without-adabn"
        if not (plain_dir / "tclip_config.json").is_file():
            TCLIP.from_base(plain_spec).save(plain_dir)
        zero_shot_plain = _eval([plain_dir], test_m, "test", 0.8, progress, "(sim2real) synthetic base zero-shot without AdaBN, HIT-UAV test",
                                reports / "zero_shot_without_adabn.json")
    syn_val = _eval([plain_dir], syn_manifest, "val", 0.8, progress, "(sim2real) synthetic base on synthetic val",
                    reports / "synthetic_val.json")

    # adapters on the frozen synthetic base, per fraction and seed; every subset must hold one batch
    from tclip.data import read_manifest as read_pairs
    from tclip.train import load_train_config

    n_train = len(read_pairs(train_m, split="train"))
    batch = load_train_config(args.adapter_config)["adapter_stage"]["batch_size"]
    small = [f for f in args.fractions if subset_size(n_train, f) < batch]
    if small:
        raise ValueError(f"--fractions {small}: fewer than one adapter batch ({batch}) of the {n_train} training images")
    runs: dict[str, list[Path]] = {}
    for f in args.fractions:
        key = f"{f:g}" if f != 1.0 else "1.0"
        runs[key] = []
        for s in args.seeds:
            d = out / "adapt" / f"f{key}" / f"seed{s}"
            m = train_m if f >= 1.0 else out / "subsets" / f"train-f{key}-seed{s}.jsonl"
            if f < 1.0 and not m.is_file():
                subset_manifest(train_m, f, s, m)
            steps.run(f"adapters f{key} seed{s}", run_finished(d), _train, m, d, base=base_spec, config=args.adapter_config,
                      seed=s, progress=progress)
            runs[key].append(d)
    full = runs.get("1.0") or runs[max(runs, key=float)]
    val_rep = _eval(full, val_m, "val", None, progress, "(sim2real) adapters, val, --alpha-sweep", reports / "val.json")
    alpha = choose_alpha(val_rep)
    fractions = {}
    for key, dirs in runs.items():
        fractions[key] = _eval(dirs, test_m, "test", alpha, progress, f"(sim2real) adapters on {key} of train, test, alpha {alpha}",
                               reports / f"test_f{key}.json")

    reference = None
    ref_alpha = None
    if not args.no_reference:
        ref_dirs = []
        for s in args.reference_seeds or args.seeds:
            d = out / "reference" / f"seed{s}"
            steps.run(f"reference seed{s}", run_finished(d), _train, train_m, d, base=args.arch, config=args.reference_config,
                      seed=s, progress=progress)
            ref_dirs.append(d)
        ref_val = _eval(ref_dirs, val_m, "val", None, progress, "(sim2real) reference, val, --alpha-sweep", reports / "reference_val.json")
        ref_alpha = choose_alpha(ref_val)
        reference = _eval(ref_dirs, test_m, "test", ref_alpha, progress, f"(sim2real) reference, test, alpha {ref_alpha}",
                          reports / "reference_test.json")

    # queries in a user's own words
    from thermgen.ircap.manifest import read_manifest
    from thermgen.ircap.queries import caption_texts, fact_ceiling, heldout_overlap, write_query_manifests

    qpaths = write_query_manifests(test_m, "test", out / "queries")
    train_texts, syn_texts = caption_texts(train_m), caption_texts(syn_manifest)
    heldout = {}
    for style, p in qpaths.items():
        qs = [r["global_caption"] for r in read_manifest(p)]
        heldout[style] = {"hit-uav train": heldout_overlap(qs, train_texts), "synthetic corpus": heldout_overlap(qs, syn_texts)}
    queries: dict[str, dict[str, dict]] = {}
    query_rows = [("zero_shot", [zs_dir], alpha)] + [(f"f{k}", d, alpha) for k, d in runs.items()]
    if reference is not None:
        query_rows.append(("reference", ref_dirs, ref_alpha))
    for name, dirs, a in query_rows:
        queries[name] = {style: _eval(dirs, p, "test", a, progress, f"(sim2real) {name}, queries {style}, alpha {a}",
                                      reports / f"queries_{name}_{style}.json") for style, p in qpaths.items()}

    result = {
        "zero_shot": zero_shot,
        "zero_shot_without_adabn": zero_shot_plain,
        "fractions": fractions,
        "reference": reference,
        "queries": queries,
        "alpha": alpha,
        "reference_alpha": ref_alpha,
        "val_sweep": val_rep["alpha_sweep"]["mean_R@1"],
        "seeds": args.seeds,
        "reference_seeds": (args.reference_seeds or args.seeds) if reference is not None else None,
        "synthetic_val": syn_val,
        "vocabulary": vocabulary_overlap(syn_texts, train_texts),
        "query_fact_ceiling": fact_ceiling([r for r in read_manifest(test_m) if r["split"] == "test"]),
        "heldout": heldout,
        "timing_s": steps.times,
        "settings": stamp,
    }
    result["summary"] = summarise(result)
    (out / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    plot_label_efficiency(result, out / "label_efficiency.png")
    plot_examples(syn_manifest, test_m, out / "examples.png")
    md = markdown(result)
    (out / "results.md").write_text(md)
    print(md)
    logger.info("sim2real finished in %.0f s (this invocation)", time.perf_counter() - t_start)
    return result


def summarise(result: dict) -> dict:
    """The issue's goals, measured: dual R@1 both directions, dual vs the best single adapter, zero-shot vs chance,
    held-out query R@1 vs IR-Cap caption R@1."""
    full = result["fractions"].get("1.0") or result["fractions"][max(result["fractions"], key=float)]
    v = full["variants"]
    mean = lambda rep, var: (rep["variants"][var]["mean"]["i2t"]["1"] + rep["variants"][var]["mean"]["t2i"]["1"]) / 2  # noqa: E731
    singles = {n: mean(full, n) for n in ("global", "fine") if n in v}
    best = max(singles, key=singles.get) if singles else None
    dual_i2t, dual_t2i = _r1(full, "dual") if "dual" in v else (None, None)
    q = {}
    for row, styles in result["queries"].items():
        src = result["zero_shot"] if row == "zero_shot" else result["reference"] if row == "reference" else result["fractions"][row[1:]]
        var = "base" if row == "zero_shot" else "dual"
        caption_r1 = _r1(src, var)
        q_r1 = [np.mean([_r1(rep, var)[i] for rep in styles.values()]) for i in (0, 1)]
        q[row] = {"caption_r1": list(caption_r1), "query_r1": [float(x) for x in q_r1],
                  "ratio": [float(q_r1[i] / caption_r1[i]) if caption_r1[i] > 0 else None for i in (0, 1)]}
    return {
        "dual_r1_i2t": dual_i2t,
        "dual_r1_t2i": dual_t2i,
        "dual_mean_r1": mean(full, "dual") if "dual" in v else None,
        "best_single": best,
        "best_single_mean_r1": singles.get(best) if best else None,
        "dual_over_best_single": (mean(full, "dual") / singles[best]) if best and singles[best] > 0 else None,
        "zero_shot_r1": list(_r1(result["zero_shot"], "base")),
        "chance_r1": 1.0 / result["zero_shot"]["n_images"],
        "queries": q,
    }


def _f(x: float | None) -> str:
    return "–" if x is None else f"{x:.3f}"


def markdown(result: dict) -> str:
    zs = result["zero_shot"]
    n = zs["n_images"]
    s = result["summary"]
    lines = [
        f"# T-CLIP sim2real: synthetic-pretrained base, LoRA adapters on HIT-UAV (test, {n} images, chance R@1 = 1/{n})",
        "",
        f"Seeds {result['seeds']} (mean ± std; the synthetic base is pretrained once and shared); fusion alpha "
        f"{result['alpha']} chosen on val. Synthetic base on its own val split (in-domain): I2T R@1 "
        f"{_cell(result['synthetic_val'], 'base', 'i2t', 1)}, T2I R@1 {_cell(result['synthetic_val'], 'base', 't2i', 1)}.",
        "",
    ]
    rows = [("synthetic base, zero-shot", zs, "base")]
    if result.get("zero_shot_without_adabn"):
        lines += ["The synthetic base's batch-norm statistics were re-estimated on all of HIT-UAV train's frames (AdaBN, "
                  "`--adapt-bn`; no labels, no weights changed, for every fraction) before the zero-shot row and the adapters "
                  "(the synthetic val figure above is the base without it).", ""]
        rows = [("synthetic base, zero-shot, without AdaBN", result["zero_shot_without_adabn"], "base"),
                ("synthetic base + AdaBN (HIT-UAV train frames, no labels), zero-shot", zs, "base")]
    for key in sorted(result["fractions"], key=float):
        rep = result["fractions"][key]
        pct = f"{float(key) * 100:g} %"
        rows += [(f"synthetic base + {VARIANT_LABELS[v]} ({pct} of train)", rep, v) for v in ("global", "fine", "dual")]
    if result.get("reference"):
        rows += [(f"reference: HIT-UAV from-scratch base + {VARIANT_LABELS[v]} (seeds {result['reference_seeds']})", result["reference"], v)
                 for v in ("base", "global", "fine", "dual")]
    lines += _table(rows)
    lines += [
        "",
        f"Goals: dual R@1 {_f(s['dual_r1_i2t'])} (I2T) / {_f(s['dual_r1_t2i'])} (T2I) against 0.32; dual / best single adapter "
        f"({s['best_single']}) = {_f(s['dual_over_best_single'])} against 1.10; zero-shot R@1 {s['zero_shot_r1'][0]:.3f} / "
        f"{s['zero_shot_r1'][1]:.3f} against chance {s['chance_r1']:.4f}.",
        "",
        "## Queries in a user's own words (held-out phrasings of each test image's facts)",
        "",
        f"Fact ceiling (best possible T2I R@1 from the stated facts alone): {result['query_fact_ceiling']['r1']:.3f}. "
        "Word 4-grams of the queries found in HIT-UAV training captions: "
        + ", ".join(f"{st} {h['hit-uav train']['word_4gram_overlap']:.1%}" for st, h in result["heldout"].items())
        + "; exact matches: " + ", ".join(f"{st} {h['hit-uav train']['exact_matches']}" for st, h in result["heldout"].items()) + ".",
        "",
        "| row | style | I2T R@1 | I2T R@5 | T2I R@1 | T2I R@5 |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for row, styles in result["queries"].items():
        var = "base" if row == "zero_shot" else "dual"
        for style, rep in styles.items():
            lines.append(f"| {row} | {style} | {_cell(rep, var, 'i2t', 1)} | {_cell(rep, var, 'i2t', 5)} | "
                         f"{_cell(rep, var, 't2i', 1)} | {_cell(rep, var, 't2i', 5)} |")
    lines += ["", "| row | IR-Cap caption R@1 (I2T / T2I) | held-out query R@1, mean of styles | ratio (goal ≥ 0.5) |", "| --- | --- | --- | --- |"]
    for row, q in s["queries"].items():
        ratio = " / ".join("–" if r is None else f"{r:.2f}" for r in q["ratio"])
        lines.append(f"| {row} | {q['caption_r1'][0]:.3f} / {q['caption_r1'][1]:.3f} | {q['query_r1'][0]:.3f} / {q['query_r1'][1]:.3f} | {ratio} |")
    voc = result["vocabulary"]
    lines += [
        "",
        "## Caption vocabulary, synthetic corpus vs HIT-UAV train (captions and variants)",
        "",
        f"{voc['shared_words']} of {voc['real_words']} HIT-UAV words ({voc['real_vocabulary_covered']:.1%}) occur in the synthetic "
        f"captions, covering {voc['real_tokens_covered']:.1%} of HIT-UAV's word occurrences; "
        f"{voc['synthetic_vocabulary_in_real']:.1%} of the {voc['synthetic_words']} synthetic words occur in HIT-UAV's. "
        "Most frequent HIT-UAV words the synthetic captions never use: "
        + (", ".join(f"{w} ({c})" for w, c in voc["real_words_missing_most_frequent"][:10]) or "none") + ".",
        "",
        "Wall time per step (s): " + ", ".join(f"{k} {v:.0f}" for k, v in result["timing_s"].items()) + ".",
    ]
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m thermgen.bench.sim2real",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--hit-root", type=Path, default=None, help="HIT-UAV root (captioned into OUT/hit)")
    p.add_argument("--manifests", type=Path, default=None, help="folder with HIT-UAV's train/val/test.jsonl IR-Cap manifests (instead of --hit-root)")
    p.add_argument("--out", type=Path, required=True, help="output folder (corpus, base, runs, reports, results.md)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 42, 123], help="adapter seeds (also the subset draws)")
    p.add_argument("--fractions", type=float, nargs="+", default=[0.1, 0.3, 1.0], help="shares of HIT-UAV train for the adapters")
    p.add_argument("--scenes", type=int, default=20000, help="synthetic scenes (95 %% train, 5 %% val)")
    p.add_argument("--size", type=int, default=128, help="synthetic image side (px)")
    p.add_argument("--variants", type=int, default=8, help="IR-Cap phrasings stored per caption (text augmentation)")
    p.add_argument("--arch", default="tclip-cpu-rn", help="CLIP architecture of the synthetic base and the reference")
    p.add_argument("--base-config", default="synthetic-base", help="tclip training config of the synthetic base")
    p.add_argument("--adapter-config", default="sim2real-adapters", help="tclip training config of the adapters on the synthetic base")
    p.add_argument("--reference-config", default="hituav-cpu", help="tclip training config of the from-scratch reference")
    p.add_argument("--no-reference", action="store_true", help="skip the from-scratch HIT-UAV reference row")
    p.add_argument("--reference-seeds", type=int, nargs="+", default=None, help="seeds of the reference row (default: --seeds)")
    p.add_argument("--base", type=Path, default=None,
                   help="reuse a synthetic base made before by this command (its OUT/synthetic-base) instead of building one")
    p.add_argument("--terse-variants", type=int, default=0,
                   help="terse variants per HIT-UAV training caption (thermgen.caption --terse-variants), for user phrasings")
    p.add_argument("--base-terse-variants", type=int, default=0,
                   help="terse variants per synthetic training caption, so the base's text tower learns user phrasings too")
    p.add_argument("--altitude", type=float, nargs=2, default=None, metavar=("LOW", "HIGH"),
                   help="the synthetic camera's altitude range (m): your drone's flight envelope (default: every view's own)")
    p.add_argument("--view-angle", type=float, nargs=2, default=None, metavar=("LOW", "HIGH"),
                   help="the synthetic camera's depression angle range (deg below the horizon; 90 = straight down)")
    p.add_argument("--object-scale", type=float, default=1.0,
                   help="multiply the drawn number of objects per synthetic scene (denser scenes)")
    p.add_argument("--adapt-bn", action="store_true",
                   help="re-estimate the synthetic base's batch-norm statistics on HIT-UAV train's frames (AdaBN: no labels, "
                        "no weights changed) before the zero-shot row and the adapters")
    p.add_argument("--workers", type=int, default=2, help="processes for rendering and captioning the corpus")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if any(not 0.0 < f <= 1.0 for f in args.fractions):
        print("sim2real: error: --fractions must lie in (0, 1]", file=sys.stderr)
        return 2
    try:
        run(args)
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        print(f"sim2real: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
