"""Manifest schema v1: writer, and a reader that names the line and key of any bad record."""

import json

import pytest

from thermgen.data.sample import DataError
from thermgen.ircap.manifest import SCHEMA_VERSION, image_ref, read_manifest, resolve_image, write_manifest


def record(i=0, **over):
    rec = {
        "schema_version": SCHEMA_VERSION, "id": f"hit-uav/test/img{i}", "image": f"images/img{i}.jpg", "split": "test",
        "source": "hit-uav", "width": 640, "height": 512,
        "global_caption": "An infrared thermal image of an aerial scene at night, with two cars.",
        "fine_caption": "Thermal infrared image at night: two cars are parked and cooled.",
        "objects": [{"label": "Car", "box": [1, 2, 30, 20], "facts": {"vehicle_state": "parked"}}],
        "meta": {"time_of_day": "night"}, "measurements": {"image": {}, "objects": []},
        "captioner": {"name": "ircap-rules", "version": "1.0", "seed": 0},
    }
    rec.update(over)
    return rec


def _write_lines(path, lines):
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def test_written_manifest_reads_back_identically(tmp_path):
    recs = [record(i) for i in range(3)]
    assert write_manifest(tmp_path / "m.jsonl", recs) == 3
    assert read_manifest(tmp_path / "m.jsonl") == recs


def test_truncated_json_line_fails_with_its_line_number(tmp_path):
    good = [json.dumps(record(i)) for i in range(3)]
    _write_lines(tmp_path / "m.jsonl", good[:2] + [good[2][:57]])
    with pytest.raises(DataError, match=r"m\.jsonl line 3: invalid JSON"):
        read_manifest(tmp_path / "m.jsonl")


@pytest.mark.parametrize("key", ["image", "global_caption", "captioner", "objects"])
def test_missing_key_fails_naming_line_and_key(tmp_path, key):
    bad = record(1)
    del bad[key]
    _write_lines(tmp_path / "m.jsonl", [json.dumps(record(0)), json.dumps(bad)])
    with pytest.raises(DataError, match=rf"line 2: missing key '{key}'"):
        read_manifest(tmp_path / "m.jsonl")


@pytest.mark.parametrize("key,value,expected", [
    ("width", "640", "integer"), ("width", True, "integer"), ("objects", {}, "array"),
    ("fine_caption", 3, "string"), ("meta", [], "object"),
])
def test_wrong_type_fails_naming_line_and_key(tmp_path, key, value, expected):
    _write_lines(tmp_path / "m.jsonl", [json.dumps(record(0)), json.dumps(record(1)), json.dumps(record(2, **{key: value}))])
    with pytest.raises(DataError, match=rf"line 3: key '{key}' must be {expected}"):
        read_manifest(tmp_path / "m.jsonl")


def test_bad_object_box_names_the_object(tmp_path):
    bad = record(0, objects=[{"label": "Car", "box": [1, 2, 3], "facts": {}}])
    _write_lines(tmp_path / "m.jsonl", [json.dumps(bad)])
    with pytest.raises(DataError, match=r"line 1: objects\[0\]: key 'box' must be 4 numbers"):
        read_manifest(tmp_path / "m.jsonl")


def test_captioner_seed_must_be_an_integer(tmp_path):
    bad = record(0, captioner={"name": "ircap-rules", "version": "1.0", "seed": "0"})
    _write_lines(tmp_path / "m.jsonl", [json.dumps(bad)])
    with pytest.raises(DataError, match=r"line 1: captioner: key 'seed' must be integer"):
        read_manifest(tmp_path / "m.jsonl")


def test_duplicate_id_and_unknown_schema_version_are_rejected(tmp_path):
    _write_lines(tmp_path / "a.jsonl", [json.dumps(record(0)), json.dumps(record(0))])
    with pytest.raises(DataError, match=r"line 2: key 'id' .* duplicates line 1"):
        read_manifest(tmp_path / "a.jsonl")
    _write_lines(tmp_path / "b.jsonl", [json.dumps(record(0, schema_version=2))])
    with pytest.raises(DataError, match=r"line 1: key 'schema_version' is 2"):
        read_manifest(tmp_path / "b.jsonl")


def test_blank_lines_are_ignored_and_unknown_keys_kept(tmp_path):
    _write_lines(tmp_path / "m.jsonl", [json.dumps(record(0, extra={"x": 1})), "", json.dumps(record(1))])
    recs = read_manifest(tmp_path / "m.jsonl")
    assert len(recs) == 2 and recs[0]["extra"] == {"x": 1}


def test_writer_refuses_invalid_records_and_leaves_no_file(tmp_path):
    with pytest.raises(DataError, match="record 2 .*missing key 'split'"):
        write_manifest(tmp_path / "m.jsonl", [record(0), {k: v for k, v in record(1).items() if k != "split"}])
    assert not (tmp_path / "m.jsonl").exists() and not (tmp_path / "m.jsonl.tmp").exists()


def test_image_paths_are_relative_to_the_manifest_folder(tmp_path):
    img = tmp_path / "data" / "a.png"
    out = tmp_path / "run" / "manifest.jsonl"
    ref = image_ref(img, out)
    assert ref == "../data/a.png"
    assert resolve_image({"image": ref}, out) == (tmp_path / "run" / ".." / "data" / "a.png")


def test_missing_manifest_file_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="cannot open manifest"):
        read_manifest(tmp_path / "nope.jsonl")


def test_writer_refuses_nan_so_every_line_is_strict_json(tmp_path):
    with pytest.raises(DataError, match="record 1 .*Out of range float"):
        write_manifest(tmp_path / "m.jsonl", [record(0, measurements={"image": {"p50": float("nan")}})])


@pytest.mark.parametrize(
    "variants,match",
    [
        ([1, 2], r"key 'caption_variants' must be object"),
        ({"coarse": ["a"]}, r"caption_variants: unknown key 'coarse'"),
        ({"global": ["ok", ""]}, r"caption_variants: key 'global' must be an array of non-empty strings"),
        ({"fine": "one string"}, r"caption_variants: key 'fine' must be an array of non-empty strings"),
    ],
)
def test_bad_caption_variants_name_the_line_and_key(tmp_path, variants, match):
    _write_lines(tmp_path / "m.jsonl", [json.dumps(record(0)), json.dumps(record(1, caption_variants=variants))])
    with pytest.raises(DataError, match=r"line 2: " + match):
        read_manifest(tmp_path / "m.jsonl")


def test_caption_variants_are_optional_and_kept(tmp_path):
    ok = record(0, caption_variants={"global": ["An infrared thermal image of two cars at night."], "fine": []})
    write_manifest(tmp_path / "m.jsonl", [ok, record(1)])
    recs = read_manifest(tmp_path / "m.jsonl")
    assert recs[0]["caption_variants"]["global"] == ok["caption_variants"]["global"] and "caption_variants" not in recs[1]
