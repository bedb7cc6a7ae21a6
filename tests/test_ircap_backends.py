"""Optional model backends: validated against the measured facts, falling back to rules (counted)."""

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import numpy as np
import pytest
from PIL import Image

from thermgen.caption import caption_samples
from thermgen.data.sample import Box, ThermalSample
from thermgen.ircap.backends import OpenAIBackend, TransformersBackend, make_backend, parse_model_output, validate_captions
from thermgen.ircap.facts import Fact

G = "An infrared thermal image of an aerial scene at night in clear weather, with two cars and one person."
F = "Thermal infrared image at night: two cars are parked and cooled; one person glows warm, body heat."
SCENE = [Fact("time_of_day", "night"), Fact("weather", "clear")]
LABELS = ["Car", "Car", "Person"]
PER_OBJ = [[Fact("vehicle_state", "parked", "object:0")], [Fact("vehicle_state", "parked", "object:1")],
           [Fact("person_heat", "warm", "object:2")]]


def test_validator_accepts_captions_that_agree_with_the_facts():
    assert validate_captions(G, F, SCENE, PER_OBJ, LABELS) == []


@pytest.mark.parametrize("g,f,problem", [
    (G.replace("An infrared", "A"), F, "does not begin"),
    (G, F.replace("Thermal infrared image", "Infrared image"), "does not begin"),
    (G.replace("two cars", "two red cars"), F, "colour"),
    (G.replace("at night", "by day"), F, "time of day"),
    (G.replace("two cars", "three cars"), F, "annotation has 2"),
    (G.replace(" and one person", ""), F, "does not state the count of people"),
    (G, F.replace("are parked and cooled", "are running"), "running"),
    (G, F + " The wet road shines.", "wet"),
    (G + " It is" + " very" * 80 + " dark.", F, "tokens"),
    (G, F.replace("glows warm", "glows warm at 36 °C"), "not radiometric"),
    (G, F.replace("glows warm", "glows warm, 8 K above the ground"), "not radiometric"),
])
def test_validator_rejects_contradictions_and_format_errors(g, f, problem):
    problems = validate_captions(g, f, SCENE, PER_OBJ, LABELS)
    assert any(problem in p for p in problems), problems


def test_model_reply_may_wrap_the_json_in_prose():
    reply = 'Sure! ```json\n{"global_caption": "An  infrared thermal image of x.", "fine_caption": "Thermal infrared image y."}\n```'
    assert parse_model_output(reply) == ("An infrared thermal image of x.", "Thermal infrared image y.")
    with pytest.raises(ValueError):
        parse_model_output("no json here")


def _samples(tmp_path, n=4):
    out = []
    rng = np.random.default_rng(0)
    for i in range(n):
        img = np.full((64, 80), 90, np.uint8) + rng.integers(0, 3, (64, 80), dtype=np.uint8)
        img[:, :6] = np.linspace(20, 230, 64, dtype=np.uint8)[:, None]
        img[20:30, 30:34] = 220  # a warm person
        p = tmp_path / f"img{i}.png"
        Image.fromarray(img).save(p)
        out.append(ThermalSample(p, 80, 64, [Box("Person", (28.0, 18.0, 8.0, 14.0))],
                                 {"time_of_day": "night", "weather": "clear"}, "test", "folder", f"img{i}"))
    return out


class _Server:
    """A local OpenAI-compatible endpoint answering from a list of canned replies (no network)."""

    def __init__(self, replies):
        self.replies, self.requests = list(replies), []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append((self.path, self.headers.get("Authorization"), body))
                reply = outer.replies.pop(0)
                if reply is None:
                    self.send_response(500); self.end_headers(); return
                data = json.dumps({"choices": [{"message": {"role": "assistant", "content": reply}}]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *a):
                pass

        self.httpd = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()


def _reply(g, f):
    return json.dumps({"global_caption": g, "fine_caption": f})


def test_openai_backend_uses_valid_replies_and_falls_back_on_bad_ones(tmp_path, monkeypatch):
    good = _reply("An infrared thermal image of a scene at night under a clear sky with one person near the centre.",
                  "Thermal infrared image at night: one person near the centre glows warm, body heat.")
    colour = _reply("An infrared thermal image of one person in a red coat at night.", "Thermal infrared image at night: one person.")
    miscount = _reply("An infrared thermal image of two people at night.", "Thermal infrared image at night: two people.")
    server = _Server([good, colour, miscount, None])
    monkeypatch.setenv("TEST_KEY", "sk-test")
    try:
        report = caption_samples(_samples(tmp_path), tmp_path / "m.jsonl", backend="openai", progress=False,
                                 backend_options={"model": "m", "base_url": server.url, "api_key_env": "TEST_KEY"})
    finally:
        server.close()
    recs = [json.loads(line) for line in (tmp_path / "m.jsonl").read_text().splitlines()]
    assert recs[0]["captioner"]["name"] == "ircap-openai" and recs[0]["global_caption"].startswith("An infrared thermal image of a scene")
    assert [r["captioner"]["name"] for r in recs[1:]] == ["ircap-rules"] * 3
    assert report["backend"]["fallbacks"] == 3
    reasons = " ".join(report["backend"]["fallback_reasons"])
    assert "colour" in reasons and "annotation has 1" in reasons and "HTTPError" in reasons
    path, auth, body = server.requests[0]
    assert path == "/v1/chat/completions" and auth == "Bearer sk-test" and body["model"] == "m"
    assert "person_heat" in body["messages"][1]["content"]  # the measured facts are what the model sees


def test_backend_settings_are_checked():
    with pytest.raises(ValueError, match="model name"):
        OpenAIBackend(model="", base_url="http://x")
    with pytest.raises(ValueError, match="does not exist"):
        TransformersBackend(model="/nonexistent/model")
    with pytest.raises(ValueError, match="backend must be one of"):
        make_backend("gpt")


def test_transformers_backend_runs_a_local_model_and_falls_back_on_unusable_output(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["<unk>", "<eos>", "thermal", "image", "{", "}", "car", "warm", "of", "an"])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", eos_token="<eos>", pad_token="<eos>")
    model_dir = tmp_path / "tiny-lm"
    fast.save_pretrained(model_dir)
    GPT2LMHeadModel(GPT2Config(vocab_size=len(vocab), n_positions=4096, n_embd=16, n_layer=1, n_head=2)).save_pretrained(model_dir)
    report = caption_samples(_samples(tmp_path, n=2), tmp_path / "m.jsonl", backend="transformers", progress=False,
                             backend_options={"model": str(model_dir), "max_new_tokens": 6})
    # A random tiny model cannot write valid captions: every record keeps its rule captions, counted.
    assert report["backend"] == {"name": "transformers", "fallbacks": 2, "fallback_reasons": report["backend"]["fallback_reasons"]}
    assert all(k.startswith("error") or k.startswith("invalid") for k in report["backend"]["fallback_reasons"])
    recs = [json.loads(line) for line in (tmp_path / "m.jsonl").read_text().splitlines()]
    assert all(r["captioner"]["fallback_from"] == "transformers" for r in recs)


def test_openai_backend_attaches_the_rgb_twin_when_the_dataset_has_one(tmp_path):
    sample = _samples(tmp_path, n=1)[0]
    rgb = tmp_path / "rgb.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(rgb)
    sample.meta["rgb_path"] = str(rgb)
    server = _Server([None])
    try:
        caption_samples([sample], tmp_path / "m.jsonl", backend="openai", progress=False,
                        backend_options={"model": "vlm", "base_url": server.url, "api_key_env": "UNSET_KEY_FOR_TEST"})
    finally:
        server.close()
    _, auth, body = server.requests[0]
    content = body["messages"][1]["content"]
    assert auth is None
    assert content[0]["type"] == "text" and content[1]["image_url"]["url"].startswith("data:image/png;base64,")


def test_command_fails_when_every_caption_fell_back_to_the_rules(tmp_path, monkeypatch, capsys):
    import thermgen.data
    from thermgen.caption import main
    from thermgen.data.sample import SkipReport

    samples = _samples(tmp_path, n=2)
    monkeypatch.setattr(thermgen.data, "load_samples", lambda *a, **k: (samples, SkipReport()))
    server = _Server([None, None])  # the endpoint fails every request
    try:
        rc = main(["--source", "folder", "--root", str(tmp_path), "--out", str(tmp_path / "m.jsonl"), "--backend", "openai",
                   "--model", "m", "--base-url", server.url, "--no-progress"])
    finally:
        server.close()
    assert rc == 3
    err = capsys.readouterr().err
    assert "every caption (2) fell back to the rules" in err and "HTTPError" in err
    assert len((tmp_path / "m.jsonl").read_text().splitlines()) == 2  # the rule captions are still written
