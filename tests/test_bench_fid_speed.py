"""thermgen.bench.fid_speed: thermgen.fid and clean-fid's compute_fid timed on the same folders, FIDs compared."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from thermgen.bench import fid_speed


class TinyInception(nn.Module):
    """Stands in for the 2048-d Inception (whose clean-fid sqrtm alone takes minutes here): 16-d pooled pixels."""

    name = "tiny-inception"
    cache_id = "tiny-inception:test"

    def __init__(self, path=None, device="cpu", channels_last=True, fold_batchnorm=True):
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = F.adaptive_avg_pool2d(x[:, :1] / 255.0, 4).flatten(1)
        return torch.cat([p[:, :8], torch.sqrt(p[:, 8:] + 0.1)], dim=1)


def _folder(path, n, level, rng):
    path.mkdir()
    for i in range(n):
        img = np.clip(rng.normal(level, 0.2, (24, 24)), 0, 1)
        Image.fromarray((img * 255).astype(np.uint8)).save(path / f"{i:02d}.png")
    return path


def test_times_both_on_the_same_folders_and_agrees_with_clean_fid(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("thermgen.metrics.inception.InceptionFeatures", TinyInception)
    rng = np.random.default_rng(0)
    real, fake = _folder(tmp_path / "real", 30, 0.3, rng), _folder(tmp_path / "fake", 26, 0.5, rng)
    out = tmp_path / "out"
    assert fid_speed.main(["--real", str(real), "--fake", str(fake), "--out", str(out), "--repeats", "2"]) == 0
    rep = json.loads((out / "fid_speed.json").read_text())
    rows = rep["rows"]
    assert set(rows) == {"cleanfid", "thermgen", "thermgen_warm"}
    assert len(rows["cleanfid"]["seconds"]) == len(rows["thermgen"]["seconds"]) == 2
    assert rows["cleanfid"]["fid"] > 1e-3  # the two folders really differ
    for r in rows.values():
        assert r["fid_rel_diff"] < 1e-6
        assert r["seconds_median"] > 0
    assert rows["cleanfid"]["ratio_to_cleanfid"] == 1.0
    # thermgen's distance on the very features clean-fid computed
    assert rep["same_features"]["fid_rel_diff"] < 1e-6
    assert rep["same_features"]["fid"] == pytest.approx(rows["cleanfid"]["fid"], rel=1e-6)
    assert rep["same_features"]["fid_dxd_eigh"] == pytest.approx(rows["cleanfid"]["fid"], rel=1e-6)
    assert "| thermgen |" in (out / "fid_speed.md").read_text()
    assert "thermgen_warm" in capsys.readouterr().out


def test_a_distance_that_strays_from_clean_fids_fails_the_bench(tmp_path, monkeypatch, capsys):
    import thermgen.metrics.fid as fid_mod

    monkeypatch.setattr("thermgen.metrics.inception.InceptionFeatures", TinyInception)
    real_fid = fid_mod.fid_from_features
    monkeypatch.setattr(fid_mod, "fid_from_features", lambda a, b: real_fid(a, b) * (1 + 1e-4))
    rng = np.random.default_rng(1)
    real, fake = _folder(tmp_path / "real", 20, 0.3, rng), _folder(tmp_path / "fake", 20, 0.5, rng)
    assert fid_speed.main(["--real", str(real), "--fake", str(fake), "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "on the same features" in err and "more than 1e-06" in err


def test_missing_folder_is_a_usage_error(tmp_path):
    with pytest.raises(SystemExit):
        fid_speed.main(["--real", str(tmp_path / "nope"), "--fake", str(tmp_path), "--out", str(tmp_path / "o")])
