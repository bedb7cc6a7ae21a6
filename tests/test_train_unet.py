"""The UNet training loop (thermgen.train.unet): resume, multi-process, checkpoints, LoRA, width bridge."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from thermgen.train.config import ConfigError, load_config
from tclip.scaffold import list_checkpoints
from thermgen.train.unet import (build_pipeline, build_unet, make_inference_scheduler, make_noise_scheduler, micro_batch,
                                 read_log, resolve_noise_schedule, train_unet)

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"

TINY = [
    "unet.block_out_channels=[32, 64]",
    "unet.cross_attention_dim=32",
    "unet.norm_num_groups=8",
    "unet.attention_head_dim=8",
    "train.train_batch_size=4",
    "train.lr_warmup_steps=1",
    "train.checkpointing_steps=2",
    "run.device=cpu",
]


def tiny_cfg(*extra):
    return load_config(None, TINY + list(extra))


def make_cache(n=16, width=24, tokens=6, seed=0):
    """A training cache as the recipe writes it: latents (C=4, 8x8) whose mean depends on the text states."""
    g = torch.Generator().manual_seed(seed)
    text = torch.randn(n, tokens, width, generator=g)
    proj = torch.randn(width, 4, generator=g) / width**0.5
    mean = (text.mean(1) @ proj)[:, :, None, None].expand(n, 4, 8, 8).contiguous()
    return {"latent_mean": mean + 0.3 * torch.randn(n, 4, 8, 8, generator=g),
            "latent_std": torch.full((n, 4, 8, 8), 0.05), "text_states": text,
            "uncond_states": torch.zeros(1, tokens, width)}


def weights(unet_dir: Path) -> dict:
    return load_file(str(unet_dir / "diffusion_pytorch_model.safetensors"))


class Interrupt(RuntimeError):
    pass


def test_resumed_run_ends_with_the_same_weights_as_an_uninterrupted_run(tmp_path):
    cfg = tiny_cfg("train.max_train_steps=6", "train.gradient_accumulation_steps=2", "train.use_ema=true")
    cache = make_cache()
    full = train_unet(cfg, cache, tmp_path / "full", progress=False)

    def crash_after_step_5(step, loss):
        if step == 5:  # checkpoint-4 exists, step 5's progress is lost
            raise Interrupt("simulated kill")

    with pytest.raises(Interrupt):
        train_unet(cfg, cache, tmp_path / "cut", progress=False, step_callback=crash_after_step_5)
    assert [d.name for d in list_checkpoints(tmp_path / "cut" / "checkpoints")][-1] == "checkpoint-4"
    resumed = train_unet(cfg, cache, tmp_path / "cut", resume=True, progress=False)

    assert resumed["resumed_from"].endswith("checkpoint-4")
    a, b = weights(tmp_path / "full" / "unet"), weights(tmp_path / "cut" / "unet")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    log_full = read_log(tmp_path / "full" / "logs" / "train_log.csv")
    log_cut = read_log(tmp_path / "cut" / "logs" / "train_log.csv")
    assert [r["step"] for r in log_cut] == [1, 2, 3, 4, 5, 6]
    assert [r["loss"] for r in log_cut] == [r["loss"] for r in log_full]
    assert full["final_loss"] == resumed["final_loss"]


def test_two_processes_give_the_same_loss_curve_as_one(tmp_path):
    cache_path = tmp_path / "cache.safetensors"
    save_file(make_cache(), str(cache_path))
    steps = 8
    one = tiny_cfg(f"train.max_train_steps={steps}", "train.train_batch_size=4")
    train_unet(one, cache_path, tmp_path / "one", progress=False)

    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
           "-m", "thermgen.train.unet", "--cache", str(cache_path), "--out", str(tmp_path / "two"), "--no-progress",
           *TINY, f"train.max_train_steps={steps}", "train.train_batch_size=4"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]

    import json

    report = json.loads((tmp_path / "two" / "train_report.json").read_text())
    assert report["num_processes"] == 2 and report["global_batch"] == 4
    l1 = np.array([r["loss"] for r in read_log(tmp_path / "one" / "logs" / "train_log.csv")])
    l2 = np.array([r["loss"] for r in read_log(tmp_path / "two" / "logs" / "train_log.csv")])
    assert len(l1) == len(l2) == steps
    # Same samples, noise and timesteps; DDP averages the two half-batch gradients: the curves agree up to
    # floating-point summation order.
    np.testing.assert_allclose(l2, l1, rtol=1e-3, atol=1e-5)
    assert np.ptp(l1) > 1e-3  # the curve has a shape to compare


def test_checkpoints_are_rotated_to_the_configured_limit(tmp_path):
    cfg = tiny_cfg("train.max_train_steps=8", "train.checkpointing_steps=2", "train.checkpoints_total_limit=2",
                   "train.use_ema=false")
    train_unet(cfg, make_cache(), tmp_path, progress=False)
    assert [d.name for d in list_checkpoints(tmp_path / "checkpoints")] == ["checkpoint-6", "checkpoint-8"]


def test_lora_trains_only_the_adapter_and_ships_a_plain_fused_unet(tmp_path):
    from diffusers import UNet2DConditionModel

    cfg = tiny_cfg("train.max_train_steps=3", "train.lora_rank=4", "train.learning_rate=0.05", "train.use_ema=false")
    cache = make_cache()
    report = train_unet(cfg, cache, tmp_path, progress=False)
    base = build_unet(cfg["unet"], latent_channels=4, latent_size=8, text_width=24, seed=cfg["run"]["seed"])
    assert report["trainable_parameters"] < sum(p.numel() for p in base.parameters()) / 5
    assert (tmp_path / "unet_lora" / "pytorch_lora_weights.safetensors").is_file()

    tuned = UNet2DConditionModel.from_pretrained(tmp_path / "unet")
    assert not any("lora" in k for k in tuned.state_dict())  # fused: loads as an ordinary UNet
    base_sd, tuned_sd = base.state_dict(), tuned.state_dict()
    changed = {k for k in base_sd if not torch.equal(base_sd[k], tuned_sd[k])}
    assert any("attn" in k and ("to_q" in k or "to_k" in k or "to_v" in k) for k in changed)
    assert not any("resnets" in k or "conv_in" in k for k in changed)  # only adapted (and bridge) weights move


def test_v_prediction_with_min_snr_weighting_reduces_the_loss(tmp_path):
    cfg = tiny_cfg("train.max_train_steps=20", "train.prediction_type=v_prediction", "train.snr_gamma=5.0",
                   "train.learning_rate=0.003", "train.use_ema=false", "train.checkpointing_steps=100")
    train_unet(cfg, make_cache(n=8), tmp_path, progress=False)
    loss = [r["loss"] for r in read_log(tmp_path / "logs" / "train_log.csv")]
    assert np.mean(loss[-5:]) < 0.8 * np.mean(loss[:5])
    assert (tmp_path / "loss_curve.png").stat().st_size > 1000


def test_text_width_is_bridged_to_cross_attention_width():
    cfg = tiny_cfg()
    unet = build_unet(cfg["unet"], latent_channels=4, latent_size=8, text_width=24)
    assert unet.config.encoder_hid_dim_type == "text_proj" and unet.config.encoder_hid_dim == 24
    out = unet(torch.randn(2, 4, 8, 8), torch.tensor([1, 500]), torch.randn(2, 6, 24)).sample
    assert out.shape == (2, 4, 8, 8)
    same = build_unet(cfg["unet"], latent_channels=4, latent_size=8, text_width=32)
    assert same.config.encoder_hid_dim_type is None


def test_pooled_text_joins_the_timestep_embedding_so_prompts_change_every_level():
    cfg = tiny_cfg()
    unet = build_unet(cfg["unet"], latent_channels=4, latent_size=8, text_width=24).eval()
    assert unet.config.addition_embed_type == "text"
    with torch.no_grad():
        emb_a = unet.get_aug_embed(None, torch.randn(1, 6, 24), {})
        emb_b = unet.get_aug_embed(None, torch.randn(1, 6, 24), {})
    assert emb_a.shape == (1, unet.config.block_out_channels[0] * 4) and not torch.allclose(emb_a, emb_b)
    plain = build_unet({**cfg["unet"], "addition_embed_type": None}, latent_channels=4, latent_size=8, text_width=24)
    assert getattr(plain, "add_embedding", None) is None


def test_pretrained_unet_gets_a_text_projection_when_widths_differ(tmp_path):
    cfg = tiny_cfg()
    build_unet(cfg["unet"], latent_channels=4, latent_size=8, text_width=32).save_pretrained(tmp_path / "sd" / "unet")
    cfg["unet"]["pretrained"] = str(tmp_path / "sd")
    unet = build_unet(cfg["unet"], latent_channels=4, latent_size=8, text_width=48)
    assert unet.config.encoder_hid_dim == 48
    assert unet(torch.randn(1, 4, 8, 8), torch.tensor([3]), torch.randn(1, 5, 48)).sample.shape == (1, 4, 8, 8)


def test_micro_batches_split_one_global_batch_across_processes():
    kw = dict(n_samples=16, seed=3, latent_shape=(4, 8, 8), num_train_timesteps=1000, caption_dropout=0.1,
              noise_offset=0.0, random_flip=False)
    a, b = micro_batch(5, global_batch=4, **kw), micro_batch(5, global_batch=4, **kw)
    assert all(torch.equal(a[k], b[k]) for k in a)  # a function of (seed, step) only
    epoch0 = torch.cat([micro_batch(k, global_batch=4, **kw)["index"] for k in range(4)])
    assert sorted(epoch0.tolist()) == list(range(16))  # each epoch visits every sample once


def test_resume_from_a_missing_checkpoint_folder_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint-99"):
        train_unet(tiny_cfg("train.max_train_steps=2"), make_cache(), tmp_path, resume=str(tmp_path / "checkpoint-99"),
                   progress=False)


def test_batch_larger_than_the_data_names_the_key(tmp_path):
    with pytest.raises(ValueError, match="train.train_batch_size"):
        train_unet(tiny_cfg("train.train_batch_size=32"), make_cache(n=8), tmp_path, progress=False)


@pytest.mark.parametrize("config", sorted(p.name for p in CONFIGS.glob("*.yaml")))
def test_sampler_of_each_shipped_config_keeps_latents_at_unit_scale_for_a_nearly_ideal_unet(config):
    # Latents ~ N(0, 1): the ideal UNet output is known in closed form (E[x0 | x_t] = sqrt(alpha_bar) x_t), so
    # ideal + 1% error stands for a well-trained UNet. Under epsilon prediction with the cosine schedule the
    # sampler divides that error by sqrt(alpha_bar_T) = 5e-5 and the latents end with std ~15 (saturated blobs).
    cfg = load_config(CONFIGS / config)
    pred = resolve_noise_schedule(cfg)["prediction_type"]
    sched = make_inference_scheduler(cfg)
    alphas_cumprod = make_noise_scheduler(cfg).alphas_cumprod.double().numpy()
    train_sigmas = ((1 - alphas_cumprod) / alphas_cumprod) ** 0.5
    g = torch.Generator().manual_seed(0)
    sched.set_timesteps(20)
    x = torch.randn(8, 4, 16, 16, generator=g) * sched.init_noise_sigma
    for t in sched.timesteps:
        # (fractional timesteps, as Euler uses, interpolate the noise level like the scheduler does)
        sigma = float(np.interp(float(t), np.arange(len(train_sigmas)), train_sigmas))
        s = sigma * (1 + sigma**2) ** -0.5  # sqrt(1 - alpha_bar)
        x_t = sched.scale_model_input(x, t)  # the variance-preserving x_t the UNet sees
        ideal = s * x_t if pred == "epsilon" else torch.zeros_like(x_t)  # v = a * eps - s * x0 has mean 0 here
        x = sched.step(ideal + 0.01 * torch.randn(x.shape, generator=g), t, x, return_dict=False)[0]
    assert 0.7 < float(x.std()) < 1.3


def test_a_sampler_swapped_into_the_shipped_pipeline_does_not_clip_latents():
    from diffusers import DDIMScheduler, DDPMScheduler

    cfg = load_config(None)
    shipped = make_inference_scheduler(cfg)
    assert DDIMScheduler.from_config(shipped.config).config.clip_sample is False
    assert DDPMScheduler.from_config(shipped.config).config.clip_sample is False


# A distinctive SD-style schedule: none of these values is a diffusers or recipe default.
SD_SCHEDULE = dict(beta_schedule="scaled_linear", beta_start=0.0013, beta_end=0.017, num_train_timesteps=500,
                   steps_offset=1, timestep_spacing="trailing", prediction_type="v_prediction")


def save_sd_folder(path: Path, **schedule) -> Path:
    """A tiny SD pipeline folder as the recipe reads it: unet/ and scheduler/scheduler_config.json."""
    from diffusers import PNDMScheduler

    build_unet(tiny_cfg()["unet"], latent_channels=4, latent_size=8, text_width=32).save_pretrained(path / "unet")
    PNDMScheduler(skip_prk_steps=True, **{**SD_SCHEDULE, **schedule}).save_pretrained(path / "scheduler")
    return path


def test_pretrained_sd_folder_sets_the_training_and_shipped_noise_schedule(tmp_path, caplog):
    from diffusers import DPMSolverMultistepScheduler, PNDMScheduler

    from pipelines.testing import tiny_components

    sd = save_sd_folder(tmp_path / "sd")
    cfg = tiny_cfg("train.max_train_steps=1", "train.use_ema=false", f"unet.pretrained={sd}")
    with caplog.at_level("INFO", logger="thermgen.train.unet"):
        report = train_unet(cfg, make_cache(), tmp_path / "out", progress=False)
    assert "noise schedule of unet.pretrained taken from" in caplog.text and "0.0013" in caplog.text
    assert report["noise_schedule"]["source"] == str(sd / "scheduler" / "scheduler_config.json")
    assert report["prediction_type"] == "v_prediction"  # the folder's: the config leaves it null

    folder = PNDMScheduler.from_pretrained(sd, subfolder="scheduler")
    training = make_noise_scheduler(cfg)
    np.testing.assert_array_equal(training.alphas_cumprod.numpy(), folder.alphas_cumprod.numpy())

    parts = tiny_components(mode="fused")
    build_pipeline(parts["vae"], parts["unet"], parts["text_encoder"], cfg).save_pretrained(tmp_path / "pipe")
    shipped = DPMSolverMultistepScheduler.from_pretrained(tmp_path / "pipe", subfolder="scheduler")
    for k, v in SD_SCHEDULE.items():
        assert shipped.config[k] == v, k
    np.testing.assert_array_equal(shipped.alphas_cumprod.numpy(), folder.alphas_cumprod.numpy())


def test_unet_subfolder_of_an_sd_folder_also_takes_its_schedule(tmp_path):
    sd = save_sd_folder(tmp_path / "sd")
    schedule = resolve_noise_schedule(tiny_cfg(f"unet.pretrained={sd / 'unet'}"))
    assert (schedule["beta_start"], schedule["beta_end"]) == (0.0013, 0.017)


def test_explicit_prediction_type_wins_over_the_sd_folders(tmp_path):
    sd = save_sd_folder(tmp_path / "sd")
    schedule = resolve_noise_schedule(tiny_cfg(f"unet.pretrained={sd}", "train.prediction_type=epsilon"))
    assert schedule["prediction_type"] == "epsilon" and schedule["beta_end"] == 0.017


def test_epsilon_under_an_sd_folders_cosine_schedule_is_refused(tmp_path):
    sd = save_sd_folder(tmp_path / "sd", beta_schedule="squaredcos_cap_v2")
    with pytest.raises(ConfigError, match=r"'train\.prediction_type'.*squaredcos_cap_v2"):
        resolve_noise_schedule(tiny_cfg(f"unet.pretrained={sd}", "train.prediction_type=epsilon"))


def test_bare_pretrained_unet_keeps_the_configs_schedule(tmp_path):
    build_unet(tiny_cfg()["unet"], latent_channels=4, latent_size=8, text_width=32).save_pretrained(tmp_path / "u")
    schedule = resolve_noise_schedule(tiny_cfg(f"unet.pretrained={tmp_path / 'u'}"))
    assert schedule["source"] == "config" and schedule["beta_schedule"] == "squaredcos_cap_v2"


def test_from_scratch_schedule_takes_the_train_betas():
    cfg = tiny_cfg("scheduler.beta_schedule=scaled_linear", "train.beta_start=0.002", "train.beta_end=0.015")
    for sched in (make_noise_scheduler(cfg), make_inference_scheduler(cfg)):
        assert (sched.config.beta_start, sched.config.beta_end) == (0.002, 0.015)
        assert sched.config.prediction_type == "v_prediction"  # null from scratch


def test_mirrored_patch_latents_are_the_patch_latents_of_the_mirrored_image():
    import torch.nn.functional as F

    from thermgen.train.unet import mirror_latents

    img = torch.rand(3, 1, 16, 16)
    z = F.pixel_unshuffle(img, 4)
    assert torch.equal(mirror_latents(z, 4), F.pixel_unshuffle(img.flip(-1), 4))
    assert not torch.equal(mirror_latents(z, 4), z.flip(-1))  # flipping the grid alone leaves each patch unmirrored
    assert torch.equal(mirror_latents(z, None), z.flip(-1))   # a convolutional VAE's latent grid


class _RecordingEncoder(torch.nn.Module):
    """A text encoder that records what it is asked to encode; states = one row per prompt's length."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def pooled(self):  # presence marks an encoder with a pooled embedding
        pass

    def encode_prompt(self, prompts, fine=None, device="cpu", return_pooled=False):
        self.seen += list(prompts)
        states = torch.tensor([[float(len(p))] * 4 for p in prompts])[:, None, :].repeat(1, 2, 1)
        return (states, states[:, 0]) if return_pooled else states


def test_mirrored_captions_swap_left_and_right_in_every_phrasing():
    from thermgen.train.unet import encode_mirrored

    enc = _RecordingEncoder()
    out = encode_mirrored(["A car on the left.", "Nothing."], None, enc,
                          variants=[["Left: a car.", "a car, leftmost"], ["none", "none at all"]], progress=False)
    assert enc.seen == ["A car on the right.", "Nothing.", "Right: a car.", "a car, rightmost", "none", "none at all"]
    assert out["mirror_text_states"].shape == (2, 2, 4) and out["mirror_pooled"].shape == (2, 4)
    assert out["mirror_variant_states"].shape == (2, 2, 2, 4) and out["mirror_variant_pooled"].shape == (2, 2, 4)


def test_random_flip_trains_on_the_mirrored_captions(tmp_path):
    cfg = tiny_cfg("train.max_train_steps=3", "train.random_flip=true", "train.use_ema=false")
    cache = make_cache()
    with pytest.raises(ValueError, match="random_flip.*mirror_text_states"):
        train_unet(cfg, cache, tmp_path / "none", progress=False)
    same = train_unet(cfg, {**cache, "mirror_text_states": cache["text_states"]}, tmp_path / "same", progress=False)
    other = train_unet(cfg, {**cache, "mirror_text_states": -cache["text_states"]}, tmp_path / "other",
                       progress=False)
    unflipped = train_unet(tiny_cfg("train.max_train_steps=3", "train.use_ema=false"), cache, tmp_path / "plain",
                           progress=False)
    assert same["final_loss"] != other["final_loss"]  # flipped samples read the mirrored captions
    assert same["final_loss"] != unflipped["final_loss"]  # and their latents are mirrored


def test_accumulation_ignores_a_loader_another_loop_left_open(tmp_path):
    """accelerate's GradientState is process-wide: a prepared loader that another training loop left at its last
    batch (end_of_dataloader True) must not make the UNet sync on every micro-step."""
    from accelerate import Accelerator
    from accelerate.state import GradientState

    cfg = tiny_cfg("train.max_train_steps=4", "train.gradient_accumulation_steps=2", "train.use_ema=false")
    cache = make_cache()
    clean = train_unet(cfg, cache, tmp_path / "clean", progress=False)

    other = Accelerator(cpu=True).prepare(torch.utils.data.DataLoader(torch.arange(4.0), batch_size=2))
    for i, _ in enumerate(other):
        if i == 1:
            break  # left at its last batch, its end() never run, as a loop that stops at its final step does
    assert GradientState().end_of_dataloader  # the stale state this test is about
    try:
        stale = train_unet(cfg, cache, tmp_path / "stale", progress=False)
    finally:
        other.end()
    assert stale["final_loss"] == clean["final_loss"]
    a, b = weights(tmp_path / "clean" / "unet"), weights(tmp_path / "stale" / "unet")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_write_safetensors_is_read_back_by_safetensors_and_open_safetensors(tmp_path):
    """write_safetensors (the UNet cache writer, one tensor at a time): load_file and open_safetensors read back every
    dtype, shape, empty, 0-d and non-contiguous tensor, and the file rewritten from its FileTensors is the same file;
    a dtype safetensors cannot hold is refused by name."""
    from thermgen.train.cache import open_safetensors, write_safetensors

    g = torch.Generator().manual_seed(0)
    tensors = {"latent_mean": torch.randn(5, 4, 8, 8, generator=g), "idx": torch.arange(7),
               "half": torch.randn(3, 2, generator=g).half(), "bf": torch.randn(2, 3, generator=g).bfloat16(),
               "flags": torch.tensor([True, False, True]), "empty": torch.zeros(0, 4),
               "strided": torch.randn(6, 4, generator=g).t(), "scalar": torch.tensor(1.5)}
    f = write_safetensors(tensors, tmp_path / "c.safetensors")
    import json
    import struct

    raw = f.read_bytes()
    header = json.loads(raw[8:8 + struct.unpack("<Q", raw[:8])[0]])
    for k, t in tensors.items():  # every tensor starts at an offset aligned to its element size
        assert header[k]["data_offsets"][0] % t.element_size() == 0, k
    for got in (load_file(str(f)), {k: v.load() for k, v in open_safetensors(f).items()}):
        assert set(got) == set(tensors)
        for k, t in tensors.items():
            assert got[k].dtype == t.dtype and torch.equal(got[k], t), k
    assert write_safetensors(open_safetensors(f), tmp_path / "again.safetensors").read_bytes() == raw
    with pytest.raises(ValueError, match="'c64'"):
        write_safetensors({"c64": torch.zeros(2, dtype=torch.complex64)}, tmp_path / "x.safetensors")


def test_training_cache_is_read_lazily_equal_to_load_file_and_read_only(tmp_path):
    """open_safetensors (the UNet cache loader): the same tensors as safetensors' load_file, read by rows; a write
    is refused and leaves the file as it was; a damaged file is named."""
    from thermgen.train.cache import open_safetensors

    g = torch.Generator().manual_seed(0)
    tensors = {"latent_mean": torch.randn(5, 4, 8, 8, generator=g), "idx": torch.arange(7),
               "half": torch.randn(3, 2, generator=g).half(), "bf": torch.randn(2, 3, generator=g).bfloat16(),
               "flags": torch.tensor([True, False, True]), "empty": torch.zeros(0, 4)}
    f = tmp_path / "cache.safetensors"
    save_file(tensors, str(f), metadata={"note": "x"})
    ref, lazy = load_file(str(f)), open_safetensors(f)
    assert set(lazy) == set(ref)
    for k in ref:
        assert lazy[k].dtype == ref[k].dtype and torch.equal(lazy[k].load(), ref[k]), k
    assert lazy["latent_mean"][torch.tensor([4, 0, 4])].shape == (3, 4, 8, 8)
    with pytest.raises(ValueError, match="read-only"):
        lazy["latent_mean"][0:1] = torch.zeros(1, 4, 8, 8)
    assert torch.equal(load_file(str(f))["latent_mean"], tensors["latent_mean"])

    bad = tmp_path / "bad.safetensors"

    def header(obj) -> bytes:
        text = json.dumps(obj).encode()
        return len(text).to_bytes(8, "little") + text

    for data, message in [
        (f.read_bytes()[:-8], "data_offsets .* inside the file"),
        (f.read_bytes() + b"extra", "the tensors end at byte"),
        ((10**9).to_bytes(8, "little") + b"{}", "header length"),
        (header([]) + b"", "not a JSON object"),
        (header({"a": {"dtype": "F32", "shape": [2]}}) + bytes(8), "tensor 'a': entry"),
        (header({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                 "b": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}) + bytes(8), "tensor '.': data_offsets"),
        (header({"a": {"dtype": "C64", "shape": [1], "data_offsets": [0, 8]}}) + bytes(8), "dtype 'C64'"),
    ]:
        bad.write_bytes(data)
        with pytest.raises(ValueError, match=r"bad\.safetensors: not a valid safetensors file: .*" + message):
            open_safetensors(bad)


def test_file_tensor_reads_the_rows_asked_for_as_torch_indexing_does(tmp_path):
    """FileTensor (the training loop's view of the cache): int, index-tensor, paired-index and slice reads equal
    torch's indexing of the same tensor; a row range is written in place; bad indices are named."""
    from thermgen.train.cache import FileTensor, open_safetensors, write_safetensors

    g = torch.Generator().manual_seed(1)
    t = {"v": torch.randn(6, 3, 2, 5, generator=g), "h": torch.randn(4, 7, generator=g).half(), "u": torch.zeros(1, 3)}
    f = write_safetensors(t, tmp_path / "c.safetensors")
    lazy = open_safetensors(f)
    v, ref = lazy["v"], t["v"]
    assert isinstance(v, FileTensor) and v.shape == ref.shape and v.dtype == ref.dtype and len(v) == 6
    idx, var = torch.tensor([5, 0, 5, -1]), torch.tensor([2, 0, 1, 2])
    assert torch.equal(v[idx], ref[idx]) and torch.equal(v[idx, var], ref[idx, var])
    assert torch.equal(v[3], ref[3]) and torch.equal(v[1:4], ref[1:4]) and torch.equal(v[[2]], ref[[2]])
    assert torch.equal(v[torch.tensor([], dtype=torch.long)], ref[torch.tensor([], dtype=torch.long)])
    assert torch.equal(lazy["h"][torch.tensor([3, 1])], t["h"][torch.tensor([3, 1])])
    assert torch.equal(lazy["u"][0], t["u"][0]) and torch.equal(v[np.int64(2)], ref[2])
    assert v[[]].shape == (0, 3, 2, 5)
    assert torch.equal(v.reshape(18, 10)[torch.tensor([17, 0])], ref.reshape(18, 10)[torch.tensor([17, 0])])
    assert torch.equal(torch.cat(list(v.chunks(max_bytes=100))), ref)
    assert v.std() == pytest.approx(float(ref.std()), rel=1e-6)
    with pytest.raises(IndexError, match="out of range"):
        v[torch.tensor([6])]
    with pytest.raises(IndexError, match="integers"):
        v[torch.tensor([True, False])]
    with pytest.raises(ValueError, match="read-only"):
        v[0:1] = ref[0:1]

    w = FileTensor(tmp_path / "raw.bin", (4, 2), torch.float32, writable=True)
    (tmp_path / "raw.bin").write_bytes(bytes(4 * 2 * 4))
    w[1:3] = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    assert torch.equal(w.load(), torch.tensor([[0.0, 0.0], [1.0, 2.0], [3.0, 4.0], [0.0, 0.0]]))
    with pytest.raises(ValueError, match=r"cannot write shape \(1, 2\) into rows 0:2"):
        w[0:2] = torch.zeros(1, 2)


def test_training_cache_encoded_to_disk_equals_the_one_encoded_in_memory(tmp_path):
    """The recipe encodes straight into files (RowStore), so no process holds the whole cache: the saved
    safetensors file is byte-identical to the one saved from in-memory tensors, variants and mirrors included, and
    training from it (rows read per batch) ends with the same weights as training from the tensors."""
    from thermgen.io import write_png8
    from thermgen.train.cache import RowStore
    from thermgen.train.unet import encode_mirrored, encode_training_set, encode_variants, save_cache
    from thermgen.train.vae import ImageFiles
    from pipelines.patch_autoencoder import PatchAutoencoder

    rng = np.random.default_rng(0)
    paths = []
    for i in range(10):
        paths.append(tmp_path / f"{i}.png")
        write_png8(paths[-1], (rng.random((16, 16)) * 255).astype(np.uint8))
    images = ImageFiles(paths, 16, center_crop=False)
    prompts = [f"a car on the left {'x' * i}" for i in range(10)]
    variants = [[f"left {i}", f"v{i} " * (i % 3 + 1)] for i in range(10)]
    ae, enc = PatchAutoencoder(patch_size=2), _RecordingEncoder()

    def encode(alloc=None):
        kw = {} if alloc is None else {"alloc": alloc}
        c = encode_training_set(images, prompts, None, ae, enc, batch_size=3, progress=False, **kw)
        c.update(encode_variants(variants, None, enc, batch_size=3, progress=False, **kw))
        c.update(encode_mirrored(prompts, None, enc, variants=variants, batch_size=3, progress=False, **kw))
        return c

    save_cache(encode(), tmp_path / "memory.safetensors")
    with RowStore(tmp_path / "work") as rows:
        on_disk = encode(rows)
        assert not any(isinstance(t, torch.Tensor) and t.shape[0] == 10 for t in on_disk.values())
        save_cache(on_disk, tmp_path / "disk.safetensors")
    assert not list((tmp_path / "work").iterdir())  # the row files are gone
    assert (tmp_path / "disk.safetensors").read_bytes() == (tmp_path / "memory.safetensors").read_bytes()

    cfg = tiny_cfg("train.max_train_steps=3", "train.use_ema=false", "train.random_flip=true",
                   "train.caption_variants=true", "captions.variants=2", "unet.cross_attention_dim=4", "unet.attention_head_dim=2")
    from thermgen.train.unet import load_cache

    eager = {k: v.load() for k, v in load_cache(tmp_path / "disk.safetensors").items()}
    a = train_unet(cfg, eager, tmp_path / "eager", progress=False)
    b = train_unet(cfg, tmp_path / "disk.safetensors", tmp_path / "lazy", progress=False)
    assert a["final_loss"] == b["final_loss"]
    wa, wb = weights(tmp_path / "eager" / "unet"), weights(tmp_path / "lazy" / "unet")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
