"""generate_prompts reuses an image folder only when the same pipeline weights, prompts, seeds and settings made it."""

from __future__ import annotations

import json

import torch

from pipelines.testing import tiny_pipeline
from thermgen.train.config import load_config
from thermgen.train.recipe import Context, generate_prompts, pipeline_fingerprint

PROMPTS = ["an infrared image of a road at night", "an infrared image of a parking lot by day"]


def _ctx(tmp_path, *overrides):
    cfg = load_config(None, ["train.resolution=16", "eval.num_inference_steps=2", *overrides])
    return Context(cfg=cfg, run=tmp_path, progress=False)


def _mtimes(folder):
    return {p.name: p.stat().st_mtime_ns for p in folder.glob("*.png")}


def test_same_request_reuses_the_folder_and_any_change_regenerates(tmp_path, caplog):
    pipe = tiny_pipeline(mode="global")
    out = tmp_path / "images"
    generate_prompts(_ctx(tmp_path), pipe, PROMPTS, None, out, seed=0, record_ids=["a", "b"])
    first = _mtimes(out)
    assert len(first) == 2
    index = json.loads((out / "generation.json").read_text())
    assert index["settings"]["pipeline"] == pipeline_fingerprint(pipe)

    caplog.set_level("INFO", logger="thermgen.train")
    generate_prompts(_ctx(tmp_path), pipe, PROMPTS, None, out, seed=0, record_ids=["a", "b"])
    assert _mtimes(out) == first
    assert "reused 2 images" in caplog.text

    for changed in (dict(seed=1), dict(prompts=PROMPTS[::-1]), dict(record_ids=["a", "c"])):
        kw = dict(prompts=PROMPTS, seed=0, record_ids=["a", "b"]) | changed
        generate_prompts(_ctx(tmp_path), pipe, kw["prompts"], None, out, seed=kw["seed"], record_ids=kw["record_ids"])
        assert _mtimes(out) != first, changed
        generate_prompts(_ctx(tmp_path), pipe, PROMPTS, None, out, seed=0, record_ids=["a", "b"])
        first = _mtimes(out)

    generate_prompts(_ctx(tmp_path, "train.guidance_scale=5.0"), pipe, PROMPTS, None, out, seed=0, record_ids=["a", "b"])
    assert _mtimes(out) != first
    first = _mtimes(out)

    (out / "00001.png").unlink()  # a half-deleted folder is regenerated, not trusted
    generate_prompts(_ctx(tmp_path, "train.guidance_scale=5.0"), pipe, PROMPTS, None, out, seed=0, record_ids=["a", "b"])
    assert set(_mtimes(out)) == set(first)


def test_fingerprint_follows_weights_and_text_encoder_mode():
    a, b = tiny_pipeline(mode="global"), tiny_pipeline(mode="global")
    assert pipeline_fingerprint(a) == pipeline_fingerprint(b)  # same construction, same weights
    with torch.no_grad():
        p = next(b.unet.parameters())
        p.view(-1)[0] += 1e-3
    b._thermgen_fingerprint = None
    assert pipeline_fingerprint(a) != pipeline_fingerprint(b)
    assert pipeline_fingerprint(tiny_pipeline(mode="concat")) != pipeline_fingerprint(a)
