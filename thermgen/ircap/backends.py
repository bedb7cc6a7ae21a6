"""Optional model backends for IR-Cap (the paper's approach as a plug-in; off by default).

A backend receives the measured facts (and the RGB twin's path, where the dataset has one, in
``meta["rgb_path"]``) and writes the two captions. Whatever comes back is **validated** by
:func:`validate_captions` -- prefixes, the 77-token limit, no colour words, and no claim that
contradicts a measured fact (time of day, weather, object counts, running vs parked vehicles,
warm vs not-warm people). On any failure the rule captions are kept and the fallback is counted in
the caption report, with its reason.

Backends:
``rules``         the rule captions (no model).
``transformers``  a local model folder loaded with ``transformers`` (``local_files_only=True``,
                  never ``trust_remote_code``), used through its chat template when it has one.
``openai``        any OpenAI-compatible HTTP endpoint (``POST {base_url}/chat/completions``) through
                  ``urllib`` from the standard library; the API key is read from an environment
                  variable (may be unset for local servers). When the sample has an RGB twin
                  (``meta["rgb_path"]``) it is attached as an image (OpenAI vision message format),
                  so a served vision-language model (e.g. through vLLM) can use it for context.
``transformers`` is text-only: a vision-language model is best served behind the ``openai`` route.
"""

from __future__ import annotations

import base64
import json
import mimetypes
import os
import re
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from .facts import Fact, is_ignored, is_person, is_vehicle
from .render import COLOUR_WORDS, FINE_PREFIX, GLOBAL_PREFIX, MAX_TOKENS, count_tokens, noun, parse_counts

SYSTEM_PROMPT = (
    "You write two captions for one thermal infrared (LWIR) image, using ONLY the measured facts given. "
    "Objective language, no colours, no facts that are not given. "
    f"The global caption starts with '{GLOBAL_PREFIX}' and describes scene, viewpoint, time of day, weather and "
    "the objects with their exact counts and positions. "
    f"The fine caption starts with '{FINE_PREFIX}' and describes heat signatures and their physical causes "
    "per object group with positions. Each caption at most 60 words. "
    'Answer with JSON only: {"global_caption": "...", "fine_caption": "..."}'
)

_RUNNING_WORDS = re.compile(r"\b(running|just driven|recently driven|engine heat|moving|in motion|idling)\b", re.I)
_PARKED_WORDS = re.compile(r"\b(parked|cooled|cold engines?)\b", re.I)
_NIGHT_WORDS = re.compile(r"\b(night|night-time|nighttime|after dark)\b", re.I)
_DAY_WORDS = re.compile(r"\b(daytime|by day|during the day|day scene|sunny|sunlit|sunlight)\b", re.I)
_WET_WORDS = re.compile(r"\b(wet|rain|rainy|puddles?)\b", re.I)
_TEMPERATURE = re.compile(r"\d\s*(K|kelvin|°\s*[CF]|degrees? (Celsius|Fahrenheit|C|F))\b", re.I)
_GENERIC_NOUNS = {"Person": "person", "Car": "car", "Bicycle": "bicycle", "OtherVehicle": "other vehicle"}


def facts_payload(sample, meas: dict[str, Any], scene: list[Fact], per_object: list[list[Fact]],
                  labels: list[str]) -> dict[str, Any]:
    """The measured facts a model is allowed to use, as a JSON-able dict."""
    objs = []
    for i, (lab, facts) in enumerate(zip(labels, per_object)):
        if is_ignored(lab):
            continue
        m = meas["objects"][i]
        objs.append({"label": lab, "position": m.get("cell"), "facts": {f.name: f.value for f in facts}})
    counts: dict[str, int] = {}
    for lab in labels:
        if not is_ignored(lab):
            counts[lab] = counts.get(lab, 0) + 1
    return {"scene": {f.name: f.value for f in scene}, "counts": counts, "objects": objs,
            "rgb_twin": (sample.meta or {}).get("rgb_path")}


def validate_captions(global_caption: str, fine_caption: str, scene: list[Fact], per_object: list[list[Fact]],
                      labels: list[str], radiometric: bool = False) -> list[str]:
    """Problems with a pair of captions given the measured facts; empty list = acceptable.

    radiometric: whether the image has a temperature calibration; without one any absolute
    temperature (kelvin, degrees Celsius/Fahrenheit) is an unsupported claim.
    """
    problems: list[str] = []
    sf = {f.name: f.value for f in scene}
    for name, text, prefix in (("global", global_caption, GLOBAL_PREFIX), ("fine", fine_caption, FINE_PREFIX)):
        if not isinstance(text, str) or not text.strip():
            problems.append(f"{name}: empty")
            continue
        if not text.startswith(prefix):
            problems.append(f"{name}: does not begin with {prefix!r}")
        n = count_tokens(text)
        if n > MAX_TOKENS:
            problems.append(f"{name}: {n} tokens > {MAX_TOKENS}")
        words = set(re.findall(r"[a-z]+", text.lower()))
        if words & COLOUR_WORDS:
            problems.append(f"{name}: colour words {sorted(words & COLOUR_WORDS)}")
        tod = sf.get("time_of_day")
        if (tod != "night" and _NIGHT_WORDS.search(text)) or (tod != "day" and _DAY_WORDS.search(text)):
            problems.append(f"{name}: time of day contradicts or is not measured (metadata: {tod})")
        if not radiometric and _TEMPERATURE.search(text):
            problems.append(f"{name}: states a temperature but the image is not radiometric")
        if sf.get("weather") not in ("rain", None) and _WET_WORDS.search(text):
            problems.append(f"{name}: wet/rain claim against weather {sf.get('weather')}")
    if problems:
        return problems
    # Counts: the global caption states every label's exact total; the fine caption never exceeds it.
    totals: dict[str, int] = {}
    for lab in labels:
        if not is_ignored(lab):
            totals[lab] = totals.get(lab, 0) + 1
    known = sorted(set(totals) | set(_GENERIC_NOUNS))
    for name, text in (("global", global_caption), ("fine", fine_caption)):
        for lab, found in parse_counts(text, known).items():
            total = totals.get(lab, 0)
            if name == "global" and any(c != total for c in found):
                problems.append(f"global: states {found} {noun(lab, 2)}, annotation has {total}")
            if name == "fine" and any(c > total for c in found):
                problems.append(f"fine: states {max(found)} {noun(lab, 2)}, annotation has {total}")
    for lab, total in totals.items():
        if lab not in parse_counts(global_caption, [lab]):
            problems.append(f"global: does not state the count of {noun(lab, 2)} ({total})")
    # Motion state: a claim must not contradict every measured vehicle state.
    states = {f.value for lab, facts in zip(labels, per_object) if is_vehicle(lab) for f in facts if f.name == "vehicle_state"}
    if _RUNNING_WORDS.search(fine_caption) and "running" not in states:
        problems.append("fine: running/moving claim without a measured running vehicle")
    if _PARKED_WORDS.search(fine_caption) and "parked" not in states:
        problems.append("fine: parked/cooled claim without a measured parked vehicle")
    people = {f.value for lab, facts in zip(labels, per_object) if is_person(lab) for f in facts if f.name == "person_heat"}
    if re.search(r"\b(people|persons?|pedestrians?)\b[^.;]*\b(body heat|(?<!no )warmer than|warm against|glows?)\b", fine_caption, re.I) \
            and "warm" not in people:
        problems.append("fine: warm people claim without a measured warm person")
    return problems


def parse_model_output(text: str) -> tuple[str, str]:
    """Pull ``(global_caption, fine_caption)`` out of a model's reply (JSON, possibly wrapped in prose/fences)."""
    m = re.search(r"\{.*\}", text, re.S)
    if not m:
        raise ValueError("no JSON object in the reply")
    obj = json.loads(m.group(0))
    g, f = obj.get("global_caption"), obj.get("fine_caption")
    if not isinstance(g, str) or not isinstance(f, str):
        raise ValueError("reply lacks string keys 'global_caption' and 'fine_caption'")
    return " ".join(g.split()), " ".join(f.split())


class Backend:
    """Base class: subclasses implement :meth:`generate` (messages -> reply text)."""

    name = "rules"
    model_name: str | None = None

    def generate(self, messages: list[dict[str, str]]) -> str:  # pragma: no cover - interface
        raise NotImplementedError

    def messages(self, payload: dict[str, Any], rule_captions: tuple[str, str]) -> list[dict[str, str]]:
        user = ("Measured facts:\n" + json.dumps(payload, ensure_ascii=False) +
                "\nReference captions written by rules from the same facts (rephrase freely, keep every fact):\n"
                + json.dumps({"global_caption": rule_captions[0], "fine_caption": rule_captions[1]}, ensure_ascii=False))
        return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]

    def caption_checked(self, sample, meas, scene, per_object, labels, rule_captions) -> tuple[tuple[str, str] | None, str | None]:
        """Model captions if they pass :func:`validate_captions`, else ``(None, reason)``."""
        try:
            reply = self.generate(self.messages(facts_payload(sample, meas, scene, per_object, labels), rule_captions))
            g, f = parse_model_output(reply)
        except Exception as e:  # any backend failure falls back to the rule captions, counted by reason
            return None, f"error: {type(e).__name__}: {str(e)[:120]}"
        problems = validate_captions(g, f, scene, per_object, labels, radiometric=bool(meas.get("radiometric")))
        if problems:
            return None, "invalid: " + problems[0]
        return (g, f), None


class RulesBackend(Backend):
    name = "rules"


class OpenAIBackend(Backend):
    """OpenAI-compatible chat-completions endpoint over HTTP (standard library only)."""

    name = "openai"

    def __init__(self, model: str, base_url: str, api_key_env: str = "OPENAI_API_KEY", timeout_s: float = 60.0,
                 temperature: float = 0.2, send_images: bool = True):
        if not model:
            raise ValueError("openai backend needs a model name (--model)")
        if not base_url:
            raise ValueError("openai backend needs a base URL (--base-url), e.g. http://localhost:8000/v1")
        self.model_name, self.base_url = model, base_url.rstrip("/")
        self.api_key = os.environ.get(api_key_env or "", "")
        self.timeout_s, self.temperature, self.send_images = timeout_s, temperature, send_images

    def messages(self, payload: dict[str, Any], rule_captions: tuple[str, str]) -> list[dict[str, Any]]:
        msgs: list[dict[str, Any]] = super().messages(payload, rule_captions)
        rgb = payload.get("rgb_twin")
        if self.send_images and rgb and Path(rgb).is_file():
            # The paper's setting: a vision-language model also sees the RGB twin (OpenAI vision format).
            mime = mimetypes.guess_type(str(rgb))[0] or "image/png"
            data = base64.b64encode(Path(rgb).read_bytes()).decode("ascii")
            msgs[1]["content"] = [{"type": "text", "text": msgs[1]["content"] + "\nThe RGB twin of the scene is attached; "
                                   "use it for scene context only, never for heat claims."},
                                  {"type": "image_url", "image_url": {"url": f"data:{mime};base64,{data}"}}]
        return msgs

    def generate(self, messages: list[dict[str, Any]]) -> str:
        body = json.dumps({"model": self.model_name, "messages": messages, "temperature": self.temperature}).encode()
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        req = urllib.request.Request(self.base_url + "/chat/completions", data=body, headers=headers, method="POST")
        with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
            data = json.loads(resp.read().decode("utf-8"))
        return data["choices"][0]["message"]["content"]


class TransformersBackend(Backend):
    """A local text-generation model folder (``transformers``; no hub access, no remote code)."""

    name = "transformers"

    def __init__(self, model: str, max_new_tokens: int = 200, device: str | None = None, **_: Any):
        if not model:
            raise ValueError("transformers backend needs a local model folder (--model)")
        path = Path(model).expanduser()
        if not path.is_dir():
            raise ValueError(f"transformers backend: model folder {path} does not exist")
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True, trust_remote_code=False)
        self.model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, trust_remote_code=False,
                                                          use_safetensors=True)
        if device:
            self.model.to(device)
        self.model.eval()
        self.model_name, self.max_new_tokens = str(path), max_new_tokens

    def generate(self, messages: list[dict[str, str]]) -> str:
        import torch

        tok = self.tokenizer
        if getattr(tok, "chat_template", None):
            prompt = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        else:
            prompt = "\n\n".join(m["content"] for m in messages) + "\n\nJSON:"
        enc = tok(prompt, return_tensors="pt").to(self.model.device)
        with torch.no_grad():
            out = self.model.generate(**enc, max_new_tokens=self.max_new_tokens, do_sample=False,
                                      pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id)
        return tok.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)


def make_backend(name: str, model: str | None = None, base_url: str | None = None,
                 api_key_env: str = "OPENAI_API_KEY", **kw: Any) -> Backend:
    """Build a backend by name (``rules`` | ``transformers`` | ``openai``)."""
    if name == "rules":
        return RulesBackend()
    if name == "openai":
        return OpenAIBackend(model=model or "", base_url=base_url or "", api_key_env=api_key_env, **kw)
    if name == "transformers":
        return TransformersBackend(model=model or "", **kw)
    raise ValueError(f"backend must be one of rules, transformers, openai; got {name!r}")
