"""Drive the demo page (``python -m thermgen.demo``) in headless Chromium, as a person would: for its browser test
and for the README screenshot (``python -m thermgen.demo --screenshot docs/demo.png``), one code path for both.

Needs ``selenium`` (the dev extra) and a Chromium with its driver (Debian: ``apt-get install chromium
chromium-driver``). Nothing is downloaded: the browser and driver are found on this machine (``$CHROMIUM`` /
``$CHROMEDRIVER`` or the PATH) and Selenium Manager is kept offline. :func:`find_browser` raises
:class:`BrowserUnavailable` saying what is missing.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
DRIVERS = ("chromedriver", "chromium-driver")
WINDOW = (1280, 900)
MAX_SCREENSHOT_BYTES = 200_000
SCREENSHOT_PROMPT = ("An infrared thermal image of a scene below a drone, seen from 60 m at a steep 70° angle, "
                     "at night in clear weather, with two people, one in the lower left and one in the upper right.")

# What the gallery shows, read in one go (elements re-rendered between two WebDriver calls cannot go stale): for every
# image its URL, natural size and pixels read back through a canvas (same origin, so not tainted), or null while an
# image is still loading. The pixels are what shows that a colormap change changed the picture, not only the file.
_GALLERY_JS = """
const imgs = Array.from(document.querySelectorAll('#gallery img'));
if (imgs.some(img => !img.complete || img.naturalWidth === 0)) return null;
return imgs.map(img => {
  const c = document.createElement('canvas');
  c.width = img.naturalWidth; c.height = img.naturalHeight;
  const ctx = c.getContext('2d');
  ctx.drawImage(img, 0, 0);
  const d = ctx.getImageData(0, 0, c.width, c.height).data;
  let colour = 0, sum = 0;
  for (let i = 0; i < d.length; i += 4) {
    colour = Math.max(colour, Math.abs(d[i] - d[i + 1]), Math.abs(d[i] - d[i + 2]));
    sum += d[i] + d[i + 1] + d[i + 2];
  }
  return {src: img.src, width: c.width, height: c.height, max_channel_difference: colour,
          mean: sum / (d.length / 4 * 3)};
});
"""


class BrowserUnavailable(RuntimeError):
    """No headless browser here; the message says what is missing and how to install it."""


def find_browser() -> tuple[str, str]:
    """``(chromium binary, chromedriver)`` paths. Raises :class:`BrowserUnavailable` naming what is missing."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        raise BrowserUnavailable('selenium is not installed (pip install -e ".[dev]")') from None
    browser = os.environ.get("CHROMIUM") or next(filter(None, map(shutil.which, BROWSERS)), None)
    driver = os.environ.get("CHROMEDRIVER") or next(filter(None, map(shutil.which, DRIVERS)), None)
    found = (("chromium", browser), ("chromedriver", driver))
    missing = [f"{name} ({path} not found)" if path else name
               for name, path in found if not (path and os.path.isfile(path))]
    if missing:
        raise BrowserUnavailable(f"no {' and no '.join(missing)} on this machine (Debian: apt-get install chromium "
                                 "chromium-driver; or set $CHROMIUM / $CHROMEDRIVER)")
    return browser, driver


def start_browser(window: tuple[int, int] = WINDOW):
    """A headless Chromium WebDriver (offline-friendly flags; ``--no-sandbox`` as CI runs as root)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    browser, driver = find_browser()
    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager must not fetch drivers or browsers
    os.environ.setdefault("SE_AVOID_STATS", "true")
    opts = webdriver.ChromeOptions()
    opts.binary_location = browser
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 f"--window-size={window[0]},{window[1]}", "--force-device-scale-factor=1", "--hide-scrollbars",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-default-apps", "--no-first-run", "--disable-extensions", "--lang=en-US"):
        opts.add_argument(flag)
    try:
        return webdriver.Chrome(service=Service(executable_path=driver), options=opts)
    except Exception as e:  # a broken install (driver/browser versions differ, missing libraries)
        raise BrowserUnavailable(f"Chromium did not start ({browser}, {driver}): {str(e).splitlines()[0]}") from None


def _wait(driver, condition, timeout: float, what: str):
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.05).until(condition)
    except TimeoutException:
        raise TimeoutError(f"the page did not show {what} within {timeout:g} s") from None


def open_demo(driver, url: str, timeout: float = 60.0) -> None:
    """Load the demo and wait until the Generate button can be clicked."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC

    driver.get(url)
    _wait(driver, EC.element_to_be_clickable((By.ID, "generate")), timeout, "the Generate button")


def gallery(driver) -> list[dict[str, Any]] | None:
    """The images the Generate tab's gallery shows: ``[{src, width, height, max_channel_difference, mean}]``
    (natural size; channel difference 0: grey pixels), or None while one is still loading."""
    return driver.execute_script(_GALLERY_JS)


def _wait_gallery(driver, expect: int, old: set[str], timeout: float, what: str) -> list[dict[str, Any]]:
    """Wait until the gallery shows ``expect`` loaded images, none of them with a URL in ``old``; return them."""
    def ready(d):
        shown = gallery(d)
        return shown if shown and len(shown) == expect and not ({im["src"] for im in shown} & old) else False

    return _wait(driver, ready, timeout, what)


def set_textbox(driver, elem_id: str, text: str) -> None:
    from selenium.webdriver.common.by import By

    box = driver.find_element(By.CSS_SELECTOR, f"#{elem_id} textarea, #{elem_id} input")
    box.clear()
    box.send_keys(text)


def generate(driver, prompt: str, expect: int, timeout: float = 600.0) -> tuple[float, list[dict[str, Any]]]:
    """Type ``prompt``, click Generate, wait until ``expect`` new images are on screen. Returns the seconds from the
    click to the last image decoded, and the images (see :func:`gallery`)."""
    from selenium.webdriver.common.by import By

    before = {im["src"] for im in gallery(driver) or []}
    set_textbox(driver, "prompt", prompt)
    button = driver.find_element(By.ID, "generate")
    t0 = time.perf_counter()
    button.click()
    shown = _wait_gallery(driver, expect, before, timeout, f"{expect} new images after clicking Generate")
    return time.perf_counter() - t0, shown


def choose_colormap(driver, name: str, timeout: float = 30.0) -> list[dict[str, Any]]:
    """Click the colormap radio button ``name``, wait until the gallery shows its images re-rendered; return them."""
    from selenium.webdriver.common.by import By

    before = gallery(driver) or []
    labels = driver.find_elements(By.CSS_SELECTOR, "#colormap label")
    label = next((lab for lab in labels if lab.text.strip() == name), None)
    if label is None:
        raise ValueError(f"no colormap {name!r} on the page (found {[lab.text for lab in labels]})")
    label.click()
    old = {im["src"] for im in before}
    return _wait_gallery(driver, len(before), old, timeout, f"the images re-rendered as {name}")


def page_requests(driver) -> list[str]:
    """URLs of every resource the page loaded (scripts, styles, fonts, images, API calls)."""
    return driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")


def error_messages(driver) -> list[str]:
    """Texts of the error toasts the page shows."""
    from selenium.webdriver.common.by import By

    return [e.text for e in driver.find_elements(By.CSS_SELECTOR, ".toast-body.error, [data-testid='toast-body']")
            if e.text.strip()]


def save_screenshot(driver, path: str | Path, max_bytes: int = MAX_SCREENSHOT_BYTES) -> int:
    """Save the viewport as a PNG; over ``max_bytes``, re-save it with a 256-colour palette. Returns its size."""
    from io import BytesIO

    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    png = driver.get_screenshot_as_png()
    if len(png) > max_bytes:
        im = Image.open(BytesIO(png)).convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
        buf = BytesIO()
        im.save(buf, format="PNG", optimize=True)
        png = buf.getvalue()
    path.write_bytes(png)
    return len(png)


def screenshot(url: str, path: str | Path, prompt: str = SCREENSHOT_PROMPT, colormap: str = "ironbow",
               images: int | None = None) -> dict[str, Any]:
    """Open the demo at ``url``, generate from ``prompt`` with the page's settings, switch to ``colormap``, save a
    screenshot to ``path``. Returns ``{"seconds": click to images on screen, "images", "bytes"}``."""
    driver = start_browser()
    try:
        open_demo(driver, url)
        if images is None:
            from selenium.webdriver.common.by import By

            images = int(float(driver.find_element(By.CSS_SELECTOR, "#n input[type=number]").get_attribute("value")))
        seconds, _ = generate(driver, prompt, images)
        if colormap:
            choose_colormap(driver, colormap)
        size = save_screenshot(driver, path)
    finally:
        driver.quit()
    return {"seconds": seconds, "images": images, "bytes": size}
