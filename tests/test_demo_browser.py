"""The demo in a real browser: headless Chromium (selenium) types a prompt, clicks Generate, waits for the images,
checks their pixel size, switches the colormap and sees the pixels change, and saves a screenshot.

Skipped, with the reason shown by ``pytest -ra``, when selenium, Chromium or chromedriver is missing (Debian:
``apt-get install chromium chromium-driver``; ``.ci/run`` installs them). The code that drives the page is
:mod:`thermgen.demo_browser`, the same that takes the README screenshot (``python -m thermgen.demo --screenshot``).
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlparse

import pytest

pytest.importorskip("gradio", reason='the demo extra is not installed (pip install -e ".[demo]")')

from pipelines.testing import tiny_pipeline  # noqa: E402
from thermgen import demo_browser as web  # noqa: E402
from thermgen.demo import build_demo, free_port, launch  # noqa: E402

PROMPT = "An infrared thermal image of a scene below a drone, looking straight down from 120 m, at night-time"
IMAGES = 4  # the page's default number of images


@pytest.fixture(scope="module")
def browser():
    try:
        web.find_browser()
        driver = web.start_browser()
    except web.BrowserUnavailable as e:
        pytest.skip(f"no headless browser for the demo test: {e}")
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def page(browser, tmp_path_factory):
    """(driver, url, pipeline image size): the demo with a tiny pipeline (16 x 16 px, 2 steps), opened."""
    folder = tmp_path_factory.mktemp("browser") / "pipeline"
    tiny_pipeline(mode="fused").save_pretrained(folder)
    app = build_demo(folder, steps=2, n_images=IMAGES)
    url = launch(app, port=free_port(), block=False)
    web.open_demo(browser, url)
    yield browser, url, app.thermal_demo.image_size
    app.close()


def test_generate_in_the_browser_shows_images_of_the_model_size_and_the_colormap_changes_them(page, tmp_path, capsys):
    driver, url, (height, width) = page
    seconds, grey = web.generate(driver, PROMPT, expect=IMAGES, timeout=120)
    report = f"Generate click -> {IMAGES} images on screen: {seconds:.2f} s (tiny pipeline, 2 steps, headless Chromium)"
    assert len(grey) == IMAGES
    assert all((p["width"], p["height"]) == (width, height) for p in grey)
    assert all(p["max_channel_difference"] == 0 for p in grey)  # white-hot: grey pixels

    colour = web.choose_colormap(driver, "ironbow")
    assert len(colour) == IMAGES and all((p["width"], p["height"]) == (width, height) for p in colour)
    assert all(p["max_channel_difference"] > 30 for p in colour)  # ironbow: coloured pixels, same images

    shot = Path(os.environ.get("THERMGEN_DEMO_SCREENSHOT", tmp_path / "demo.png"))
    size = web.save_screenshot(driver, shot)
    with capsys.disabled():  # shown in the test log even when the test passes
        print(f"\n{report}; screenshot {shot} ({size / 1024:.0f} KB)")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and size <= web.MAX_SCREENSHOT_BYTES
    assert web.error_messages(driver) == []


def test_an_empty_prompt_shows_a_message_in_the_page_and_the_page_keeps_working(page):
    from selenium.webdriver.common.by import By

    driver, _, _ = page
    web.set_textbox(driver, "prompt", "   ")
    driver.find_element(By.ID, "generate").click()
    web._wait(driver, lambda d: any("Enter a prompt" in m for m in web.error_messages(d)), 30, "the error message")
    seconds, shown = web.generate(driver, PROMPT, expect=IMAGES, timeout=120)
    assert len(shown) == IMAGES


def test_the_page_loads_nothing_from_other_hosts(page):
    driver, url, _ = page
    host = urlparse(url).hostname
    foreign = [u for u in web.page_requests(driver) if urlparse(u).scheme in ("http", "https")
               and urlparse(u).hostname not in (host, "localhost", "127.0.0.1")]
    assert foreign == []


def test_packaged_model_in_the_browser_prints_click_to_images_time(browser, tmp_path, capsys):
    """The issue's figure: the shipped model, 4 images at the page's default steps, on this machine (printed)."""
    from thermgen.demo import DEFAULT_STEPS
    from thermgen.pretrained import pretrained_path

    try:
        folder = pretrained_path()
    except FileNotFoundError as e:
        pytest.skip(f"no packaged model to time: {e}")
    app = build_demo(folder)
    try:
        url = launch(app, port=free_port(), block=False)
        web.open_demo(browser, url)
        seconds, grey = web.generate(browser, PROMPT, expect=IMAGES, timeout=300)
        assert len(grey) == IMAGES and all((p["width"], p["height"]) == (64, 64) for p in grey)
        with capsys.disabled():
            print(f"\npackaged model {folder.name}: Generate click -> {IMAGES} images on screen in {seconds:.2f} s "
                  f"({DEFAULT_STEPS} steps, {os.cpu_count()} CPU cores, headless Chromium)")
    finally:
        app.close()
