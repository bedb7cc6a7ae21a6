"""`python -m thermgen.generate`: PNGs (8/16-bit, colour-mapped), grid, reproducible seeds, clear errors."""

from __future__ import annotations

import json

import numpy as np
import PIL.Image
import pytest
from diffusers import DDIMScheduler

from pipelines.testing import tiny_pipeline
from thermgen.generate import main, make_scheduler

PROMPT = "An infrared thermal image of a parking lot full of cars at night"


@pytest.fixture(scope="module")
def pipeline_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("pipe")
    tiny_pipeline(mode="fused").save_pretrained(d)
    return d


def generate(pipeline_dir, out, *extra):
    return main(["--pipeline", str(pipeline_dir), "--prompt", PROMPT, "--steps", "2", "--out", str(out), *extra])


def test_writes_one_png_per_image_a_grid_and_a_summary(pipeline_dir, tmp_path):
    assert generate(pipeline_dir, tmp_path, "--n", "2", "--prompt", "A few pedestrians on a lawn", "--seed", "5") == 0
    summary = json.loads((tmp_path / "generation.json").read_text())
    files = [r["file"] for r in summary["images"]]
    assert files == ["prompt00_seed5.png", "prompt00_seed6.png", "prompt01_seed5.png", "prompt01_seed6.png"]
    for f in files:
        im = PIL.Image.open(tmp_path / f)
        assert im.mode == "L" and im.size == (16, 16)
    assert PIL.Image.open(tmp_path / "grid.png").size[0] > 100
    assert PIL.Image.open(tmp_path / "grid.png").mode == "L"  # grey images: a 1-channel grid


def test_same_seed_reproduces_and_images_do_not_depend_on_n(pipeline_dir, tmp_path):
    generate(pipeline_dir, tmp_path / "a", "--n", "1", "--seed", "3")
    generate(pipeline_dir, tmp_path / "b", "--n", "3", "--seed", "3", "--batch-size", "2")
    a = np.asarray(PIL.Image.open(tmp_path / "a" / "prompt00_seed3.png"))
    b = np.asarray(PIL.Image.open(tmp_path / "b" / "prompt00_seed3.png"))
    other = np.asarray(PIL.Image.open(tmp_path / "b" / "prompt00_seed4.png"))
    assert np.array_equal(a, b) and not np.array_equal(a, other)


def test_sixteen_bit_output_keeps_the_eight_bit_image(pipeline_dir, tmp_path):
    generate(pipeline_dir, tmp_path / "8", "--n", "1")
    generate(pipeline_dir, tmp_path / "16", "--n", "1", "--bits", "16")
    im16 = PIL.Image.open(tmp_path / "16" / "prompt00_seed0.png")
    assert im16.mode.startswith("I")  # 16-bit grey
    v16 = np.asarray(im16).astype(np.float64) / 65535
    v8 = np.asarray(PIL.Image.open(tmp_path / "8" / "prompt00_seed0.png")).astype(np.float64) / 255
    assert np.abs(v16 - v8).max() <= 0.5 / 255 + 1e-6


def test_colormap_writes_rgb(pipeline_dir, tmp_path):
    assert generate(pipeline_dir, tmp_path, "--n", "1", "--colormap", "ironbow") == 0
    assert PIL.Image.open(tmp_path / "prompt00_seed0.png").mode == "RGB"


def test_scheduler_flag_swaps_the_sampler(pipeline_dir, tmp_path):
    assert generate(pipeline_dir, tmp_path, "--n", "1", "--scheduler", "euler") == 0
    assert json.loads((tmp_path / "generation.json").read_text())["scheduler"] == "EulerDiscreteScheduler"


def test_contrast_prompt_steers_the_image_and_is_recorded(pipeline_dir, tmp_path):
    day = "An infrared thermal image of a parking lot full of cars by day"
    assert generate(pipeline_dir, tmp_path / "plain", "--n", "1") == 0
    assert generate(pipeline_dir, tmp_path / "c", "--n", "1", "--contrast-prompt", day) == 0
    assert generate(pipeline_dir, tmp_path / "c4", "--n", "1", "--contrast-prompt", day, "--contrast-scale", "4") == 0
    ims = [np.asarray(PIL.Image.open(tmp_path / d / "prompt00_seed0.png")).astype(int) for d in ("plain", "c", "c4")]
    assert np.abs(ims[0] - ims[1]).max() > 0 and np.abs(ims[1] - ims[2]).max() > 0
    rec = json.loads((tmp_path / "c4" / "generation.json").read_text())["images"][0]
    assert rec["contrast_prompt"] == day and rec["contrast_scale"] == 4.0
    assert "contrast_prompt" not in json.loads((tmp_path / "plain" / "generation.json").read_text())["images"][0]
    # with a fine prompt, the contrast takes its own fine prompt
    assert generate(pipeline_dir, tmp_path / "f", "--n", "1", "--prompt-fine", "warm engines", "--contrast-prompt", day,
                    "--contrast-prompt-fine", "cool engines") == 0
    rec = json.loads((tmp_path / "f" / "generation.json").read_text())["images"][0]
    assert rec["contrast_prompt_fine"] == "cool engines"


def test_guidance_interval_flag_reaches_the_pipeline_and_is_recorded(pipeline_dir, tmp_path):
    assert generate(pipeline_dir, tmp_path / "plain", "--n", "1") == 0
    assert generate(pipeline_dir, tmp_path / "all", "--n", "1", "--guidance-interval", "0", "1e12") == 0
    assert generate(pipeline_dir, tmp_path / "none", "--n", "1", "--guidance-interval", "1e11", "1e12") == 0
    ims = {d: np.asarray(PIL.Image.open(tmp_path / d / "prompt00_seed0.png")).astype(int) for d in ("plain", "all", "none")}
    assert np.array_equal(ims["plain"], ims["all"]) and np.abs(ims["plain"] - ims["none"]).max() > 0
    rec = json.loads((tmp_path / "none" / "generation.json").read_text())["images"][0]
    assert rec["guidance_interval"] == [1e11, 1e12]
    assert generate(pipeline_dir, tmp_path / "bad", "--n", "1", "--guidance-interval", "2", "1") == 2


def test_contrast_time_contrasts_each_prompt_with_its_time_of_day_swapped(pipeline_dir, tmp_path):
    from thermgen.ircap.swap import swap_time_words

    assert generate(pipeline_dir, tmp_path / "t", "--n", "1", "--prompt", "day, 60 m, five cars", "--contrast-time",
                    "--prompt-fine", "warm engines after dark") == 0
    recs = json.loads((tmp_path / "t" / "generation.json").read_text())["images"]
    assert [(r["prompt"], r["contrast_prompt"]) for r in recs] == [(PROMPT, swap_time_words(PROMPT)),
                                                                    ("day, 60 m, five cars", "night, 60 m, five cars")]
    assert all(r["contrast_prompt_fine"] == "warm engines by day" for r in recs)
    # the same image as with that contrast prompt written by hand
    assert swap_time_words(PROMPT) == "An infrared thermal image of a parking lot full of cars by day"
    assert generate(pipeline_dir, tmp_path / "t1", "--n", "1", "--contrast-time") == 0
    assert generate(pipeline_dir, tmp_path / "h", "--n", "1", "--contrast-prompt", swap_time_words(PROMPT)) == 0
    a, b = (np.asarray(PIL.Image.open(tmp_path / d / "prompt00_seed0.png")) for d in ("t1", "h"))
    assert np.array_equal(a, b)


def test_swap_time_words_swaps_every_time_phrase_and_nothing_else():
    from thermgen.ircap.swap import swap_time_words

    cases = {
        "a road at night": "a road by day",
        "Night scene, after dark, 100 m": "Day scene, by day, 100 m",
        "of a night-time scene with the cool night ground": "of a daytime scene with the cool day ground",
        "Find drone footage in the daytime, during daylight hours": "Find drone footage at nighttime, at night",
        "Which frame shows cars in the dark?": "Which frame shows cars in daylight?",
        "daylight, 30 deg": "night, 30 deg",
    }
    for text, want in cases.items():
        assert swap_time_words(text) == want
        assert swap_time_words(want) is not None
    for text in ("today, a sunny road on Sunday", "five cars, 60 m", "a darkened parking lot"):
        assert swap_time_words(text) is None


def test_make_scheduler_keeps_the_noise_schedule():
    base = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, prediction_type="v_prediction")
    dpm = make_scheduler("dpm++", base.config)
    assert type(dpm).__name__ == "DPMSolverMultistepScheduler"
    assert dpm.config.prediction_type == "v_prediction" and dpm.config.beta_end == 0.012


@pytest.mark.parametrize(
    "extra, named",
    [
        (["--scheduler", "warp-drive"], "warp-drive"),
        (["--colormap", "ironbow", "--bits", "16"], "--colormap"),
        (["--colormap", "no-such-map"], "colormap"),
        (["--n", "0"], "--n"),
        (["--height", "18"], "height"),
        (["--prompt-fine", "a", "--prompt-fine", "b"], "--prompt-fine"),
        (["--contrast-prompt", "a", "--contrast-prompt", "b"], "--contrast-prompt"),
        (["--contrast-scale", "2"], "--contrast-scale"),
        (["--contrast-prompt", "a", "--contrast-scale", "0"], "--contrast-scale"),
        (["--contrast-prompt", "a", "--contrast-scale", "nan"], "--contrast-scale"),
        (["--contrast-prompt", "a", "--prompt-fine", "f"], "--contrast-prompt-fine"),
        (["--contrast-prompt-fine", "a"], "--contrast-prompt-fine"),
        (["--contrast-time", "--contrast-prompt", "a"], "--contrast-time"),
        (["--contrast-time", "--prompt", "five cars, 60 m"], "states no time of day"),
    ],
)
def test_bad_flags_exit_2_naming_the_flag(pipeline_dir, tmp_path, capsys, extra, named):
    assert generate(pipeline_dir, tmp_path, *extra) == 2
    assert named in capsys.readouterr().err


def test_missing_pipeline_folder_is_named(tmp_path, capsys):
    assert main(["--pipeline", str(tmp_path / "nope"), "--prompt", PROMPT, "--out", str(tmp_path / "o")]) == 2
    assert str(tmp_path / "nope") in capsys.readouterr().err


def test_prompt_over_77_tokens_is_reported_once_with_the_dropped_words(pipeline_dir, tmp_path, capsys):
    long = PROMPT + ", " + "with a warm car " * 20 + "and one cold bicycle"
    assert main(["--pipeline", str(pipeline_dir), "--prompt", long, "--steps", "1", "--n", "3", "--batch-size", "1",
                 "--out", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "truncated" in line]
    assert len(lines) == 1 and lines[0].startswith("warning: ") and "and one cold bicycle" in lines[0]
    assert json.loads((tmp_path / "generation.json").read_text())["warnings"] == [lines[0][len("warning: "):]]
