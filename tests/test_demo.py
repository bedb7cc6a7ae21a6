"""`python -m thermgen.demo`: every endpoint through gradio_client against a demo served on a free localhost port.

A tiny pipeline (16 x 16 px, 2 steps) and a tiny T-CLIP keep the whole module to seconds. The browser test is
tests/test_demo_browser.py.
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch

gradio = pytest.importorskip("gradio", reason='the demo extra is not installed (pip install -e ".[demo]")')
gradio_client = pytest.importorskip("gradio_client", reason='gradio_client is not installed (pip install -e ".[demo]")')
from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402

from pipelines.testing import tiny_pipeline  # noqa: E402
from thermgen import demo as demo_module  # noqa: E402
from thermgen.demo import DemoError, ThermalDemo, build_demo, free_port, launch  # noqa: E402

PROMPT = "An infrared thermal image of a parking lot at night, seen from 60 m, with four cars"
LONG_PROMPT = PROMPT + ", " + "with a warm car " * 20 + "and one cold bicycle"
REPO = Path(__file__).resolve().parents[1]


def generate_args(prompt=PROMPT, fine="", negative="", seed=5, randomize=False, steps=2, guidance=3.0, n=2,
                  colormap="white-hot", contrast="", contrast_w=2.0):
    return prompt, fine, negative, seed, randomize, steps, guidance, n, colormap, contrast, contrast_w


@pytest.fixture(scope="module")
def offsite():
    """Connections off this machine attempted while the module runs (the conftest tripwire refuses them)."""
    tried: list = []
    tripwire = socket.socket.connect

    def spy(self, address):
        try:
            return tripwire(self, address)
        except Exception as e:
            if type(e).__name__ == "NetworkUsed":
                tried.append(address)
            raise

    socket.socket.connect = spy
    yield tried
    socket.socket.connect = tripwire


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A tiny pipeline, a tiny T-CLIP and thermal images in every accepted format, plus a true-colour photo."""
    root = tmp_path_factory.mktemp("demo")
    tiny_pipeline(mode="fused").save_pretrained(root / "pipeline")
    yy, xx = np.mgrid[0:48, 0:64]
    images = root / "images"
    images.mkdir()
    for i in range(4):  # warm blobs at different places on a cool background
        img = 0.25 + 0.6 * np.exp(-((yy - 10 - 8 * i) ** 2 + (xx - 10 - 12 * i) ** 2) / (20.0 + 15 * i))
        PIL.Image.fromarray(np.round(img * 255).astype(np.uint8)).save(images / f"frame{i}.png")
    frame = 0.3 + 0.5 * np.exp(-((yy - 20) ** 2 + (xx - 40) ** 2) / 40.0)
    PIL.Image.fromarray(np.round(frame * 65535).astype(np.uint16)).save(root / "frame16.png")
    PIL.Image.fromarray(np.round(frame * 65535).astype(np.uint16)).save(root / "frame16.tif")
    PIL.Image.fromarray(np.round(frame * 255).astype(np.uint8)).save(root / "frame8.jpg", quality=95)
    rgb = np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    PIL.Image.fromarray(rgb).save(root / "photo.jpg")
    return root


@pytest.fixture(scope="module")
def tclip_dir(tiny_tclip, tmp_path_factory):
    return tiny_tclip.save(tmp_path_factory.mktemp("tclip") / "tclip")


@pytest.fixture(scope="module")
def served(files, tclip_dir, offsite):
    """(app, url): the demo on a free localhost port."""
    app = build_demo(files / "pipeline", tclip_dir, images_dir=files / "images", steps=2)
    url = launch(app, port=free_port(), block=False)
    yield app, url
    app.close()


@pytest.fixture
def client(served, tmp_path):
    return Client(served[1], verbose=False, download_files=str(tmp_path))


def test_serves_on_localhost_only_and_lists_every_endpoint(served, client):
    app, url = served
    assert url.startswith("http://127.0.0.1:")
    names = set(client.view_api(return_format="dict", print_info=False)["named_endpoints"])
    assert {"/generate", "/recolor", "/contrast_time", "/caption", "/search_images", "/search_captions"} <= names


def test_generate_returns_images_of_the_pipeline_size_the_seed_and_16_bit_pngs(client):
    gallery, seed, notice, pngs = client.predict(*generate_args(seed=5, n=3), api_name="/generate")
    assert seed == 5 and [item["caption"] for item in gallery] == ["seed 5", "seed 6", "seed 7"]
    for item in gallery:
        assert PIL.Image.open(item["image"]).size == (16, 16)
    assert [Path(p).name for p in pngs] == ["thermal_seed5.png", "thermal_seed6.png", "thermal_seed7.png"]
    for p in pngs:
        im = PIL.Image.open(p)
        assert im.mode.startswith("I") and im.size == (16, 16)  # 16-bit grey
        assert len(np.unique(np.asarray(im))) > 64  # more levels than 8 bits would keep on 256 pixels
    assert "3 images" in notice and "truncated" not in notice and "longer than" not in notice


def test_downloaded_pngs_equal_thermgen_generate_with_the_same_seed(client, files, tmp_path):
    from thermgen.generate import main

    _, _, _, pngs = client.predict(*generate_args(seed=11, n=2), api_name="/generate")
    out = tmp_path / "cli"
    assert main(["--pipeline", str(files / "pipeline"), "--prompt", PROMPT, "--seed", "11", "--n", "2", "--steps", "2",
                 "--guidance", "3.0", "--bits", "16", "--out", str(out)]) == 0
    for p, seed in zip(pngs, (11, 12)):
        cli = np.asarray(PIL.Image.open(out / f"prompt00_seed{seed}.png"))
        assert np.array_equal(np.asarray(PIL.Image.open(p)), cli)


def test_contrast_prompt_gives_what_thermgen_generate_gives_with_it(client, files, tmp_path):
    from thermgen.generate import main

    day = "An infrared thermal image of a parking lot by day"
    _, _, _, pngs = client.predict(*generate_args(seed=3, n=1, contrast=day, contrast_w=4.0), api_name="/generate")
    _, _, _, plain = client.predict(*generate_args(seed=3, n=1), api_name="/generate")
    out = tmp_path / "cli"
    assert main(["--pipeline", str(files / "pipeline"), "--prompt", PROMPT, "--seed", "3", "--n", "1", "--steps", "2",
                 "--guidance", "3.0", "--bits", "16", "--contrast-prompt", day, "--contrast-scale", "4",
                 "--out", str(out)]) == 0
    got = np.asarray(PIL.Image.open(pngs[0]))
    assert np.array_equal(got, np.asarray(PIL.Image.open(out / "prompt00_seed3.png")))
    assert not np.array_equal(got, np.asarray(PIL.Image.open(plain[0])))
    with pytest.raises(AppError, match="cannot be combined with a fine-grained prompt"):
        client.predict(*generate_args(n=1, fine="warm engines", contrast=day), api_name="/generate")
    with pytest.raises(AppError, match="Contrast weight must be a number above 0|less than minimum value 0.5"):
        client.predict(*generate_args(n=1, contrast=day, contrast_w=0.0), api_name="/generate")


def test_contrast_time_button_writes_the_prompt_with_day_and_night_swapped(client):
    assert client.predict("a parking lot at night, many cars", api_name="/contrast_time") == \
        "a parking lot by day, many cars"
    with pytest.raises(AppError, match="states no time of day"):
        client.predict("a parking lot, many cars", api_name="/contrast_time")


def test_randomized_seed_is_shown_and_reproduces_the_images(client):
    gallery, seed, _, pngs = client.predict(*generate_args(seed=0, randomize=True, n=1), api_name="/generate")
    assert isinstance(seed, (int, float)) and float(seed).is_integer() and gallery[0]["caption"] == f"seed {int(seed)}"
    _, again, _, pngs2 = client.predict(*generate_args(seed=int(seed), n=1), api_name="/generate")
    assert again == seed
    assert np.array_equal(np.asarray(PIL.Image.open(pngs[0])), np.asarray(PIL.Image.open(pngs2[0])))


def test_colormap_change_rerenders_the_shown_images_without_generating(client):
    gallery, _, _, pngs = client.predict(*generate_args(n=2), api_name="/generate")
    grey = [np.asarray(PIL.Image.open(item["image"]).convert("RGB")) for item in gallery]
    assert all(np.array_equal(g[..., 0], g[..., 1]) for g in grey)
    ironbow = client.predict("ironbow", api_name="/recolor")
    colour = [np.asarray(PIL.Image.open(item["image"]).convert("RGB")) for item in ironbow]
    assert [item["caption"] for item in ironbow] == [item["caption"] for item in gallery]
    assert all(not np.array_equal(c[..., 0], c[..., 1]) for c in colour)
    # the same generated values: ironbow of the 16-bit file's image
    from pipelines.colormaps import apply_colormap

    first = np.asarray(PIL.Image.open(pngs[0])).astype(np.float32) / 65535.0
    assert np.abs(apply_colormap(first, "ironbow").astype(int) - colour[0].astype(int)).max() <= 8
    back = client.predict("white-hot", api_name="/recolor")
    assert np.array_equal(np.asarray(PIL.Image.open(back[0]["image"]).convert("RGB")), grey[0])


def test_prompt_over_77_tokens_is_generated_with_a_notice_naming_the_dropped_words(client):
    gallery, _, notice, _ = client.predict(*generate_args(prompt=LONG_PROMPT, n=1), api_name="/generate")
    assert len(gallery) == 1
    assert "longer than 77 tokens" in notice and "and one cold bicycle" in notice


@pytest.mark.parametrize(
    "change, message",
    [
        ({"prompt": "   "}, "Enter a prompt"),
        # sliders: gradio 6 checks their range itself ("Value 0 is less than minimum value 1."); else the demo does
        ({"steps": 0}, "Steps must be a whole number from 1 to 150|less than minimum value 1"),
        ({"steps": 1000}, "Steps must be a whole number from 1 to 150|greater than maximum value 150"),
        ({"steps": 2.5}, "Steps must be a whole number"),
        ({"n": 9}, "Number of images must be a whole number from 1 to 8|greater than maximum value 8"),
        ({"guidance": -1.0}, "Guidance scale must be a number from 0 to 20|less than minimum value 0"),
        ({"seed": -3}, "Seed must be a whole number from 0 to 4294967295"),
        ({"colormap": "rainbow"}, "rainbow"),
    ],
)
def test_bad_generate_input_gets_a_readable_message_and_the_server_keeps_serving(client, change, message):
    with pytest.raises(AppError, match=message):
        client.predict(*generate_args(**change), api_name="/generate")
    gallery, *_ = client.predict(*generate_args(n=1), api_name="/generate")
    assert len(gallery) == 1


@pytest.mark.parametrize("name", ["frame16.png", "frame16.tif", "frame8.jpg", "images/frame0.png"])
def test_caption_returns_both_captions_and_the_facts_they_rest_on(client, files, name):
    preview, global_cap, fine_cap, facts, measurements = client.predict(
        handle_file(str(files / name)), "night", "60", "90", api_name="/caption")
    assert global_cap.startswith("An infrared thermal image") and "60 m" in global_cap
    assert fine_cap.startswith("Thermal infrared image")
    rows = {row[0]: row[1] for row in facts["data"]}
    assert rows["time_of_day"] == "night" and rows["view"] == "nadir" and "contrast" in rows
    assert set(measurements["image"]) >= {"p5", "p95", "spread"}
    assert PIL.Image.open(preview).size == (64, 48)


def test_caption_without_metadata_states_only_what_it_measures(client, files):
    _, global_cap, _, facts, _ = client.predict(handle_file(str(files / "frame16.png")), "unknown", "", " ",
                                                api_name="/caption")
    names = {row[0] for row in facts["data"]}
    assert "time_of_day" not in names and "altitude" not in names and " m," not in global_cap


@pytest.mark.parametrize(
    "args, message",
    [
        (("photo.jpg", "day", "", ""), "photo.jpg is a true-colour image"),
        (("frame16.png", "day", "-5", ""), "Altitude must be a number in metres above ground"),
        (("frame16.png", "day", "high", ""), "Altitude must be a number"),
        (("frame16.png", "day", "", "120"), "View angle must be a number in degrees from 0 (horizon) to 90"),
        ((None, "day", "", ""), "Upload a thermal image"),
    ],
)
def test_bad_caption_input_gets_a_readable_message(client, files, args, message):
    name, *rest = args
    with pytest.raises(AppError, match=re.escape(message)):
        client.predict(handle_file(str(files / name)) if name else None, *rest, api_name="/caption")
    assert client.predict(handle_file(str(files / "frame16.png")), "day", "", "", api_name="/caption")[1]


def _expected_image_order(model, folder: Path, query: str) -> list[str]:
    """The ranking computed directly with tclip's API, independently of the demo."""
    from tclip import load_thermal_image

    paths = sorted(folder.glob("*.png"))
    with torch.no_grad():
        imgs = torch.cat([model.encode_image(torch.from_numpy(load_thermal_image(p))[None, None], "dual")
                          for p in paths])
        txt = model.encode_text([query], variant="tclip-global")[0]
    scores = (imgs @ txt).tolist()
    assert len(set(round(s, 5) for s in scores)) == len(scores)  # distinct scores: the order is well defined
    return [p.name for _, p in sorted(zip(scores, paths), key=lambda t: -t[0])]


def test_text_query_ranks_the_folder_as_tclip_does(client, files, tiny_tclip):
    query = "An infrared thermal image of a warm person in the upper left at night"
    gallery, table, notice = client.predict(query, str(files / "images"), [], 3, api_name="/search_images")
    expected = _expected_image_order(tiny_tclip, files / "images", query)
    assert [row[1] for row in table["data"]] == expected[:3]
    assert [row[0] for row in table["data"]] == [1, 2, 3] and len(gallery) == 3
    scores = [row[2] for row in table["data"]]
    assert scores == sorted(scores, reverse=True) and notice == ""


def test_uploaded_images_are_ranked_instead_of_the_folder(client, files, tiny_tclip):
    query = "cars"
    uploads = [handle_file(str(p)) for p in sorted((files / "images").glob("*.png"))]
    _, table, _ = client.predict(query, "", uploads, 10, api_name="/search_images")
    assert [row[1] for row in table["data"]] == _expected_image_order(tiny_tclip, files / "images", query)


def test_image_ranks_captions_as_tclip_does(client, files, tiny_tclip):
    from tclip import load_thermal_image

    captions = [p for p, _ in demo_module.EXAMPLES]
    table, notice = client.predict(handle_file(str(files / "frame16.png")), "\n".join(captions + ["", captions[0]]), 5,
                                   api_name="/search_captions")
    with torch.no_grad():
        pixels = torch.from_numpy(load_thermal_image(files / "frame16.png"))[None, None]
        img = tiny_tclip.encode_image(pixels, "dual")[0]
        txt = tiny_tclip.encode_text(captions, variant="tclip-global")
    expected = [captions[i] for i in torch.argsort(txt @ img, descending=True).tolist()]
    assert [row[1] for row in table["data"]] == expected  # blank lines and duplicates dropped
    assert notice == ""


@pytest.mark.parametrize(
    "api, args, message",
    [
        ("/search_images", ("", "{images}", [], 3), "Enter a text query"),
        ("/search_images", ("cars", "{images}/nope", [], 3), "no such folder"),
        ("/search_images", ("cars", "{images}/empty", [], 3), "no images"),
        ("/search_images", ("cars", "{root}/pipeline", [], 3), "Search reads folders inside"),
        ("/search_images", ("cars", "{images}/../pipeline", [], 3), "Search reads folders inside"),
        ("/search_captions", ("{root}/photo.jpg", "a caption", 3), "photo.jpg is a true-colour image"),
        ("/search_captions", ("{root}/frame16.png", "\n \n", 3), "Give at least one caption"),
    ],
)
def test_bad_search_input_gets_a_readable_message(client, files, api, args, message):
    def fill(a):
        if isinstance(a, str) and "{" in a:
            text = a.format(root=files, images=files / "images")
            return handle_file(text) if text.endswith((".jpg", ".png")) else text
        return a

    (files / "images" / "empty").mkdir(exist_ok=True)
    with pytest.raises(AppError, match=re.escape(message)):
        client.predict(*map(fill, args), api_name=api)


def test_search_reads_no_server_folder_when_served_beyond_this_machine(files, tclip_dir):
    from thermgen.demo import DemoError, ThermalDemo

    td = ThermalDemo(files / "pipeline", tclip_dir)
    assert len(td._image_paths(files / "images", None)) >= 2  # localhost, no --images: any folder
    td.server_folders = False  # what main() sets for --host beyond loopback or --share
    with pytest.raises(DemoError, match="does not read folders on the server"):
        td._image_paths(files / "images", None)


def test_a_colour_image_in_the_folder_is_named(client, files, tmp_path):
    folder = files / "images" / "mixed"  # inside the demo's --images folder
    folder.mkdir(exist_ok=True)
    (folder / "ok.png").write_bytes((files / "images" / "frame0.png").read_bytes())
    (folder / "photo.jpg").write_bytes((files / "photo.jpg").read_bytes())
    with pytest.raises(AppError, match="photo.jpg is a true-colour image"):
        client.predict("cars", str(folder), [], 3, api_name="/search_images")


def test_long_search_query_gets_a_notice(client, files):
    _, table, notice = client.predict(LONG_PROMPT, str(files / "images"), [], 2, api_name="/search_images")
    assert len(table["data"]) == 2 and "and one cold bicycle" in notice


def test_no_connection_left_this_machine(served, offsite):
    assert offsite == []


# ------------------------------------------------------------------ without a server


def test_no_model_shipped_the_demo_says_how_to_get_one(monkeypatch, files, tmp_path):
    from thermgen import pretrained

    monkeypatch.setattr(pretrained, "MODELS_DIR", tmp_path / "none")
    td = ThermalDemo()
    assert td.pipe is None and td.tclip is None
    with pytest.raises(DemoError, match=r"python -m thermgen.train.*--pipeline RUN/pipeline"):
        td.generate(PROMPT)
    with pytest.raises(DemoError, match="--tclip RUN/tclip"):
        td.search_images("cars", tmp_path)
    assert td.caption(str(files / "frame16.png"))["global_caption"]  # Caption needs no model
    page = build_demo(demo=td)  # the page still builds, showing how to get a model
    assert page.thermal_demo is td


def test_tclip_beside_a_recipe_pipeline_is_found(files, tclip_dir, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "pipeline").symlink_to(files / "pipeline")
    (run / "tclip").symlink_to(tclip_dir)
    assert ThermalDemo(run / "pipeline").tclip_dir == run / "tclip"


def test_cli_without_gradio_says_how_to_install_it(monkeypatch, capsys):
    import importlib.util

    find = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "gradio" else find(name, *a))
    assert demo_module.main([]) == 2
    assert 'pip install -e ".[demo]"' in capsys.readouterr().err


def test_cli_rejects_a_folder_that_is_not_a_pipeline(tmp_path, capsys):
    assert demo_module.main(["--pipeline", str(tmp_path)]) == 2
    assert "not a pipeline folder" in capsys.readouterr().err


def test_core_never_imports_gradio():
    """Only the demo modules may import gradio (and selenium); `import thermgen` must not."""
    offenders = []
    for path in [*REPO.glob("thermgen/**/*.py"), *REPO.glob("pipelines/**/*.py"), *REPO.glob("tclip/**/*.py")]:
        if path.name in ("demo.py", "demo_browser.py"):
            continue
        if re.search(r"^\s*(import|from)\s+(gradio|selenium)\b", path.read_text(), re.MULTILINE):
            offenders.append(str(path.relative_to(REPO)))
    assert offenders == []
    code = "import sys, thermgen; assert 'gradio' not in sys.modules; print(thermgen.__version__)"
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True).returncode == 0


def test_pyproject_declares_the_demo_extra():
    text = (REPO / "pyproject.toml").read_text()
    assert re.search(r'^demo = \[.*"gradio>=5".*"gradio_client".*\]', text, re.MULTILINE)
