"""generate_prompts reuses an image folder only when the same pipeline weights, prompts, seeds and settings made it."""

from __future__ import annotations

import json

import torch

from pipelines import ThermalDiffusionPipeline
from pipelines.testing import tiny_pipeline
from thermgen.train.config import load_config
from thermgen.train.recipe import Context, generate_prompts, pipeline_fingerprint

PROMPTS = ["an infrared image of a road at night", "an infrared image of a parking lot by day"]
FINE = ["warm engines", "cold asphalt"]


def _ctx(tmp_path, *overrides):
    cfg = load_config(None, ["train.resolution=16", "eval.num_inference_steps=2", *overrides])
    return Context(cfg=cfg, run=tmp_path, progress=False)


def _reused(caplog, tmp_path, pipe, out, *overrides, prompts=PROMPTS, fine=FINE, seed=0, ids=("a", "b"),
            negative=None, contrast=None, contrast_scale=2.0) -> bool:
    """Run generate_prompts; True when it reused the folder (its log line), False when it generated."""
    caplog.clear()
    neg = {} if negative is None else {"negative": list(negative), "negative_fine": list(negative)}
    if contrast is not None:
        neg |= {"contrast": list(contrast), "contrast_fine": list(contrast), "contrast_scale": contrast_scale}
    generate_prompts(_ctx(tmp_path, *overrides), pipe, list(prompts), None if fine is None else list(fine), out,
                     seed=seed, record_ids=list(ids), **neg)
    assert len(list(out.glob("*.png"))) == len(prompts)
    return "reused" in caplog.text


def test_same_request_reuses_the_folder_and_any_change_regenerates(tmp_path, caplog):
    caplog.set_level("INFO", logger="thermgen.train")
    pipe = tiny_pipeline(mode="concat")
    out = tmp_path / "images"
    assert not _reused(caplog, tmp_path, pipe, out)
    index = json.loads((out / "generation.json").read_text())
    assert index["settings"]["pipeline"] == pipeline_fingerprint(pipe)
    assert _reused(caplog, tmp_path, pipe, out)

    for changed in (dict(seed=1), dict(prompts=PROMPTS[::-1]), dict(ids=("a", "c")), dict(fine=FINE[::-1]),
                    dict(fine=None), dict(negative=PROMPTS[::-1]), dict(contrast=PROMPTS[::-1])):
        assert not _reused(caplog, tmp_path, pipe, out, **changed), changed
        assert not _reused(caplog, tmp_path, pipe, out)  # back to the first request: made again, not reused
    for override in ("train.guidance_scale=5.0", "eval.num_inference_steps=3"):
        assert not _reused(caplog, tmp_path, pipe, out, override), override
        assert not _reused(caplog, tmp_path, pipe, out)

    # Negative prompts are part of the request and of the index (a contrastive negative per prompt).
    assert not _reused(caplog, tmp_path, pipe, out, negative=PROMPTS[::-1])
    assert _reused(caplog, tmp_path, pipe, out, negative=PROMPTS[::-1])
    entries = json.loads((out / "generation.json").read_text())["images"]
    assert [e["negative_prompt"] for e in entries] == PROMPTS[::-1]
    assert not _reused(caplog, tmp_path, pipe, out)
    # contrast prompts and their weight likewise
    assert not _reused(caplog, tmp_path, pipe, out, contrast=PROMPTS[::-1])
    assert _reused(caplog, tmp_path, pipe, out, contrast=PROMPTS[::-1])
    assert not _reused(caplog, tmp_path, pipe, out, contrast=PROMPTS[::-1], contrast_scale=3.0)
    assert not _reused(caplog, tmp_path, pipe, out, contrast=FINE)
    entries = json.loads((out / "generation.json").read_text())["images"]
    assert [e["contrast_prompt"] for e in entries] == FINE and "negative_prompt" not in entries[0]

    (out / "00001.png").unlink()  # a half-deleted folder is regenerated, not trusted
    assert not _reused(caplog, tmp_path, pipe, out)
    assert _reused(caplog, tmp_path, pipe, out)


def test_fingerprint_follows_weights_and_text_encoder_mode_not_the_folder(tmp_path):
    a, b = tiny_pipeline(mode="global"), tiny_pipeline(mode="global")
    assert pipeline_fingerprint(a) == pipeline_fingerprint(b)  # same construction, same weights
    before = pipeline_fingerprint(b)
    with torch.no_grad():
        p = next(b.unet.parameters())
        p.view(-1)[0] += 1e-3  # weights changed in place
    assert pipeline_fingerprint(b) != before and pipeline_fingerprint(a) != pipeline_fingerprint(b)
    b.unet = a.unet  # a component swapped, as thermgen.bench.control swaps checkpoints
    assert pipeline_fingerprint(b) == pipeline_fingerprint(a)
    from diffusers import DDIMScheduler, EulerDiscreteScheduler

    other = EulerDiscreteScheduler if isinstance(a.scheduler, DDIMScheduler) else DDIMScheduler
    b.scheduler = other.from_config(a.scheduler.config)  # another sampler: another fingerprint
    assert pipeline_fingerprint(b) != pipeline_fingerprint(a)
    assert pipeline_fingerprint(tiny_pipeline(mode="concat")) != pipeline_fingerprint(a)

    import tclip.text_encoder  # noqa: F401  (diffusers resolves the text component's class by module name)

    a.save_pretrained(tmp_path / "one")
    a.save_pretrained(tmp_path / "two")
    one = ThermalDiffusionPipeline.from_pretrained(tmp_path / "one")
    two = ThermalDiffusionPipeline.from_pretrained(tmp_path / "two")
    assert pipeline_fingerprint(one) == pipeline_fingerprint(two)  # the folder it came from does not count
