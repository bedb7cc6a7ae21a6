"""ThermalDiffusionPipeline: determinism, schedulers, saving/loading offline, output types, input checks."""

from __future__ import annotations

import json

import numpy as np
import PIL.Image
import pytest
import torch
from diffusers import (
    DDIMScheduler,
    DiffusionPipeline,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
)

from pipelines import ThermalDiffusionPipeline, decode_thermal, encode_thermal
from pipelines.colormaps import apply_colormap, colormap_lut
from pipelines.testing import tiny_pipeline

PROMPT = "An infrared thermal image of a parking lot at night with several parked cars"
FINE = "Thermal infrared image showing warm car engines against cold asphalt"
STEPS = 3


def run(pipe, seed=0, **kwargs):
    kwargs.setdefault("prompt", PROMPT)
    kwargs.setdefault("num_inference_steps", STEPS)
    kwargs.setdefault("output_type", "np")
    return pipe(generator=torch.Generator().manual_seed(seed), **kwargs).images


@pytest.fixture(scope="module")
def pipe():
    return tiny_pipeline(mode="concat")


@pytest.fixture(scope="module")
def saved_dir(tmp_path_factory, pipe):
    d = tmp_path_factory.mktemp("thermal_pipeline")
    pipe.save_pretrained(d)
    return d


def test_same_seed_gives_identical_images(pipe):
    assert np.array_equal(run(pipe, seed=7), run(pipe, seed=7))


def test_different_seeds_give_different_images(pipe):
    assert np.abs(run(pipe, seed=1) - run(pipe, seed=2)).max() > 1e-3


def test_prompt_conditions_the_image(pipe):
    night = run(pipe, prompt="An infrared thermal image of an empty road at night")
    day = run(pipe, prompt="An infrared thermal image of a crowded square at noon")
    assert np.abs(night - day).max() > 1e-4


def test_fine_prompt_conditions_the_image_in_concat_mode(pipe):
    assert np.abs(run(pipe, prompt_fine=FINE) - run(pipe, prompt_fine="Thermal infrared image of cold water")).max() > 1e-4


def test_guidance_scale_one_skips_the_unconditional_branch():
    pipe = tiny_pipeline(mode="global")
    calls = []
    hook = pipe.unet.register_forward_hook(lambda m, args, out: calls.append(args[0].shape[0]))
    try:
        run(pipe, guidance_scale=1.0)
        run(pipe, guidance_scale=4.0)
    finally:
        hook.remove()
    assert calls == [1] * STEPS + [2] * STEPS


def test_batched_prompts_match_single_prompt_runs(pipe):
    gens = [torch.Generator().manual_seed(s) for s in (0, 1, 0, 1)]
    batch = pipe(["a warm person on grass", PROMPT], num_images_per_prompt=2, generator=gens,
                 num_inference_steps=STEPS, output_type="np").images
    single = run(pipe, seed=1, prompt=PROMPT)
    assert batch.shape == (4, 16, 16, 1)
    np.testing.assert_allclose(batch[3], single[0], atol=1e-5)  # prompt-major: (prompt 1, image 1) uses seed 1


@pytest.mark.parametrize("scheduler_cls", [DPMSolverMultistepScheduler, EulerDiscreteScheduler, DDIMScheduler])
def test_scheduler_swap_through_from_config(scheduler_cls):
    pipe = tiny_pipeline()
    reference = run(pipe)
    pipe.scheduler = scheduler_cls.from_config(pipe.scheduler.config)
    images = run(pipe)
    assert images.shape == reference.shape and np.isfinite(images).all()
    if scheduler_cls is DDIMScheduler:  # swapping back to the original sampler restores the original output
        np.testing.assert_array_equal(images, reference)
    else:
        assert np.abs(images - reference).max() > 1e-4


def test_saved_folder_records_tclip_text_encoder(saved_dir):
    index = json.loads((saved_dir / "model_index.json").read_text())
    assert index["_class_name"] == "ThermalDiffusionPipeline"
    assert index["text_encoder"] == ["tclip.text_encoder", "TCLIPTextEncoder"]
    assert index["vae"] == ["diffusers", "AutoencoderKL"]


def test_from_pretrained_reproduces_saved_pipeline_offline(pipe, saved_dir, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    loaded = ThermalDiffusionPipeline.from_pretrained(saved_dir)
    loaded.set_progress_bar_config(disable=True)
    np.testing.assert_array_equal(run(loaded, prompt_fine=FINE), run(pipe, prompt_fine=FINE))


def test_generic_diffusion_pipeline_loader_offline(pipe, saved_dir, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    loaded = DiffusionPipeline.from_pretrained(saved_dir)
    assert isinstance(loaded, ThermalDiffusionPipeline)
    loaded.set_progress_bar_config(disable=True)
    np.testing.assert_array_equal(run(loaded), run(pipe))


def test_output_type_pil_is_single_channel(pipe):
    images = run(pipe, output_type="pil", num_images_per_prompt=2)
    assert len(images) == 2 and all(isinstance(im, PIL.Image.Image) for im in images)
    assert {im.mode for im in images} == {"L"} and images[0].size == (16, 16)


def test_output_type_np_is_float_in_unit_range(pipe):
    images = run(pipe)
    assert images.shape == (1, 16, 16, 1) and images.dtype == np.float32
    assert images.min() >= 0.0 and images.max() <= 1.0


def test_output_type_pt_is_channel_first_tensor(pipe):
    images = run(pipe, output_type="pt")
    assert torch.is_tensor(images) and images.shape == (1, 1, 16, 16) and images.dtype == torch.float32
    np.testing.assert_allclose(images.permute(0, 2, 3, 1).numpy(), run(pipe), atol=1e-6)


def test_output_type_uint16_is_the_float_image_at_16_bits(pipe):
    images = run(pipe, output_type="uint16")
    assert images.dtype == np.uint16 and images.shape == (1, 16, 16, 1)
    np.testing.assert_array_equal(images, np.round(run(pipe) * 65535).astype(np.uint16))


def test_output_type_latent_returns_unet_latents(pipe):
    latents = run(pipe, output_type="latent")
    assert latents.shape == (1, 4, 8, 8)
    with torch.no_grad():
        decoded = decode_thermal(pipe.vae, latents)
    np.testing.assert_allclose(decoded.permute(0, 2, 3, 1).numpy(), run(pipe), atol=1e-6)


def test_colormap_renders_rgb(pipe):
    grey = run(pipe)[0, ..., 0]
    pil = run(pipe, output_type="pil", colormap="ironbow")[0]
    assert pil.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(pil), apply_colormap(grey, "ironbow"))
    assert run(pipe, colormap="inferno").shape == (1, 16, 16, 3)


def test_colormap_accepts_a_callable(pipe):
    red = lambda im: np.stack([np.round(im * 255), np.zeros_like(im), np.zeros_like(im)], -1).astype(np.uint8)  # noqa: E731
    rgb = np.asarray(run(pipe, output_type="pil", colormap=red)[0])
    assert rgb[..., 1:].max() == 0 and rgb[..., 0].max() > 0


@pytest.mark.parametrize("name", ["white-hot", "black-hot", "ironbow", "inferno"])
def test_pipeline_colormaps_match_thermgen_io(name):
    from thermgen.io import colormap_lut as io_lut

    np.testing.assert_array_equal(colormap_lut(name), io_lut(name))


def test_three_channel_vae_gives_single_channel_images():
    pipe = tiny_pipeline(vae_channels=3)
    images = run(pipe)
    assert images.shape == (1, 16, 16, 1)
    with torch.no_grad():
        latents = encode_thermal(pipe.vae, torch.rand(2, 1, 16, 16), sample=False)
        decoded = decode_thermal(pipe.vae, latents)
    assert latents.shape == (2, 4, 8, 8) and decoded.shape == (2, 1, 16, 16)


def test_callback_on_step_end_sees_every_step_and_can_replace_latents(pipe):
    seen = []

    def callback(p, i, t, kwargs):
        seen.append(i)
        return {"latents": torch.zeros_like(kwargs["latents"])} if i == STEPS - 1 else {}

    zeroed = run(pipe, callback_on_step_end=callback, output_type="latent")
    assert seen == list(range(STEPS)) and torch.count_nonzero(zeroed) == 0


def test_initial_latents_are_used(pipe):
    latents = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    a = pipe(PROMPT, latents=latents, num_inference_steps=STEPS, output_type="np").images
    b = pipe(PROMPT, latents=latents.clone(), num_inference_steps=STEPS, output_type="np").images
    np.testing.assert_array_equal(a, b)
    other = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(4))
    c = pipe(PROMPT, latents=other, num_inference_steps=STEPS, output_type="np").images
    assert not np.array_equal(a, c)  # the given latents, not a fresh draw, decide the image


def test_xformers_stays_off_without_cuda(pipe):
    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    assert pipe.enable_xformers_if_available() is False


@pytest.mark.parametrize(
    "kwargs, named",
    [
        ({"height": 18}, "height"),  # not a multiple of 4 (VAE x2, UNet x2)
        ({"width": 0}, "width"),
        ({"num_inference_steps": 0}, "num_inference_steps"),
        ({"guidance_scale": -1.0}, "guidance_scale"),
        ({"num_images_per_prompt": 0}, "num_images_per_prompt"),
        ({"output_type": "jpeg"}, "output_type"),
        ({"colormap": "no-such-map"}, "colormap"),
        ({"colormap": "ironbow", "output_type": "uint16"}, "colormap"),
        ({"prompt": 5}, "prompt"),
        ({"prompt": ["a", "b"], "prompt_fine": ["x", "y", "z"]}, "prompt_fine"),
        ({"prompt": ["a", "b"], "negative_prompt": ["x", "y", "z"]}, "negative_prompt"),
        ({"prompt": ["a", "b"], "negative_prompt": "x", "negative_prompt_fine": ["x", "y", "z"]}, "negative_prompt_fine"),
        ({"negative_prompt_fine": "x"}, "negative_prompt_fine"),
        ({"generator": [torch.Generator(), torch.Generator()]}, "generator"),
        ({"latents": torch.zeros(1, 4, 4, 4)}, "latents"),
        ({"callback_on_step_end_tensor_inputs": ["noise"]}, "callback_on_step_end_tensor_inputs"),
    ],
)
def test_bad_input_raises_naming_the_argument(pipe, kwargs, named):
    kwargs = {"prompt": PROMPT, "num_inference_steps": 1, **kwargs}
    with pytest.raises(ValueError, match=f"`{named}`"):
        pipe(**kwargs)


def test_negative_fine_prompt_is_the_negative_branchs_fine_input():
    """A contrastive negative (the same scene with one fact edited) has a fine caption of its own: the negative branch
    must encode exactly (negative_prompt, negative_prompt_fine), as precomputed embeddings of that pair give, pooled
    embedding included; without it the negative prompt serves as both."""
    pipe = tiny_pipeline(mode="fused", pooled=True)
    te = pipe.text_encoder
    neg, neg_fine = "An infrared thermal image of a road by day", "Thermal infrared image of sunlit asphalt"
    kw = dict(prompt_fine=FINE, guidance_scale=3.0)
    a = run(pipe, negative_prompt=neg, negative_prompt_fine=neg_fine, **kw)
    pe, pp = te.encode_prompt([PROMPT], [FINE], return_pooled=True)
    ne, npp = te.encode_prompt([neg], [neg_fine], return_pooled=True)
    b = run(pipe, prompt=None, prompt_embeds=pe, pooled_prompt_embeds=pp, negative_prompt_embeds=ne,
            negative_pooled_prompt_embeds=npp, guidance_scale=3.0)
    assert np.allclose(a, b, atol=1e-6)
    assert np.abs(a - run(pipe, negative_prompt=neg, **kw)).max() > 1e-4
    ne2, npp2 = te.encode_prompt([neg], [neg], return_pooled=True)
    c = run(pipe, prompt=None, prompt_embeds=pe, pooled_prompt_embeds=pp, negative_prompt_embeds=ne2,
            negative_pooled_prompt_embeds=npp2, guidance_scale=3.0)
    assert np.allclose(run(pipe, negative_prompt=neg, **kw), c, atol=1e-6)


def test_contrastive_guidance_adds_a_branch_along_the_edited_fact(monkeypatch):
    """noise = u + g (c - u) + s (c - k), u the empty negative, c the prompt, k the contrast prompt (each branch
    encoded with its own fine prompt), checked against the UNet's own predictions and inputs at every step."""
    pipe = tiny_pipeline(mode="fused", pooled=True)
    contrast, c_fine = "An infrared thermal image of a parking lot by day", "Thermal infrared image of sunlit asphalt"
    unet_io, step_in = [], []
    hook = pipe.unet.register_forward_hook(
        lambda m, args, kw, out: unet_io.append((kw["encoder_hidden_states"].clone(), out[0].clone())),
        with_kwargs=True)
    step = pipe.scheduler.step
    monkeypatch.setattr(pipe.scheduler, "step", lambda out, *a, **kw: step_in.append(out.clone()) or step(out, *a, **kw))
    try:
        with_c = run(pipe, num_inference_steps=2, prompt_fine=FINE, guidance_scale=3.0, contrast_prompt=contrast,
                     contrast_prompt_fine=c_fine, contrast_scale=2.0, output_type="latent")
    finally:
        hook.remove()
    te = pipe.text_encoder
    want = torch.cat([te.encode_prompt([""], [""]), te.encode_prompt([contrast], [c_fine]),
                      te.encode_prompt([PROMPT], [FINE])])
    assert len(unet_io) == len(step_in) == 2
    for (ctx, out), noise in zip(unet_io, step_in):
        assert torch.allclose(ctx, want, atol=1e-6)
        u, k, c = out.chunk(3)
        assert torch.allclose(noise, u + 3.0 * (c - u) + 2.0 * (c - k), atol=1e-6)
    monkeypatch.undo()
    plain = run(pipe, num_inference_steps=2, prompt_fine=FINE, guidance_scale=3.0, output_type="latent")
    assert torch.abs(with_c - plain).max() > 1e-4
    # several prompts and images per prompt: each image's contrast is its own prompt's, pooled inputs in branch order
    seen = []
    hook = pipe.unet.class_embedding.register_forward_hook(lambda m, args, out: seen.append(args[0].clone()))
    try:
        pipe(prompt=[PROMPT, "a road"], prompt_fine=[FINE, "asphalt"], contrast_prompt=[contrast, "a road by day"],
             contrast_prompt_fine=[c_fine, "sunlit asphalt"], contrast_scale=2.0, num_images_per_prompt=2,
             num_inference_steps=1, guidance_scale=3.0, output_type="latent")
    finally:
        hook.remove()
    pooled = lambda g, f: te.pooled(te.tokenize(g), te.tokenize(f)).repeat_interleave(2, dim=0)  # noqa: E731
    want = torch.cat([pooled(["", ""], ["", ""]), pooled([contrast, "a road by day"], [c_fine, "sunlit asphalt"]),
                      pooled([PROMPT, "a road"], [FINE, "asphalt"])])
    assert torch.allclose(seen[0], want, atol=1e-5)
    for bad in (dict(contrast_scale=1.0), dict(contrast_prompt=contrast),
                dict(contrast_prompt=contrast, contrast_scale=-1.0), dict(contrast_prompt_fine=c_fine),
                dict(contrast_prompt=contrast, contrast_scale=float("nan")),
                dict(contrast_prompt=contrast, contrast_scale=2.0, prompt_fine=FINE)):
        with pytest.raises(ValueError, match="contrast"):
            run(pipe, num_inference_steps=1, **bad)


def test_guidance_interval_guides_only_the_steps_whose_noise_level_lies_in_it(monkeypatch):
    """guidance_interval (low, high]: the steps whose sigma = sqrt((1 - alpha_bar) / alpha_bar) lies in it get every
    guidance branch (u + g (c - u) + s (c - k)); the others run the prompt's branch alone and step with it."""
    pipe = tiny_pipeline(mode="fused", pooled=True)
    contrast, c_fine = "An infrared thermal image of a parking lot by day", "Thermal infrared image of sunlit asphalt"
    kw = dict(num_inference_steps=4, prompt_fine=FINE, guidance_scale=3.0, contrast_prompt=contrast,
              contrast_prompt_fine=c_fine, contrast_scale=2.0, output_type="latent")
    pipe.scheduler.set_timesteps(4)
    ac = pipe.scheduler.alphas_cumprod.double()
    sig = [float(((1 - ac[int(t)]) / ac[int(t)]).sqrt()) for t in pipe.scheduler.timesteps]
    lo, hi = (sig[2] + sig[3]) / 2, (sig[0] + sig[1]) / 2  # steps 1 and 2 guided, 0 and 3 not
    batches, step_in = [], []
    hook = pipe.unet.register_forward_hook(lambda m, args, kw_, out: batches.append((out[0].shape[0], out[0].clone())),
                                           with_kwargs=True)
    step = pipe.scheduler.step
    monkeypatch.setattr(pipe.scheduler, "step", lambda out, *a, **k: step_in.append(out.clone()) or step(out, *a, **k))
    try:
        limited = run(pipe, guidance_interval=(lo, hi), **kw)
    finally:
        hook.remove()
        monkeypatch.undo()
    assert [b for b, _ in batches] == [1, 3, 3, 1]
    assert torch.equal(step_in[0], batches[0][1]) and torch.equal(step_in[3], batches[3][1])
    u, k, c = batches[1][1].chunk(3)
    assert torch.allclose(step_in[1], u + 3.0 * (c - u) + 2.0 * (c - k), atol=1e-6)
    assert pipe._guided_steps == 2
    everywhere = run(pipe, guidance_interval=(0.0, 1e12), **kw)
    assert torch.equal(everywhere, run(pipe, **kw)) and torch.abs(limited - everywhere).max() > 1e-4
    nowhere = run(pipe, guidance_interval=(1e11, 1e12), **kw)
    assert torch.equal(nowhere, run(pipe, **{**kw, "guidance_scale": 1.0, "contrast_prompt": None,
                                             "contrast_prompt_fine": None, "contrast_scale": 0.0}))
    for bad in ((1.0,), (2.0, 1.0), (-1.0, 1.0), (0.0, float("inf")), "0,1", (True, 2.0)):
        with pytest.raises(ValueError, match="guidance_interval"):
            run(pipe, num_inference_steps=1, guidance_interval=bad)
    # a scheduler without alphas_cumprod (no noise level to read) is named, not guessed at
    monkeypatch.setattr(pipe.scheduler, "alphas_cumprod", None)
    with pytest.raises(ValueError, match=f"guidance_interval.*{type(pipe.scheduler).__name__}"):
        run(pipe, num_inference_steps=1, guidance_interval=(0.0, 1.0))


# ---- pooled prompt embedding (unet.pooled_conditioning) ---------------------------------------------------
def test_pooled_conditioning_reaches_the_unet_and_round_trips(tmp_path):
    pipe = tiny_pipeline(mode="fused", pooled=True)
    assert pipe.takes_pooled
    seen = []
    hook = pipe.unet.class_embedding.register_forward_hook(lambda m, args, out: seen.append(args[0].clone()))
    try:
        a = run(pipe, prompt="An infrared thermal image of a road at night", guidance_scale=3.0)
    finally:
        hook.remove()
    # CFG: the empty prompt's pooled embedding first, the prompt's second; unit RMS.
    ids = pipe.text_encoder.tokenize(["", "An infrared thermal image of a road at night"])
    expect = pipe.text_encoder.pooled(ids)
    assert torch.allclose(seen[0], expect, atol=1e-5)
    assert torch.allclose(expect.pow(2).mean(-1), torch.ones(2), atol=1e-4)
    # The pooled input changes the output by itself: same token states, other pooled vector.
    pe = pipe.text_encoder.encode_prompt(["An infrared thermal image of a road at night"])
    ne = pipe.text_encoder.encode_prompt([""])
    pp, npp = pipe.text_encoder.encode_prompt(["a day scene"], return_pooled=True)[1], expect[:1]
    b = run(pipe, prompt=None, prompt_embeds=pe, negative_prompt_embeds=ne, pooled_prompt_embeds=pp,
            negative_pooled_prompt_embeds=npp, guidance_scale=3.0)
    assert np.abs(a - b).max() > 1e-4
    with pytest.raises(ValueError, match="pooled_prompt_embeds"):
        run(pipe, prompt=None, prompt_embeds=pe, negative_prompt_embeds=ne, guidance_scale=3.0)
    pipe.save_pretrained(tmp_path)
    again = ThermalDiffusionPipeline.from_pretrained(tmp_path)
    again.set_progress_bar_config(disable=True)
    assert again.takes_pooled
    assert np.allclose(run(again, prompt="An infrared thermal image of a road at night", guidance_scale=3.0), a, atol=1e-6)


def test_pooled_embeddings_given_with_a_prompt_are_repeated_per_image_and_checked():
    pipe = tiny_pipeline(mode="fused", pooled=True)
    te = pipe.text_encoder
    pooled = te.pooled(te.tokenize(["a night scene"]))
    seen = []
    hook = pipe.unet.class_embedding.register_forward_hook(lambda m, args, out: seen.append(args[0].shape))
    try:
        pipe("a night scene", pooled_prompt_embeds=pooled, num_images_per_prompt=2, num_inference_steps=1,
             guidance_scale=3.0, output_type="np")
    finally:
        hook.remove()
    assert seen[0][0] == 4  # (negative + positive) x 2 images
    with pytest.raises(ValueError, match=r"pooled prompt embeddings must be \(batch, 32\)"):
        pipe("x", pooled_prompt_embeds=torch.zeros(1, 5), num_inference_steps=1)
    with pytest.raises(ValueError, match="takes no pooled prompt embedding"):
        tiny_pipeline(mode="fused")("x", pooled_prompt_embeds=pooled, num_inference_steps=1)


LONG_PROMPT = "An infrared thermal image of a parking lot at night, " + "with a warm car " * 20 + "and one cold bicycle"


def test_prompt_over_77_tokens_warns_naming_the_dropped_words(pipe, caplog):
    assert pipe.truncated_text([PROMPT]) == [""]
    dropped = pipe.truncated_text([LONG_PROMPT])[0]
    assert dropped.endswith("and one cold bicycle")
    with caplog.at_level("WARNING", logger="pipelines.pipeline_thermal_diffusion"):
        run(pipe, prompt=[PROMPT, LONG_PROMPT], num_inference_steps=1)
    warnings = [r.getMessage() for r in caplog.records if "truncated" in r.getMessage()]
    assert len(warnings) == 1  # the negative (empty) prompt fits; the long prompt is named once
    assert "up to 77 tokens" in warnings[0] and "and one cold bicycle" in warnings[0]
    caplog.clear()
    with caplog.at_level("WARNING", logger="pipelines.pipeline_thermal_diffusion"):
        run(pipe, num_inference_steps=1)
    assert not [r for r in caplog.records if "truncated" in r.getMessage()]
