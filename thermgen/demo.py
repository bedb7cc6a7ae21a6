"""``python -m thermgen.demo``: try thermgen in a browser (a Gradio app) before scripting it.

    python -m thermgen.demo [--pipeline RUN/pipeline] [--tclip RUN/tclip] [--images DIR] [--port 7860]

then open http://127.0.0.1:7860. Three tabs:

* **Generate**: prompt, optional fine-grained, negative and contrast prompt (the same scene with the one fact to
  enforce edited: contrastive guidance), seed (or "randomize seed"), steps, guidance,
  number of images and colormap -> a gallery, the seed used, and each image as a lossless 16-bit PNG. Image ``k``
  uses seed ``seed + k`` on a CPU generator, as ``python -m thermgen.generate --seed SEED`` does, so on the CPU
  (float32) the command reproduces what the page showed; on CUDA the demo runs in float16, so pixels differ
  slightly. Changing the colormap re-renders the shown images without generating again.
* **Caption**: a thermal image (8/16-bit PNG, TIFF, JPEG) and optional metadata -> IR-Cap's global and fine captions
  and the facts and measurements they rest on (the rules of ``python -m thermgen.caption``; no model needed).
* **Search** (with a T-CLIP folder): a text query ranks a folder of thermal images; an image ranks a list of captions.

Bad input (an empty prompt, steps out of range, a true-colour photo, ...) is answered with a readable message in the
page; a prompt over the text encoder's 77 tokens is generated from its first 77 tokens with a notice naming the
dropped words. The model runs on CUDA in float16 when there is a GPU, else on the CPU in float32. The server binds
to 127.0.0.1 unless ``--host`` says otherwise, and makes no public link unless ``--share`` is given.

Gradio is an optional extra (``pip install -e ".[demo]"``); the rest of thermgen never imports it.
Library use: :func:`build_demo` returns the ``gr.Blocks`` app; :class:`ThermalDemo` holds the models and the
functions behind each button (plain Python, raising :class:`DemoError` with the message the page shows).
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import os
import random
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_STEPS = 20  # the settings the packaged model's card and the control benchmark use
DEFAULT_GUIDANCE = 3.0
DEFAULT_IMAGES = 4
MAX_STEPS = 150
MAX_GUIDANCE = 20.0
MAX_IMAGES = 8
MAX_SEARCH_IMAGES = 5000  # images one Search ranks (encoded on request; keeps one query from stalling the queue)
MAX_SEED = 2**32 - 1  # torch.Generator.manual_seed takes any 64-bit value; keep seeds short enough to type
COLORMAPS = ("white-hot", "black-hot", "ironbow", "inferno", "viridis")
TIMES_OF_DAY = ("unknown", "day", "night")
INSTALL_HINT = 'the demo needs gradio: pip install -e ".[demo]"  (or: pip install "gradio>=5" gradio_client)'

# IR-Cap's phrasing (python -m thermgen.caption on HIT-UAV): scene, altitude, view angle, time of day, people/cars.
EXAMPLES: list[tuple[str, str]] = [
    ("An infrared thermal image of a scene below a drone, looking straight down from 120 m, at night-time under a "
     "clear sky, showing three cars, two at the top and one in the upper right.",
     "Thermal infrared image after dark: two cars at the top show cold glass and metal with warmer parts, hottest "
     "toward the top end."),
    ("An infrared thermal image of an aerial scene in daytime under a clear sky, viewed from 60 m with the camera "
     "60° below the horizon. It shows sixteen people, five in the lower left, three at the top and eight elsewhere.",
     "Thermal infrared image by day: two people in the lower left stand out warm from body heat; one person at the "
     "top is no warmer than the sun-warmed ground."),
    ("An infrared thermal image of a scene below a drone, seen from 60 m at a steep 70° angle, at night in clear "
     "weather, with two people, one in the lower left and one in the upper right.",
     "Thermal infrared image after dark: both people across the frame are bright warm figures on the cool ground, "
     "body heat."),
    ("An infrared thermal image of the ground below a drone, seen from 100 m at an oblique 30° angle, in daytime "
     "under a clear sky, showing nine cars in a row from the upper right to the middle left. The scene has high "
     "thermal contrast.",
     ""),
    ("An infrared thermal image of an aerial scene during the day under a clear sky, viewed from 120 m with the "
     "camera 50° below the horizon, showing four cars in a row from the lower left to the lower right.",
     ""),
]
EXAMPLE_CAPTIONS = "\n".join(p for p, _ in EXAMPLES)

NO_PIPELINE_HINT = ("Train one with `python -m thermgen.train` (the CPU default needs no download; see the README) "
                    "and start the demo with `--pipeline RUN/pipeline`.")
NO_TCLIP_HINT = ("Search needs a T-CLIP folder: start the demo with `--tclip RUN/tclip` (written by "
                 "`python -m thermgen.train` or `python -m tclip.train`).")


def time_contrast(prompt: str) -> str:
    """The contrast prompt that enforces a prompt's time of day: the prompt with its day/night words swapped
    (:func:`thermgen.ircap.swap.swap_time_words`); a DemoError when it states no time of day."""
    from thermgen.ircap.swap import swap_time_words

    out = swap_time_words(prompt or "")
    if out is None:
        raise DemoError("The prompt states no time of day (day, night, daytime, at night, after dark, ...): there is "
                        "nothing to contrast. Write one into the prompt, or a contrast prompt by hand.")
    return out


class DemoError(ValueError):
    """Bad input or a missing model; the message is what the page shows."""


def pick_device(device: str | None = None):
    """``(torch.device, dtype)``: CUDA with float16 when available (or asked for), else the CPU with float32."""
    import torch

    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    return dev, (torch.float16 if dev.type == "cuda" else torch.float32)


def _default_pipeline_dir() -> tuple[Path | None, str | None]:
    """The packaged pipeline, or ``(None, why not and how to get one)``."""
    from thermgen.pretrained import pretrained_path

    try:
        return pretrained_path(), None
    except FileNotFoundError as e:
        return None, f"No model to generate with: {e} {NO_PIPELINE_HINT}"


def _int_in(value: Any, name: str, lo: int, hi: int) -> int:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise DemoError(f"{name} must be a whole number from {lo} to {hi}, got {value!r}.") from None
    if not number.is_integer() or not lo <= number <= hi:
        raise DemoError(f"{name} must be a whole number from {lo} to {hi}, got {value!r}.")
    return int(number)


def _optional_number(value: Any, name: str, unit: str, lo: float, hi: float, low_open: bool = False) -> float | None:
    """A number typed into an optional field: None when empty (unknown), else checked to lie in [lo, hi]."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if not (lo < number <= hi if low_open else lo <= number <= hi):
        raise DemoError(f"{name} must be a number {unit}, from {lo:g} to {hi:g} (leave it empty if unknown), "
                        f"got {value!r}.")
    return number


def _file_path(value: Any) -> Path | None:
    """A path from a Gradio file value (a path string, or an object/dict with a path)."""
    if value is None or value == "":
        return None
    if isinstance(value, dict):
        value = value.get("path") or value.get("name")
    return Path(getattr(value, "name", value))


def _display(img: np.ndarray, colormap: str) -> np.ndarray:
    """float (H, W) in [0, 1], white-hot -> uint8 (H, W, 3) through ``colormap``."""
    from pipelines.colormaps import apply_colormap

    return apply_colormap(img, colormap)


def _truncation_notice(what: str, dropped: str, limit: int) -> str:
    return (f"{what} is longer than {limit} tokens; the text encoder reads only the first {limit}. "
            f"Dropped: “{dropped}”")


class ThermalDemo:
    """The models behind the demo and one method per button. Methods raise :class:`DemoError` on bad input.

    pipeline_dir: a ``ThermalDiffusionPipeline`` folder; None: the packaged model (Generate shows how to get one when
        none ships). tclip_dir: a T-CLIP folder for Search; None: ``pipeline_dir/../tclip`` when the pipeline is a
        recipe run's ``RUN/pipeline``, else Search is off. images_dir: the folder Search ranks by default.
    """

    def __init__(
        self,
        pipeline_dir: str | Path | None = None,
        tclip_dir: str | Path | None = None,
        images_dir: str | Path | None = None,
        device: str | None = None,
    ):
        self.device, self.dtype = pick_device(device)
        self.pipe = None
        self.pipeline_dir: Path | None = None
        self.pipeline_error: str | None = None
        if pipeline_dir is None:
            self.pipeline_dir, self.pipeline_error = _default_pipeline_dir()
        else:
            self.pipeline_dir = Path(pipeline_dir)
        if self.pipeline_dir is not None:
            self._load_pipeline(self.pipeline_dir)
        if tclip_dir is None and self.pipeline_dir is not None:
            sibling = self.pipeline_dir.parent / "tclip"
            tclip_dir = sibling if (sibling / "tclip_config.json").is_file() else None
        self.tclip = None
        self.tclip_dir = Path(tclip_dir) if tclip_dir is not None else None
        if self.tclip_dir is not None:
            import tclip

            try:
                self.tclip = tclip.load(self.tclip_dir, device=self.device)
            except (FileNotFoundError, ValueError) as e:
                raise DemoError(f"cannot load the T-CLIP folder {self.tclip_dir}: {e}") from None
        self.images_dir = Path(images_dir) if images_dir is not None else None
        # Search's folder box reads the server's disk: inside images_dir only when one is given; anywhere else only
        # while the demo is served to this machine alone (main() turns it off for --host beyond loopback / --share).
        self.server_folders = True
        self._files = tempfile.TemporaryDirectory(prefix="thermgen-demo-")  # the 16-bit PNGs; removed at exit
        self._image_cache: dict[tuple, Any] = {}

    # ------------------------------------------------------------------ models
    def _load_pipeline(self, folder: Path) -> None:
        if not (folder / "model_index.json").is_file():
            raise DemoError(f"{folder}: not a pipeline folder (no model_index.json). {NO_PIPELINE_HINT}")
        import torch

        from pipelines import ThermalDiffusionPipeline

        pipe = ThermalDiffusionPipeline.from_pretrained(folder)
        if self.dtype == torch.float32:
            pipe.to(self.device)
        else:  # CUDA: half precision
            pipe.to(self.device, self.dtype)
        pipe.enable_xformers_if_available()
        pipe.set_progress_bar_config(desc="denoising", disable=False)
        self.pipe = pipe

    @property
    def image_size(self) -> tuple[int, int] | None:
        """(height, width) the pipeline generates, or None without one."""
        if self.pipe is None:
            return None
        s = self.pipe.unet.config.sample_size
        h, w = (s, s) if isinstance(s, int) else s
        return int(h) * self.pipe.vae_scale_factor, int(w) * self.pipe.vae_scale_factor

    def status(self) -> str:
        """One Markdown paragraph: which models run where."""
        where = f"{self.device.type.upper()} ({str(self.dtype).removeprefix('torch.')})"
        if self.pipe is not None:
            h, w = self.image_size
            gen = f"pipeline `{self.pipeline_dir}` ({w}×{h} px) on {where}"
        else:
            gen = "no pipeline"
        search = f"T-CLIP `{self.tclip_dir}`" if self.tclip is not None else "no T-CLIP (Search is off)"
        return f"{gen}; {search}."

    # ------------------------------------------------------------------ Generate
    def generate(
        self,
        prompt: str,
        prompt_fine: str = "",
        negative_prompt: str = "",
        seed: Any = 0,
        randomize_seed: bool = False,
        steps: Any = DEFAULT_STEPS,
        guidance: Any = DEFAULT_GUIDANCE,
        n_images: Any = DEFAULT_IMAGES,
        colormap: str = "white-hot",
        contrast_prompt: str = "",
        contrast_scale: Any = None,
    ) -> dict[str, Any]:
        """Generate images (``contrast_prompt``: contrastive guidance, weight ``contrast_scale``, default
        :data:`thermgen.generate.CONTRAST_SCALE`). Returns ``{"images": [float (H, W)], "seeds", "seed", "files": [16-bit PNG paths],
        "notices": [str], "seconds"}``; the images are white-hot in [0, 1], image k from seed ``seed + k``."""
        import torch

        from pipelines.pipeline_thermal_diffusion import TRUNCATION_WARNING
        from thermgen.generate import CONTRAST_SCALE, pipeline_warnings
        from thermgen.io import write_png16

        if self.pipe is None:
            raise DemoError(self.pipeline_error or NO_PIPELINE_HINT)
        prompt = (prompt or "").strip()
        if not prompt:
            raise DemoError("Enter a prompt, e.g. one of the examples below the Generate button.")
        steps = _int_in(steps, "Steps", 1, MAX_STEPS)
        n_images = _int_in(n_images, "Number of images", 1, MAX_IMAGES)
        seed = random.randint(0, MAX_SEED) if randomize_seed else _int_in(seed, "Seed", 0, MAX_SEED)
        try:
            scale = float(guidance)
        except (TypeError, ValueError):
            scale = float("nan")
        if not 0.0 <= scale <= MAX_GUIDANCE:  # also refuses NaN
            raise DemoError(f"Guidance scale must be a number from 0 to {MAX_GUIDANCE:g}, got {guidance!r}.")
        if colormap not in COLORMAPS:
            raise DemoError(f"Colormap must be one of {', '.join(COLORMAPS)}, got {colormap!r}.")
        fine = (prompt_fine or "").strip() or None
        negative = (negative_prompt or "").strip() or None
        contrast = (contrast_prompt or "").strip() or None
        c_scale = 0.0
        if contrast is not None and fine is not None:
            raise DemoError("A contrast prompt cannot be combined with a fine-grained prompt here (the contrast would "
                            "need its own fine prompt): leave one of them empty, or use python -m thermgen.generate "
                            "--contrast-prompt-fine.")
        if contrast is not None:
            try:
                c_scale = CONTRAST_SCALE if contrast_scale in (None, "") else float(contrast_scale)
            except (TypeError, ValueError):
                c_scale = float("nan")
            if not 0.0 < c_scale <= MAX_GUIDANCE:  # also refuses NaN
                raise DemoError(f"Contrast weight must be a number above 0 and up to {MAX_GUIDANCE:g}, "
                                f"got {contrast_scale!r}.")

        limit = getattr(self.pipe.text_encoder, "context_length", 77)
        fields = (("The prompt", prompt), ("The fine-grained prompt", fine), ("The negative prompt", negative),
                  ("The contrast prompt", contrast))
        notices = [_truncation_notice(what, dropped, limit) for what, text in fields
                   if text and (dropped := self.pipe.truncated_text([text])[0])]
        seeds = [seed + k for k in range(n_images)]
        t0 = time.perf_counter()
        with pipeline_warnings() as logged:  # the pipeline's own warnings (already turned into notices above)
            out = self.pipe(
                prompt=[prompt] * n_images,
                prompt_fine=None if fine is None else [fine] * n_images,
                negative_prompt=negative,
                contrast_prompt=None if contrast is None else [contrast] * n_images,
                contrast_scale=c_scale,
                num_inference_steps=steps,
                guidance_scale=scale,
                # one CPU generator per image, as thermgen.generate: the same seed gives the same image there
                generator=[torch.Generator(device="cpu").manual_seed(s) for s in seeds],
                output_type="np",
            )
        notices += [m for m in logged if not m.startswith(TRUNCATION_WARNING.split("{")[0])]
        images = [np.asarray(im[..., 0], dtype=np.float32) for im in out.images]
        self._prune_files()
        folder = Path(self._files.name) / uuid.uuid4().hex[:12]
        folder.mkdir()
        files = []
        for s, img in zip(seeds, images):
            path = folder / f"thermal_seed{s}.png"
            write_png16(path, np.round(np.clip(img, 0.0, 1.0) * 65535.0).astype(np.uint16))
            files.append(str(path))
        return {"images": images, "seeds": seeds, "seed": seed, "files": files, "notices": notices,
                "seconds": time.perf_counter() - t0}

    def _prune_files(self, max_age_s: float = 3600.0) -> None:
        """Remove the 16-bit PNGs of generations older than ``max_age_s`` (Gradio serves its own copies)."""
        import shutil

        now = time.time()
        for folder in Path(self._files.name).iterdir():
            if now - folder.stat().st_mtime > max_age_s:
                shutil.rmtree(folder, ignore_errors=True)

    @staticmethod
    def render(images: list[np.ndarray] | None, seeds: list[int] | None, colormap: str) -> list[tuple[np.ndarray, str]]:
        """Gallery items ``(uint8 (H, W, 3), "seed N")`` of generated images through ``colormap``."""
        if colormap not in COLORMAPS:
            raise DemoError(f"Colormap must be one of {', '.join(COLORMAPS)}, got {colormap!r}.")
        return [(_display(img, colormap), f"seed {s}") for img, s in zip(images or [], seeds or [])]

    # ------------------------------------------------------------------ Caption
    def caption(
        self, image_file: Any, time_of_day: str = "unknown", altitude_m: Any = None, view_angle_deg: Any = None,
    ) -> dict[str, Any]:
        """IR-Cap captions of one uploaded image. Returns ``{"image": float (H, W), "global_caption", "fine_caption",
        "facts": [[name, value, subject, rule, evidence]], "measurements": dict, "tokens": dict}``."""
        from thermgen.ircap.captioner import caption_one, read_for_measurement
        from thermgen.data.sample import DataError, ThermalSample
        from thermgen.io import image_size

        path = _file_path(image_file)
        if path is None:
            raise DemoError("Upload a thermal image (a grey 8- or 16-bit PNG, TIFF or JPEG).")
        meta: dict[str, Any] = {}
        if time_of_day not in TIMES_OF_DAY:
            raise DemoError(f"Time of day must be one of {', '.join(TIMES_OF_DAY)}, got {time_of_day!r}.")
        if time_of_day != "unknown":
            meta["time_of_day"] = time_of_day
        alt = _optional_number(altitude_m, "Altitude", "in metres above ground", 0.0, 10000.0, low_open=True)
        if alt is not None:
            meta["altitude_m"] = alt
        angle = _optional_number(view_angle_deg, "View angle", "in degrees from 0 (horizon) to 90 (straight down)",
                                 0.0, 90.0)
        if angle is not None:
            meta["view_angle_deg"] = angle
        name = path.name
        try:
            w, h = image_size(path)
            sample = ThermalSample(image_path=path, width=w, height=h, boxes=[], meta=meta, split="demo",
                                   source="upload", image_id=path.stem)
            rec, _ = caption_one(sample, path.parent / "demo.jsonl")
            img, _, _ = read_for_measurement(sample)
        except DataError as e:
            raise DemoError(_readable_image_error(str(e), path, name)) from None
        facts = [[f["name"], _short(f["value"]), f["subject"], f["rule"], _short(f["evidence"])] for f in rec["facts"]]
        return {"image": img, "global_caption": rec["global_caption"], "fine_caption": rec["fine_caption"],
                "facts": facts, "measurements": rec["measurements"], "tokens": rec["tokens"]}

    # ------------------------------------------------------------------ Search
    def _need_tclip(self):
        if self.tclip is None:
            raise DemoError(NO_TCLIP_HINT)
        return self.tclip

    def _variants(self) -> tuple[str, str]:
        """(image variant, text variant) for one caption per item: both adapters fused when there are two."""
        adapters = set(self._need_tclip().adapters)
        if {"global", "fine"} <= adapters:
            return "dual", "tclip-global"
        return ("global", "global") if "global" in adapters else ("base", "base")

    def _query_notice(self, texts: list[str]) -> list[str]:
        from tclip.text_encoder import truncated_text

        model = self._need_tclip()
        limit = int(getattr(model.tokenizer, "context_length", 77) or 77)
        dropped = truncated_text(model.tokenizer, texts)
        return [_truncation_notice(f"“{t[:40]}…”", d, limit) for t, d in zip(texts, dropped) if d]

    def _image_paths(self, folder: str | Path | None, uploads: list | None) -> list[Path]:
        from thermgen.io import IMAGE_EXTENSIONS

        paths = [p for p in (_file_path(u) for u in uploads or []) if p is not None]
        if paths:
            return paths
        if not folder:
            raise DemoError("Give a folder of thermal images (on the server) or upload some images.")
        folder = Path(str(folder).strip()).expanduser().resolve()
        if self.images_dir is not None and not folder.is_relative_to(self.images_dir.resolve()):
            raise DemoError(f"Search reads folders inside {self.images_dir} only (the demo's --images); upload "
                            "images to search others.")
        if self.images_dir is None and not self.server_folders:
            raise DemoError("This demo is served beyond this machine, so Search does not read folders on the server; "
                            "upload images, or start the demo with --images DIR.")
        if not folder.is_dir():
            raise DemoError(f"{folder}: no such folder.")
        try:
            paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and p.suffix != ".npy"
                           and p.is_file())
        except OSError as e:
            raise DemoError(f"{folder}: cannot list it ({e.strerror or e}).") from None
        if len(paths) > MAX_SEARCH_IMAGES:
            raise DemoError(f"{folder}: {len(paths)} images; Search ranks at most {MAX_SEARCH_IMAGES} (use a smaller "
                            "folder, or tclip's own retrieval commands for large sets).")
        if not paths:
            raise DemoError(f"{folder}: no images ({', '.join(e for e in IMAGE_EXTENSIONS if e != '.npy')}).")
        return paths

    def _encode_images(self, paths: list[Path]):
        """Normalised T-CLIP embeddings (N, D) of image files, cached by path, size and modification time."""
        import torch

        from tclip.data import ManifestError, load_images

        model = self._need_tclip()
        key = tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in paths)
        if key not in self._image_cache:
            try:
                pixels = load_images(paths, model.image_size, workers=1, progress=False)
            except ManifestError as e:
                bad = next((p for p in paths if str(p) in str(e)), None)
                raise DemoError(_readable_image_error(str(e), bad, bad.name) if bad else str(e)) from None
            with torch.no_grad():
                emb = torch.cat([model.encode_image(pixels[i : i + 32].to(model.pixel_mean.device), self._variants()[0])
                                 for i in range(0, len(pixels), 32)]).cpu()
            self._image_cache = {key: emb}  # keep the last folder only
        return self._image_cache[key]

    def search_images(self, query: str, folder: str | Path | None = None, uploads: list | None = None,
                      k: Any = 5) -> dict[str, Any]:
        """Rank images by a text query. Returns ``{"results": [(path, score)] best first, "notices"}``."""
        import torch

        model = self._need_tclip()
        query = (query or "").strip()
        if not query:
            raise DemoError("Enter a text query, e.g. an IR-Cap caption.")
        paths = self._image_paths(folder if folder else self.images_dir, uploads)
        k = _int_in(k, "Top k", 1, 1000)
        emb = self._encode_images(paths)
        with torch.no_grad():
            q = model.encode_text([query], variant=self._variants()[1]).cpu()
        scores = (emb @ q[0]).tolist()
        order = sorted(range(len(paths)), key=lambda i: -scores[i])[:k]
        return {"results": [(paths[i], scores[i]) for i in order], "notices": self._query_notice([query])}

    def search_captions(self, image_file: Any, captions: str | list[str], k: Any = 5) -> dict[str, Any]:
        """Rank captions (one per line) by an image.

        Returns ``{"results": [(caption, score)] best first, "notices"}``."""
        import torch

        from tclip.data import ManifestError, load_thermal_image

        model = self._need_tclip()
        path = _file_path(image_file)
        if path is None:
            raise DemoError("Upload a thermal image to rank the captions by.")
        texts = captions.splitlines() if isinstance(captions, str) else list(captions or [])
        texts = list(dict.fromkeys(t.strip() for t in texts if t and t.strip()))
        if not texts:
            raise DemoError("Give at least one caption (one per line).")
        k = _int_in(k, "Top k", 1, 1000)
        try:
            img = torch.from_numpy(load_thermal_image(path))[None, None].to(model.pixel_mean.device)
        except ManifestError as e:
            raise DemoError(_readable_image_error(str(e), path, path.name)) from None
        with torch.no_grad():
            e_img = model.encode_image(img, self._variants()[0])[0].cpu()
            e_txt = torch.cat([model.encode_text(texts[i : i + 64], variant=self._variants()[1])
                               for i in range(0, len(texts), 64)]).cpu()
        scores = (e_txt @ e_img).tolist()
        order = sorted(range(len(texts)), key=lambda i: -scores[i])[:k]
        return {"results": [(texts[i], scores[i]) for i in order], "notices": self._query_notice(texts)}


def _short(value: Any, limit: int = 160) -> str:
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _readable_image_error(message: str, path: Path | None, name: str) -> str:
    """A loader's error about an uploaded file, said for a person: the file's own name, what to upload instead."""
    if path is not None:
        message = message.replace(str(path), name)
    if "colour image" in message or "true colour" in message:
        return (f"{name} is a true-colour image (its red, green and blue channels differ), not a thermal frame. "
                "Upload a single-channel thermal image: a grey 8- or 16-bit PNG, TIFF or JPEG. (A colour-mapped "
                "thermal export, e.g. ironbow, cannot be mapped back to temperatures.)")
    return message


# ---------------------------------------------------------------------------------------------------- the app


def _gradio():
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no usage statistics, no version check
    import gradio as gr

    return gr


def _readable(fn):
    """Wrap a handler so that a :class:`DemoError` (and any ValueError the loaders raise) shows in the page."""
    gr = _gradio()

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except ValueError as e:
            try:
                error = gr.Error(str(e), print_exception=False)  # a user's mistake: no traceback in the server log
            except TypeError:  # gradio < 5.x without print_exception
                error = gr.Error(str(e))
            raise error from None

    return wrapper


def _no_share(component, buttons: tuple[str, ...] = ("download", "fullscreen")) -> dict[str, Any]:
    """Keyword arguments that drop the "share to the Hugging Face Hub" button (it needs the network)."""
    import inspect

    params = inspect.signature(component.__init__).parameters
    if "buttons" in params:  # gradio 6
        return {"buttons": list(buttons)}
    return {"show_share_button": False} if "show_share_button" in params else {}


CSS = "#gallery img, #caption-preview img, #search-gallery img { image-rendering: pixelated; }"


def build_demo(
    pipeline_dir: str | Path | None = None,
    tclip_dir: str | Path | None = None,
    images_dir: str | Path | None = None,
    device: str | None = None,
    steps: int = DEFAULT_STEPS,
    n_images: int = DEFAULT_IMAGES,
    demo: ThermalDemo | None = None,
):
    """The Gradio app (``gr.Blocks``); see the module docstring. ``steps`` / ``n_images``: the sliders' start values.

    Launch it with :func:`launch` (binds to localhost, no public link, no analytics) or ``app.launch(...)``.
    """
    gr = _gradio()
    from thermgen.generate import CONTRAST_SCALE

    td = demo if demo is not None else ThermalDemo(pipeline_dir, tclip_dir, images_dir, device)

    # delete_cache: Gradio's copies of served files older than a day are removed every hour
    with gr.Blocks(title="thermgen demo", analytics_enabled=False, delete_cache=(3600, 86400)) as app:
        gr.Markdown("# thermgen: thermal (LWIR) images from text, captions and search\n" + td.status())
        with gr.Tabs():
            with gr.Tab("Generate", id="generate-tab"):
                if td.pipe is None:
                    gr.Markdown(f"**{td.pipeline_error or NO_PIPELINE_HINT}**")
                with gr.Row():
                    with gr.Column(scale=1):
                        prompt = gr.Textbox(label="Prompt", lines=3, elem_id="prompt",
                                            placeholder="An infrared thermal image of ... (see the examples below)")
                        with gr.Accordion("Fine-grained, negative and contrast prompt", open=False):
                            fine = gr.Textbox(label="Fine-grained prompt (optional)", lines=2, elem_id="prompt-fine",
                                              placeholder="Thermal infrared image after dark: two cars ... engine heat")
                            negative = gr.Textbox(label="Negative prompt (optional)", lines=1, elem_id="negative")
                            contrast = gr.Textbox(
                                label="Contrast prompt (optional): your prompt with the one fact to enforce changed, "
                                      "e.g. 'by day' for a night prompt", lines=2, elem_id="contrast")
                            swap_time = gr.Button("Contrast: my prompt with day and night swapped", size="sm",
                                                  elem_id="contrast-time")
                            contrast_w = gr.Slider(0.5, MAX_GUIDANCE, value=CONTRAST_SCALE, step=0.5,
                                                   label="Contrast weight", elem_id="contrast-scale")
                        with gr.Row():
                            seed = gr.Number(label=f"Seed (0 to {MAX_SEED})", value=0, precision=0, elem_id="seed")
                            randomize = gr.Checkbox(label="Randomize seed", value=True, elem_id="randomize")
                        n = gr.Slider(1, MAX_IMAGES, value=n_images, step=1, label="Number of images", elem_id="n")
                        n_steps = gr.Slider(1, MAX_STEPS, value=steps, step=1, label="Steps", elem_id="steps")
                        guidance = gr.Slider(0.0, MAX_GUIDANCE, value=DEFAULT_GUIDANCE, step=0.5,
                                             label="Guidance scale (1 or less: no guidance)", elem_id="guidance")
                        button = gr.Button("Generate", variant="primary", elem_id="generate")
                    with gr.Column(scale=1):
                        colormap = gr.Radio(list(COLORMAPS), value="white-hot", label="Colormap (bright = hot)",
                                            elem_id="colormap")
                        gallery = gr.Gallery(label="Generated thermal images", columns=4, height="auto",
                                             object_fit="contain", format="png", elem_id="gallery",
                                             **_no_share(gr.Gallery))
                        notice = gr.Markdown(elem_id="notice")
                        seed_used = gr.Number(label="Seed used (image k: seed + k)", precision=0, interactive=False,
                                              elem_id="seed-used")
                        files = gr.File(label="Lossless 16-bit PNGs (white-hot; full range = the model's [0, 1])",
                                        file_count="multiple", interactive=False, elem_id="files")
                gr.Examples([[p, f] for p, f in EXAMPLES], inputs=[prompt, fine], label="IR-Cap-style prompts")
                shown = gr.State(None)  # {"images": [...], "seeds": [...]}: re-rendered when the colormap changes

                @_readable
                def on_generate(prompt, fine, negative, seed, randomize, steps, guidance, n, colormap, contrast,
                                contrast_w, progress=gr.Progress(track_tqdm=True)):
                    out = td.generate(prompt, fine, negative, seed, randomize, steps, guidance, n, colormap,
                                      contrast, contrast_w)
                    for text in out["notices"]:
                        gr.Warning(text)
                    note = "\n".join(f"⚠️ {t}" for t in out["notices"])
                    note += f"\n\n{len(out['images'])} images in {out['seconds']:.1f} s."
                    return (td.render(out["images"], out["seeds"], colormap), out["seed"], note, out["files"],
                            {"images": out["images"], "seeds": out["seeds"]})

                swap_time.click(_readable(time_contrast), [prompt], [contrast], api_name="contrast_time", queue=False)

                button.click(on_generate, [prompt, fine, negative, seed, randomize, n_steps, guidance, n, colormap,
                                           contrast, contrast_w],
                             [gallery, seed_used, notice, files, shown], api_name="generate")

                @_readable
                def on_colormap(state, colormap):
                    if not state:
                        return []
                    return td.render(state["images"], state["seeds"], colormap)

                colormap.change(on_colormap, [shown, colormap], [gallery], api_name="recolor", queue=False)

            with gr.Tab("Caption", id="caption-tab"):
                gr.Markdown("IR-Cap states only what it measures in the pixels and the metadata you give; "
                            "it needs no model. Without boxes it describes the scene, not objects.")
                with gr.Row():
                    with gr.Column(scale=1):
                        upload = gr.File(label="Thermal image (grey 8/16-bit PNG, TIFF, JPEG)", elem_id="caption-file",
                                         file_types=[".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp"])
                        tod = gr.Radio(list(TIMES_OF_DAY), value="unknown", label="Time of day", elem_id="time-of-day")
                        # text boxes, not gr.Number: "unknown" must stay distinguishable from 0
                        altitude = gr.Textbox(label="Altitude (m above ground)", placeholder="unknown",
                                              elem_id="altitude")
                        angle = gr.Textbox(label="View angle (degrees below the horizon; 90 = straight down)",
                                           placeholder="unknown", elem_id="view-angle")
                        cap_button = gr.Button("Caption", variant="primary", elem_id="caption")
                    with gr.Column(scale=1):
                        preview = gr.Image(label="Image (ironbow)", interactive=False, format="png",
                                           elem_id="caption-preview", **_no_share(gr.Image))
                        global_cap = gr.Textbox(label="Global caption", interactive=False, elem_id="global-caption")
                        fine_cap = gr.Textbox(label="Fine-grained caption", interactive=False, elem_id="fine-caption")
                with gr.Accordion("Facts and the measurements they rest on", open=False):
                    facts = gr.Dataframe(headers=["fact", "value", "subject", "rule", "evidence"], interactive=False,
                                         wrap=True, elem_id="facts")
                    measurements = gr.JSON(label="Measurements", elem_id="measurements")

                @_readable
                def on_caption(file, time_of_day, altitude_m, view_angle):
                    out = td.caption(file, time_of_day, altitude_m, view_angle)
                    return (_display(out["image"], "ironbow"), out["global_caption"], out["fine_caption"],
                            out["facts"], out["measurements"])

                cap_button.click(on_caption, [upload, tod, altitude, angle],
                                 [preview, global_cap, fine_cap, facts, measurements], api_name="caption")

            with gr.Tab("Search", id="search-tab"):
                if td.tclip is None:
                    gr.Markdown(NO_TCLIP_HINT)
                with gr.Row():
                    with gr.Column(scale=1):
                        gr.Markdown("### Text → images")
                        query = gr.Textbox(label="Query", lines=2, elem_id="query", value=EXAMPLES[0][0])
                        folder = gr.Textbox(label="Folder of thermal images (on the server)", elem_id="folder",
                                            value=str(td.images_dir) if td.images_dir else "")
                        uploads = gr.File(label="… or upload images", file_count="multiple", elem_id="search-files",
                                          file_types=[".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp"])
                        k_img = gr.Slider(1, 50, value=5, step=1, label="Top k", elem_id="k-images")
                        search_button = gr.Button("Search images", variant="primary", elem_id="search-images",
                                                  interactive=td.tclip is not None)
                        hits = gr.Gallery(label="Best matches", columns=5, height="auto", format="png",
                                          elem_id="search-gallery", **_no_share(gr.Gallery))
                        hit_table = gr.Dataframe(headers=["rank", "image", "score"], interactive=False,
                                                 elem_id="search-table")
                        search_notice = gr.Markdown()
                    with gr.Column(scale=1):
                        gr.Markdown("### Image → captions")
                        query_image = gr.File(label="Thermal image", elem_id="query-image",
                                              file_types=[".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp"])
                        candidates = gr.Textbox(label="Captions, one per line", lines=6, value=EXAMPLE_CAPTIONS,
                                                elem_id="captions")
                        k_cap = gr.Slider(1, 50, value=5, step=1, label="Top k", elem_id="k-captions")
                        rank_button = gr.Button("Rank captions", variant="primary", elem_id="rank-captions",
                                                interactive=td.tclip is not None)
                        cap_table = gr.Dataframe(headers=["rank", "caption", "score"], interactive=False, wrap=True,
                                                 elem_id="caption-table")
                        rank_notice = gr.Markdown()

                @_readable
                def on_search(query, folder, uploads, k):
                    from tclip.data import load_thermal_image

                    out = td.search_images(query, folder, uploads, k)
                    items = [(_display(load_thermal_image(p), "ironbow"), f"{r}. {p.name} ({s:.3f})")
                             for r, (p, s) in enumerate(out["results"], 1)]
                    rows = [[r, p.name, round(s, 4)] for r, (p, s) in enumerate(out["results"], 1)]
                    return items, rows, "\n".join(f"⚠️ {t}" for t in out["notices"])

                search_button.click(on_search, [query, folder, uploads, k_img], [hits, hit_table, search_notice],
                                    api_name="search_images")

                @_readable
                def on_rank(file, captions, k):
                    out = td.search_captions(file, captions, k)
                    rows = [[r, c, round(s, 4)] for r, (c, s) in enumerate(out["results"], 1)]
                    return rows, "\n".join(f"⚠️ {t}" for t in out["notices"])

                rank_button.click(on_rank, [query_image, candidates, k_cap], [cap_table, rank_notice],
                                  api_name="search_captions")
    app.thermal_demo = td  # for callers and tests: the models behind the page
    return app


def launch(app, host: str = "127.0.0.1", port: int | None = 7860, share: bool = False, block: bool = True, **kwargs):
    """Start the server (localhost, no public link, no analytics unless asked) and return the app's local URL.

    ``block=False`` returns at once with the server running in a thread (``app.close()`` stops it).
    The default theme's fonts are served by the app itself, so the page renders offline.
    """
    import inspect

    if "css" in inspect.signature(app.launch).parameters:  # gradio 6: css belongs to launch()
        kwargs["css"] = CSS
    else:  # gradio 5: set on the Blocks
        app.css = CSS
    app.queue(default_concurrency_limit=1)  # one generation at a time: the model is shared
    app.launch(server_name=host, server_port=port, share=share, prevent_thread_lock=not block, quiet=not block,
               show_error=True, **kwargs)
    return app.local_url


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` now (the OS picks it)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m thermgen.demo",
        description="A browser demo (Gradio): generate thermal images from text, caption a thermal image with "
        "IR-Cap, search thermal images with T-CLIP. Needs the demo extra: pip install -e \".[demo]\".",
    )
    p.add_argument("--pipeline", type=Path, default=None,
                   help="pipeline folder (e.g. RUN/pipeline from python -m thermgen.train); default: the packaged "
                   "model (thermgen.pretrained_path()), else Generate says how to get one")
    p.add_argument("--tclip", type=Path, default=None,
                   help="T-CLIP folder for the Search tab (default: RUN/tclip beside a RUN/pipeline, else no Search)")
    p.add_argument("--images", type=Path, default=None, help="folder of thermal images that Search ranks by default")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1: this machine only; 0.0.0.0 serves the network)")
    p.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    p.add_argument("--share", action="store_true", help="also make a public gradio.live link (off by default)")
    p.add_argument("--device", default=None, help="torch device (default: cuda with float16 if available, else cpu)")
    p.add_argument("--steps", type=int, default=DEFAULT_STEPS,
                   help=f"start value of the Steps slider (default {DEFAULT_STEPS})")
    p.add_argument("--screenshot", type=Path, default=None,
                   help="instead of serving: start the demo on a free local port, generate once in headless Chromium "
                   "(selenium), save a PNG screenshot of the page here, print the time from click to image, exit")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if importlib.util.find_spec("gradio") is None:
        print(f"error: {INSTALL_HINT}", file=sys.stderr)
        return 2
    if not 1 <= args.steps <= MAX_STEPS:
        print(f"error: --steps must be from 1 to {MAX_STEPS}, got {args.steps}", file=sys.stderr)
        return 2
    try:
        td = ThermalDemo(args.pipeline, args.tclip, args.images, args.device)
    except DemoError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    td.server_folders = args.host in ("127.0.0.1", "localhost", "::1") and not args.share
    if td.pipe is None:
        print(f"note: {td.pipeline_error} (Caption works without a model.)", file=sys.stderr)
    print(f"thermgen demo: {td.status()}", file=sys.stderr)
    app = build_demo(demo=td, steps=args.steps)
    if args.screenshot is not None:
        from thermgen.demo_browser import BrowserUnavailable, screenshot

        url = launch(app, port=free_port(), block=False)
        try:
            result = screenshot(url, args.screenshot)
        except BrowserUnavailable as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        finally:
            app.close()
        print(f"screenshot {args.screenshot} ({result['bytes'] / 1024:.0f} KB); Generate click to "
              f"{result['images']} images on screen: {result['seconds']:.2f} s")
        return 0
    try:
        launch(app, host=args.host, port=args.port, share=args.share)
    except OSError as e:  # port in use
        print(f"error: cannot serve on {args.host}:{args.port}: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
