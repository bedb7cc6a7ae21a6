"""tclip.data: the minimal manifest reader and the thermal image loader."""

import json

import numpy as np
import pytest
from PIL import Image

from tclip.data import ManifestError, load_thermal_image, read_manifest


def _line(i, split="train", **over):
    rec = {
        "schema_version": 1,
        "id": f"demo/{split}/{i}",
        "image": f"img/{i}.png",
        "split": split,
        "global_caption": f"An infrared thermal image of scene {i}.",
        "fine_caption": f"Thermal infrared image: object {i} warm.",
    }
    rec.update(over)
    return json.dumps(rec)


def test_8bit_images_use_the_fixed_255_scale(tmp_path):
    arr = np.array([[0, 51], [255, 128]], dtype=np.uint8)
    Image.fromarray(arr).save(tmp_path / "a.png")
    out = load_thermal_image(tmp_path / "a.png")
    assert out.dtype == np.float32 and out.shape == (2, 2)
    np.testing.assert_allclose(out, arr / 255.0, atol=1e-7)


def test_16bit_images_use_the_fixed_65535_scale(tmp_path):
    arr = np.array([[0, 1000], [65535, 30000]], dtype=np.uint16)
    Image.fromarray(arr).save(tmp_path / "a.png")
    np.testing.assert_allclose(load_thermal_image(tmp_path / "a.png"), arr / 65535.0, atol=1e-7)


def test_grey_rgb_is_read_as_one_channel_and_colour_is_refused(tmp_path):
    grey = np.repeat(np.array([[10, 200]], dtype=np.uint8)[..., None], 3, axis=2)
    Image.fromarray(grey).save(tmp_path / "g.png")
    np.testing.assert_allclose(load_thermal_image(tmp_path / "g.png"), [[10 / 255, 200 / 255]], atol=1e-7)
    colour = grey.copy()
    colour[0, 0] = [255, 0, 0]
    Image.fromarray(colour).save(tmp_path / "c.png")
    with pytest.raises(ManifestError, match="c.png.*colour"):
        load_thermal_image(tmp_path / "c.png")


def test_missing_image_is_named(tmp_path):
    with pytest.raises(ManifestError, match="nothere.png"):
        load_thermal_image(tmp_path / "nothere.png")


def test_manifest_paths_resolve_against_its_folder_and_split_filters(tmp_path):
    (tmp_path / "m.jsonl").write_text("\n".join([_line(0), _line(1, "test"), "", _line(2)]) + "\n")
    recs = read_manifest(tmp_path / "m.jsonl", split="train")
    assert [r.id for r in recs] == ["demo/train/0", "demo/train/2"]
    assert recs[0].image == tmp_path / "img" / "0.png" and recs[1].line == 4
    assert len(read_manifest(tmp_path / "m.jsonl")) == 3
    assert recs[0].caption("fine").startswith("Thermal infrared image")


@pytest.mark.parametrize(
    "bad,match",
    [
        ("{not json", r"m.jsonl:2: not valid JSON"),
        (_line(5, fine_caption=""), r"m.jsonl:2: field 'fine_caption'"),
        (json.dumps([1, 2]), r"m.jsonl:2: a line must be a JSON object"),
        (_line(0), r"m.jsonl:2: field 'id' 'demo/train/0' duplicates line 1"),
        (_line(5, caption_variants=["x"]), r"m.jsonl:2: field 'caption_variants' must be an object"),
        (_line(5, caption_variants={"global": ["ok", 3]}), r"m.jsonl:2: field 'caption_variants.global' must be a list"),
        (_line(5, caption_variants={"other": ["x"]}), r"m.jsonl:2: field 'caption_variants' has unknown key 'other'"),
    ],
)
def test_bad_manifest_lines_are_reported_with_file_line_and_field(tmp_path, bad, match):
    (tmp_path / "m.jsonl").write_text(_line(0) + "\n" + bad + "\n")
    with pytest.raises(ManifestError, match=match):
        read_manifest(tmp_path / "m.jsonl")


def test_caption_variants_follow_the_main_caption(tmp_path):
    (tmp_path / "m.jsonl").write_text(
        _line(0, caption_variants={"global": ["An infrared thermal image, scene 0 again."]}) + "\n" + _line(1) + "\n"
    )
    a, b = read_manifest(tmp_path / "m.jsonl")
    assert a.captions("global") == ("An infrared thermal image of scene 0.", "An infrared thermal image, scene 0 again.")
    assert a.captions("fine") == ("Thermal infrared image: object 0 warm.",)
    assert b.captions("global") == (b.global_caption,)


def test_thermal_images_stream_the_values_that_load_images_preloads(tmp_path):
    import torch

    from tclip.data import ThermalImages, load_images, split_images

    rng = np.random.default_rng(1)
    paths = []
    for i, shape in enumerate([(40, 48), (30, 30), (64, 20)]):
        p = tmp_path / f"{i}.png"
        Image.fromarray((rng.random(shape) * 255).astype(np.uint8)).save(p)
        paths.append(p)
    whole = load_images(paths, 16, progress=False)
    ds = ThermalImages(paths, 16)
    assert len(ds) == 3 and ds.nbytes() == 3 * 16 * 16 * 4
    assert torch.equal(torch.stack([ds[i] for i in range(3)]), whole)
    # split_images keeps a split in memory only within its budget
    assert isinstance(split_images(paths, 16, cache_mb=None, progress=False), torch.Tensor)
    assert isinstance(split_images(paths, 16, cache_mb=0, progress=False), ThermalImages)
    assert isinstance(split_images(paths, 16, cache_mb=1, progress=False), torch.Tensor)
    with pytest.raises(ManifestError, match="missing.png: image file not found"):
        ThermalImages([tmp_path / "missing.png"], 16)[0]
