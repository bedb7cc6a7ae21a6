"""The VAE stage: training from scratch, adapting a pretrained SD VAE, reports, config errors, the command."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL

from pipelines import decode_thermal, encode_thermal
from thermgen.data.sample import DataError
from thermgen.train.vae import (
    VAE_DEFAULTS,
    load_images,
    main,
    reconstruct,
    reconstruction_metrics,
    train_vae,
    validate_vae_config,
    vae_to_single_channel,
)

TINY = {
    "block_out_channels": [8, 16],
    "norm_num_groups": 8,
    "resolution": 16,
    "batch_size": 4,
    "steps": 25,
    "learning_rate": 2e-3,
    "lr_warmup_steps": 0,
    "log_every": 5,
    "num_preview": 3,
}


def thermal_images(n: int, size: int = 16, seed: int = 0) -> torch.Tensor:
    """Smooth scenes: a warm/cold gradient background with a few hot blobs. (N, 1, size, size) in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    out = []
    for _ in range(n):
        level, tilt = torch.rand(2, generator=g)
        img = 0.2 + 0.3 * level + 0.2 * tilt * xx
        for _ in range(2):
            cx, cy = torch.rand(2, generator=g)
            img = img + 0.4 * torch.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / 0.01)
        out.append(img.clamp(0, 1))
    return torch.stack(out)[:, None]


def tiny_sd_vae(seed: int = 0) -> AutoencoderKL:
    torch.manual_seed(seed)
    return AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16), latent_channels=4,
        norm_num_groups=8, sample_size=16,
    ).eval()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("vae")
    report = train_vae(TINY, thermal_images(24), thermal_images(6, seed=1), out, show_progress=False)
    return out, report


def test_training_from_scratch_lowers_held_out_error(trained):
    _, report = trained
    assert report["source"] == "scratch" and report["in_channels"] == 1
    assert report["val"]["l1"] < 0.7 * report["val_before"]["l1"]
    assert report["val"]["psnr_db"] > report["val_before"]["psnr_db"]


def test_saved_vae_reloads_and_reproduces_the_reported_error(trained):
    out, report = trained
    vae = AutoencoderKL.from_pretrained(out)
    val = thermal_images(6, seed=1)
    metrics = reconstruction_metrics(val, reconstruct(vae, val))
    assert metrics["l1"] == pytest.approx(report["val"]["l1"], rel=1e-4)


def test_scaling_factor_whitens_latents(trained):
    out, report = trained
    vae = AutoencoderKL.from_pretrained(out)
    assert vae.config.scaling_factor == pytest.approx(report["scaling_factor"])
    assert report["scaling_factor"] == pytest.approx(1.0 / report["latent_std"])
    with torch.no_grad():
        z = encode_thermal(vae, thermal_images(24), generator=torch.Generator().manual_seed(0))
    assert 0.8 < float(z.std()) < 1.25


def test_report_log_and_figures_are_written(trained):
    out, report = trained
    on_disk = json.loads((out / "vae_report.json").read_text())
    assert on_disk["val"] == report["val"] and on_disk["steps"] == TINY["steps"]
    rows = list(csv.DictReader(open(out / "vae_log.csv")))
    assert [int(r["step"]) for r in rows] == [1, 5, 10, 15, 20, 25]
    assert all(math.isfinite(float(r["loss"])) for r in rows)
    for name in ("vae_loss.png", "vae_reconstructions.png", "vae_report.md"):
        assert (out / name).stat().st_size > 0


def test_training_is_deterministic_for_a_seed(tmp_path):
    cfg = {**TINY, "steps": 3}
    a = train_vae(cfg, thermal_images(8), thermal_images(2, seed=1), tmp_path / "a", show_progress=False)
    b = train_vae(cfg, thermal_images(8), thermal_images(2, seed=1), tmp_path / "b", show_progress=False)
    assert a["final_loss"] == b["final_loss"] and a["val"] == b["val"]


def test_single_channel_conversion_equals_replicate_and_average():
    vae3 = tiny_sd_vae()
    vae1 = vae_to_single_channel(vae3)
    assert vae1.config.in_channels == 1 and vae1.config.out_channels == 1
    x = thermal_images(3)
    with torch.no_grad():
        z3 = encode_thermal(vae3, x, sample=False)  # replicates to 3 channels
        z1 = encode_thermal(vae1, x, sample=False)
        torch.testing.assert_close(z1, z3, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(decode_thermal(vae1, z1), decode_thermal(vae3, z1), atol=1e-5, rtol=1e-5)


def test_pretrained_sd_vae_is_adapted_to_one_channel_without_training(tmp_path):
    sd = tmp_path / "sd"
    tiny_sd_vae().save_pretrained(sd / "vae")
    (sd / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline", "vae": ["diffusers", "AutoencoderKL"]}))
    cfg = {"pretrained": str(sd), "channels": 1, "steps": 0, "resolution": 16}
    report = train_vae(cfg, thermal_images(4), thermal_images(3, seed=1), tmp_path / "out", show_progress=False)
    assert report["in_channels"] == 1 and report["source"] == str(sd)
    assert report["val"] == report["val_before"]  # no steps: conversion alone, exact
    assert report["scaling_factor"] == pytest.approx(0.18215)  # the pretrained latent scale is kept
    assert AutoencoderKL.from_pretrained(tmp_path / "out").config.in_channels == 1


def test_pretrained_three_channel_vae_fine_tunes(tmp_path):
    tiny_sd_vae().save_pretrained(tmp_path / "vae3")
    cfg = {"pretrained": str(tmp_path / "vae3"), "channels": 3, "steps": 2, "resolution": 16, "batch_size": 2}
    report = train_vae(cfg, thermal_images(4), thermal_images(2, seed=1), tmp_path / "out", show_progress=False)
    assert report["in_channels"] == 3 and report["final_loss"] is not None


def test_missing_pretrained_vae_is_an_error_naming_the_path(tmp_path):
    with pytest.raises(DataError, match="no VAE found"):
        train_vae({"pretrained": str(tmp_path)}, thermal_images(2), thermal_images(1), tmp_path / "o")


def test_perceptual_term_uses_local_vgg_weights(tmp_path):
    from torchvision.models.vgg import cfgs, make_layers

    weights = tmp_path / "vgg16_first_blocks.pth"
    torch.save({f"features.{k}": v for k, v in make_layers(cfgs["D"])[:9].state_dict().items()}, weights)
    cfg = {**TINY, "steps": 2, "log_every": 1, "perceptual_weight": 0.1, "perceptual_weights": str(weights)}
    train_vae(cfg, thermal_images(4), thermal_images(2, seed=1), tmp_path / "out", show_progress=False)
    rows = list(csv.DictReader(open(tmp_path / "out" / "vae_log.csv")))
    assert all(math.isfinite(float(r["perceptual"])) and float(r["perceptual"]) > 0 for r in rows)


@pytest.mark.parametrize(
    "cfg, key",
    [
        ({"stepz": 3}, "vae.stepz"),
        ({"steps": -1}, "vae.steps"),
        ({"recon_loss": "huber"}, "vae.recon_loss"),
        ({"block_out_channels": []}, "vae.block_out_channels"),
        ({"norm_num_groups": 5}, "vae.norm_num_groups"),
        ({"resolution": 30}, "vae.resolution"),
        ({"channels": 3}, "vae.channels"),
        ({"perceptual_weight": 0.1}, "vae.perceptual_weights"),
        ({"lr_scheduler": "sawtooth"}, "vae.lr_scheduler"),
    ],
)
def test_bad_config_names_the_key(cfg, key):
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        validate_vae_config(cfg)


def test_defaults_validate():
    assert validate_vae_config({}) == VAE_DEFAULTS


def test_load_images_reads_files_with_fixed_normalisation(tmp_path):
    from thermgen.io import write_png8, write_png16

    write_png16(tmp_path / "hot16.png", np.full((24, 32), 65535, np.uint16))
    write_png8(tmp_path / "mid8.png", np.full((32, 24), 128, np.uint8))
    x = load_images([tmp_path / "hot16.png", tmp_path / "mid8.png"], resolution=16)
    assert x.shape == (2, 1, 16, 16) and x.dtype == torch.float32
    assert float(x[0].min()) == pytest.approx(1.0) and float(x[1].mean()) == pytest.approx(128 / 255, abs=1e-4)


def test_load_images_centre_crops_keeping_aspect(tmp_path):
    from thermgen.io import write_png8

    img = np.zeros((16, 32), np.uint8)
    img[:, 8:24] = 255  # a bright central square in a wide frame
    write_png8(tmp_path / "wide.png", img)
    x = load_images([tmp_path / "wide.png"], resolution=16)
    assert float(x.min()) > 0.99  # the crop is the central square; squashing would bring in the dark sides


def test_command_trains_from_a_folder(tmp_path):
    from thermgen.io import write_png8

    images = (thermal_images(10).numpy()[:, 0] * 255).round().astype(np.uint8)
    for i, im in enumerate(images):
        write_png8(tmp_path / "imgs" / f"{i}.png", im)
    args = ["--images", str(tmp_path / "imgs"), "--out", str(tmp_path / "out"), "--no-progress",
            "steps=2", "resolution=16", "block_out_channels=[8, 16]", "norm_num_groups=8", "batch_size=4"]
    assert main(args) == 0
    report = json.loads((tmp_path / "out" / "vae_report.json").read_text())
    assert report["train_images"] == 9 and report["val_images"] == 1


def test_command_rejects_unknown_override_naming_it(tmp_path, capsys):
    (tmp_path / "imgs").mkdir()
    assert main(["--images", str(tmp_path / "imgs"), "--out", str(tmp_path / "o"), "stpes=2"]) == 2
    assert "vae.stpes" in capsys.readouterr().err


# ---- the lossless patch autoencoder (vae.kind = "patch") -----------------------------------------------------
def test_patch_autoencoder_is_lossless_whitened_and_reloads(tmp_path):
    from pipelines import PatchAutoencoder, load_thermal_vae

    g = torch.Generator().manual_seed(0)
    train = torch.rand(12, 1, 32, 32, generator=g) * 0.5 + 0.2
    val = torch.rand(4, 1, 32, 32, generator=g) * 0.5 + 0.2
    rep = train_vae({"kind": "patch", "patch_size": 4, "resolution": 32, "num_preview": 2}, train, val, tmp_path / "ae",
                    show_progress=False)
    assert rep["source"] == "patch" and rep["parameters"] == 0 and rep["downsample_factor"] == 4
    assert rep["val"]["l1"] < 1e-5  # exact up to the vanishing posterior variance
    ae = load_thermal_vae(tmp_path / "ae")
    assert isinstance(ae, PatchAutoencoder) and ae.config.latent_channels == 16
    z = encode_thermal(ae, train, sample=False)
    assert z.shape == (12, 16, 8, 8)
    assert abs(float(z.mean())) < 1e-4 and abs(float(z.std()) - 1) < 1e-3  # shift/scaling fitted on the train set
    assert torch.allclose(decode_thermal(ae, z), train, atol=1e-5)
    # The same fold as torch's pixel_unshuffle: a real pixel layout, not a learned code.
    assert torch.equal(ae.encode(train * 2 - 1).latent_dist.mean, torch.nn.functional.pixel_unshuffle(train * 2 - 1, 4))
    assert isinstance(load_thermal_vae(_save_kl(tmp_path / "kl")), AutoencoderKL)
    with pytest.raises(ValueError, match="patch_size"):
        validate_vae_config({"kind": "patch", "patch_size": 3})


def _save_kl(path):
    AutoencoderKL(in_channels=1, out_channels=1, block_out_channels=(8,), norm_num_groups=8, latent_channels=4,
                  down_block_types=("DownEncoderBlock2D",), up_block_types=("UpDecoderBlock2D",)).save_pretrained(path)
    return path


def _weights(folder):
    from safetensors.torch import load_file

    return load_file(str(folder / "diffusion_pytorch_model.safetensors"))


class _Interrupt(Exception):
    pass


# 12 images at batch 4: 3 batches an epoch. Stopped at 5, it resumes from checkpoint-4 (mid-epoch: 1 of 3 batches
# done); stopped at 7, from checkpoint-6 (an epoch boundary).
@pytest.mark.parametrize("stop_at", [5, 7])
def test_interrupted_training_resumes_to_bit_identical_weights(tmp_path, stop_at):
    cfg = {**TINY, "steps": 9, "checkpointing_steps": 2, "checkpoints_total_limit": 2, "log_every": 1}
    train, val = thermal_images(12), thermal_images(2, seed=1)
    full = train_vae(cfg, train, val, tmp_path / "full", show_progress=False)

    def interrupt(step, loss):
        if step == stop_at:
            raise _Interrupt

    from accelerate.state import GradientState

    assert not GradientState().in_dataloader  # a finished loop leaves no active loader for later stages
    with pytest.raises(_Interrupt):
        train_vae(cfg, train, val, tmp_path / "cut", show_progress=False, step_callback=interrupt)
    assert not GradientState().in_dataloader  # nor does an interrupted one
    ckpts = sorted(p.name for p in (tmp_path / "cut" / "checkpoints").iterdir())
    assert ckpts == [f"checkpoint-{stop_at - 3}", f"checkpoint-{stop_at - 1}"]  # rotated: the newest 2
    steps_after = []
    resumed = train_vae(cfg, train, val, tmp_path / "cut", show_progress=False, resume=True,
                        step_callback=lambda step, loss: steps_after.append(step))
    assert resumed["resumed_from"].endswith(f"checkpoint-{stop_at - 1}")
    assert steps_after == list(range(stop_at, 10))  # it went on from the checkpoint, it did not start over

    a, b = _weights(tmp_path / "full"), _weights(tmp_path / "cut")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert resumed["final_loss"] == full["final_loss"]
    read = lambda p: list(csv.DictReader(open(p / "vae_log.csv")))  # noqa: E731
    assert read(tmp_path / "cut") == read(tmp_path / "full")  # every step's row, the resumed ones included


def test_resume_refuses_another_config_or_other_images_and_a_finished_run_keeps_no_checkpoints(tmp_path):
    from thermgen.train.vae import resumable_checkpoint

    cfg = {**TINY, "steps": 6, "checkpointing_steps": 2}
    train, val = thermal_images(8), thermal_images(2, seed=1)

    def stop(step, loss):
        if step == 5:
            raise _Interrupt

    with pytest.raises(_Interrupt):
        train_vae(cfg, train, val, tmp_path / "run", show_progress=False, step_callback=stop)
    with pytest.raises(ValueError, match="vae.learning_rate"):
        train_vae({**cfg, "learning_rate": 1e-4}, train, val, tmp_path / "run", show_progress=False, resume=True)
    with pytest.raises(ValueError, match="other images"):
        train_vae(cfg, thermal_images(8, seed=5), val, tmp_path / "run", show_progress=False, resume=True)
    assert resumable_checkpoint(tmp_path / "run", cfg).name == "checkpoint-4"
    assert resumable_checkpoint(tmp_path / "run", {**cfg, "learning_rate": 1e-4}) is None
    assert resumable_checkpoint(tmp_path / "run", {**cfg, "checkpointing_steps": 3}) is not None  # no effect on training
    (tmp_path / "run" / "checkpoints" / "checkpoint-4" / "checkpoint.json").unlink()  # as if killed while saving it
    assert resumable_checkpoint(tmp_path / "run", cfg).name == "checkpoint-2"  # the newest complete one
    rep = train_vae(cfg, train, val, tmp_path / "run", show_progress=False, resume=True)
    assert rep["resumed_from"].endswith("checkpoint-2")
    assert not (tmp_path / "run" / "checkpoints").exists()  # finished: checkpoints deleted


def test_streamed_training_images_encode_to_the_same_latents(tmp_path, monkeypatch):
    from pipelines import PatchAutoencoder
    from thermgen.io import write_png8
    from thermgen.train import unet as unet_mod
    from thermgen.train.vae import ImageFiles

    rng = np.random.default_rng(0)
    paths = []
    for i, shape in enumerate([(24, 32), (32, 32), (40, 20)] * 3):
        paths.append(tmp_path / f"{i}.png")
        write_png8(paths[-1], (rng.random(shape) * 255).astype(np.uint8))
    files = ImageFiles(paths, 16, center_crop=False)
    whole = load_images(paths, 16, center_crop=False)
    assert len(files) == 9 and torch.equal(torch.stack([files[i] for i in range(9)]), whole)

    class Text(torch.nn.Module):  # the smallest text encoder encode_training_set accepts
        def encode_prompt(self, prompts, fine, device=None):
            return torch.zeros(len(prompts), 3, 4)

    ae = PatchAutoencoder(patch_size=4)
    prompts = [f"p{i}" for i in range(9)]
    kept = unet_mod.encode_training_set(whole, prompts, None, ae, Text(), batch_size=4, progress=False)
    streamed = unet_mod.encode_training_set(files, prompts, None, ae, Text(), batch_size=4, progress=False, workers=1)
    assert torch.equal(kept["latent_mean"], streamed["latent_mean"]) and kept["latent_mean"].shape == (9, 16, 4, 4)


def test_streamed_vae_training_matches_preloaded_training(tmp_path, monkeypatch):
    """image_cache_mb 0: the training images are read from disk every batch; the weights equal a preloaded run's."""
    from safetensors.torch import load_file

    from thermgen.io import write_png8
    from thermgen.train import vae as vae_mod
    from thermgen.train.vae import ImageFiles, images_sha256

    rng = np.random.default_rng(3)
    paths = []
    for i in range(12):
        paths.append(tmp_path / f"{i}.png")
        write_png8(paths[-1], (rng.random((20, 24)) * 255).astype(np.uint8))
    cfg = {**TINY, "steps": 4, "batch_size": 4, "checkpointing_steps": 2, "num_preview": 2}
    files = ImageFiles(paths, 16, center_crop=True)
    assert images_sha256(files) == images_sha256(load_images(paths, 16))
    kept = train_vae(cfg, paths, paths[:4], tmp_path / "kept", show_progress=False)
    real_load = vae_mod.load_images
    monkeypatch.setattr(vae_mod, "load_images", lambda images, *a, **k: (
        pytest.fail("streamed training images were loaded whole") if not torch.is_tensor(images) and len(images) > 4
        else real_load(images, *a, **k)))
    streamed = train_vae({**cfg, "image_cache_mb": 0, "image_workers": 1}, paths, paths[:4], tmp_path / "streamed",
                         show_progress=False)
    a = load_file(tmp_path / "kept" / "diffusion_pytorch_model.safetensors")
    b = load_file(tmp_path / "streamed" / "diffusion_pytorch_model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert streamed["val"] == kept["val"] and streamed["latent_std"] == kept["latent_std"]
    assert streamed["val_before"] == kept["val_before"] and streamed["val_mean_image_l1"] == kept["val_mean_image_l1"]


def test_streamed_reconstruction_metrics_equal_the_whole_split_ones():
    """evaluate_reconstruction reads a batch at a time (the VAE's held-out split) and reports what the whole-split
    reconstruction_metrics does."""
    from thermgen.train.vae import build_vae, evaluate_reconstruction

    vae = build_vae(validate_vae_config(TINY))
    x = torch.rand(7, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    whole = reconstruction_metrics(x, reconstruct(vae, x))
    metrics, base, preview, recons = evaluate_reconstruction(vae, x, batch_size=3, keep=2)
    assert metrics.keys() == whole.keys()
    for k in whole:
        assert metrics[k] == pytest.approx(whole[k], rel=1e-6), k
    assert base == pytest.approx(float((x - x.mean(dim=(1, 2, 3), keepdim=True)).abs().mean()), rel=1e-6)
    assert preview.shape == recons.shape == (2, 1, 16, 16) and torch.equal(preview, x[:2])


def test_patch_autoencoder_scale_from_streamed_batches_matches_the_tensor_fit():
    from pipelines import PatchAutoencoder

    x = torch.rand(10, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    whole, parts = PatchAutoencoder(patch_size=4), PatchAutoencoder(patch_size=4)
    s1, f1 = whole.fit_scale(x)
    s2, f2 = parts.fit_scale(iter([x[:3], x[3:7], x[7:]]))
    assert s2 == pytest.approx(s1, rel=1e-5, abs=1e-7) and f2 == pytest.approx(f1, rel=1e-5)
