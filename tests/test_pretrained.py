"""Shipped models: thermgen.pretrained_path, the packaging command, python -m thermgen.generate's default model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import thermgen
from thermgen.pretrained import MAX_BYTES, MODELS_DIR, folder_bytes, package


def test_unknown_model_name_says_how_to_get_one():
    with pytest.raises(FileNotFoundError, match="no packaged model 'nope'"):
        thermgen.pretrained_path("nope")


def test_package_writes_a_loadable_fp16_pipeline_with_a_model_card(tmp_path):
    from pipelines import ThermalDiffusionPipeline
    from pipelines.testing import tiny_pipeline

    run = tmp_path / "run"
    tiny_pipeline(mode="fused", pooled=True).save_pretrained(run / "pipeline")
    dest = package(run, "tiny", fp16=True, dest=tmp_path / "models")
    card = (dest / "README.md").read_text()
    assert "CC BY 4.0" in card and "Suo et al." in card and "library_name: diffusers" in card
    assert "change generated images by at most" in card  # fp16 storage measured against the run's weights
    assert not list(dest.rglob("*.bin")) and list(dest.rglob("*.safetensors"))
    from safetensors.torch import load_file

    weights = load_file(str(dest / "unet" / "diffusion_pytorch_model.safetensors"))
    assert {t.dtype for t in weights.values()} == {torch.float16}
    pipe = ThermalDiffusionPipeline.from_pretrained(dest)  # loads offline (upcast to float32 by default)
    assert pipe.takes_pooled
    assert folder_bytes(dest) < MAX_BYTES


def _shipped():
    try:
        return thermgen.pretrained_path("hituav-64")
    except FileNotFoundError as e:
        pytest.skip(f"hituav-64 is not shipped in this checkout: {e}")


def test_shipped_model_stays_under_its_size_limit():
    folder = _shipped()
    assert folder_bytes(folder) <= MAX_BYTES, f"{folder} is {folder_bytes(folder) / 2**20:.1f} MiB"
    assert "CC BY 4.0" in (folder / "README.md").read_text()


def test_shipped_model_loads_offline_and_generates_64px():
    from pipelines import ThermalDiffusionPipeline

    pipe = ThermalDiffusionPipeline.from_pretrained(_shipped()).to(torch.float32)
    pipe.set_progress_bar_config(disable=True)
    img = pipe("An infrared thermal image of a road at night, seen from 60 m.", num_inference_steps=4,
               generator=torch.Generator().manual_seed(0), output_type="np").images
    assert img.shape == (1, 64, 64, 1) and np.isfinite(img).all()


def test_generate_without_pipeline_uses_the_shipped_model_or_says_how_to_get_one(tmp_path, capsys):
    from thermgen.generate import main

    shipped = (MODELS_DIR / "hituav-64" / "model_index.json").is_file()
    rc = main(["--prompt", "An infrared thermal image of a road at night.", "--out", str(tmp_path / "o"),
               "--steps", "2", "--n", "1"])
    if shipped:
        assert rc == 0 and (tmp_path / "o" / "generation.json").is_file()
    else:
        assert rc == 2 and "thermgen.pretrained" in capsys.readouterr().err


def test_model_card_carries_the_known_gaps_given_to_the_packaging_command(tmp_path):
    from pipelines.testing import tiny_pipeline
    from thermgen.pretrained import main

    run = tmp_path / "run"
    tiny_pipeline(mode="fused").save_pretrained(run / "pipeline")
    (tmp_path / "gaps.md").write_text("- FID is far from its goal.\n")
    from unittest import mock

    with mock.patch("thermgen.pretrained.MODELS_DIR", tmp_path / "models"):
        assert main(["--run", str(run), "--name", "tiny", "--notes", str(tmp_path / "gaps.md")]) == 0
    card = (tmp_path / "models" / "tiny" / "README.md").read_text()
    assert "## Known gaps\n\n- FID is far from its goal.\n" in card
    assert "change generated images" not in card  # float32: nothing to measure
