"""AdaBN (tclip.adabn): a base's batch-norm statistics re-estimated on a new camera's unlabelled frames."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from tclip.adabn import adapt_base, batchnorm_layers, image_paths, main, recompute_batchnorm_stats


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.5), nn.Conv2d(4, 2, 1), nn.BatchNorm2d(2))


def test_recompute_gives_the_target_statistics_and_changes_no_weight():
    net = _net().train()
    net(torch.randn(8, 3, 8, 8))  # statistics of another domain, already counted (as in a trained base)
    assert int(net[1].num_batches_tracked) == 1
    weights = {k: v.clone() for k, v in net.state_dict().items() if "running" not in k and "num_batches" not in k}
    momenta = [bn.momentum for bn in batchnorm_layers(net)]
    net[2].eval()  # one submodule in another mode than its parent: every module's own mode is restored
    torch.manual_seed(1)
    data = torch.randn(48, 3, 8, 8) * 3.0 + 5.0  # far from the first statistics
    n = recompute_batchnorm_stats(net, data.split(16))
    assert n == 48 and int(net[1].num_batches_tracked) == 3  # the old count was reset, not added to
    with torch.no_grad():
        first = net[0](data)
        # what the last batch norm sees: each batch normalised by its own statistics, dropout off
        second = torch.cat([net[4](torch.relu(F.batch_norm(b, None, None, net[1].weight, net[1].bias, training=True)))
                            for b in first.split(16)])
    # equal-size batches: the cumulative average of the batch means is the mean over all images
    assert torch.allclose(net[1].running_mean, first.mean(dim=(0, 2, 3)), atol=1e-4)
    per_batch_var = torch.stack([b.var(dim=(0, 2, 3), unbiased=True) for b in first.split(16)]).mean(0)
    assert torch.allclose(net[1].running_var, per_batch_var, rtol=1e-4)
    assert torch.allclose(net[5].running_mean, second.mean(dim=(0, 2, 3)), atol=1e-4)
    after = net.state_dict()
    assert all(torch.equal(after[k], v) for k, v in weights.items())
    assert [bn.momentum for bn in batchnorm_layers(net)] == momenta
    assert net.training and net[1].training and net[3].training and not net[2].training
    # in eval mode the first batch norm now normalises the target images to zero mean
    net.eval()
    with torch.no_grad():
        assert net[1](first).mean(dim=(0, 2, 3)).abs().max() < 1e-3


def test_recompute_refuses_a_model_without_batch_norms_and_leaves_the_statistics_on_failure():
    with pytest.raises(ValueError, match="no batch-norm layers"):
        recompute_batchnorm_stats(nn.Sequential(nn.Linear(3, 3), nn.LayerNorm(3)), [torch.randn(4, 3)])
    net = _net().train()
    net(torch.randn(8, 3, 8, 8))
    before = {k: v.clone() for k, v in net.state_dict().items()}

    def failing():
        yield torch.randn(4, 3, 8, 8)
        raise OSError("a frame could not be read")

    for batches, err in (([torch.randn(1, 3, 8, 8)], ValueError), (failing(), OSError)):
        with pytest.raises(err):
            recompute_batchnorm_stats(net, batches)
        assert all(torch.equal(net.state_dict()[k], v) for k, v in before.items())
        assert net[1].momentum == 0.1 and net.training


def _frames(folder, n=10, size=32, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    for i in range(n):
        Image.fromarray((rng.random((size, size)) * 255).astype(np.uint8)).save(folder / f"f{i:02d}.png")
    return folder


def test_adapt_base_writes_an_open_clip_folder_that_differs_only_in_the_statistics(tmp_path):
    import open_clip
    from safetensors.torch import load_file

    from tclip.model import TCLIP

    torch.manual_seed(0)
    base = TCLIP.from_base("tclip-tiny-rn").export_base(tmp_path / "base", extra={"pretrained_on": "test scenes"})
    frames = _frames(tmp_path / "frames")
    out = adapt_base(f"local-dir:{base}", image_paths(frames), tmp_path / "adabn", batch_size=2, progress=False, workers=0)
    cfg = json.loads((out / "open_clip_config.json").read_text())
    assert cfg["thermgen"]["pretrained_on"] == "test scenes"  # the base's provenance is kept
    stats = cfg["thermgen"]["batchnorm_stats"]
    assert stats["images"] == 10 and stats["layers"] > 0 and stats["from_base"] == f"local-dir:{base}"
    a = load_file(str(base / "open_clip_model.safetensors"))
    b = load_file(str(out / "open_clip_model.safetensors"))
    assert a.keys() == b.keys()
    changed = {k for k in a if not torch.equal(a[k], b[k])}
    assert changed and all(k.startswith("visual.") and k.rsplit(".", 1)[-1] in ("running_mean", "running_var", "num_batches_tracked")
                           for k in changed)
    assert any(k.endswith("running_mean") for k in changed)
    # the statistics are those of the frames as T-CLIP preprocesses them: the stem's first batch norm has the mean of
    # its first convolution over all frames (5 batches of 2, equal sizes, so the order does not matter)
    oc = open_clip.create_model(f"local-dir:{out}")  # loads without tclip
    t = TCLIP.from_base(f"local-dir:{out}")  # and as a tclip base
    from tclip.data import load_images

    with torch.no_grad():
        conv = oc.visual.conv1(t.preprocess(load_images(image_paths(frames), t.image_size, progress=False)))
    assert torch.allclose(oc.visual.bn1.running_mean, conv.mean(dim=(0, 2, 3)), atol=1e-5)
    with pytest.raises(ValueError, match="is the base folder itself"):
        adapt_base(f"local-dir:{out}", image_paths(frames), out, batch_size=2, progress=False, workers=0)


def test_image_paths_from_a_manifest_split_or_a_folder_and_the_command_errors(tmp_path, capsys):
    frames = _frames(tmp_path / "frames", n=4)
    lines = [{"id": f"f{i}", "image": str(p), "split": "train" if i < 3 else "val", "global_caption": "a", "fine_caption": "b"}
             for i, p in enumerate(sorted(frames.glob("*.png")))]
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    assert len(image_paths(tmp_path / "m.jsonl", "train")) == 3 and len(image_paths(tmp_path / "m.jsonl")) == 4
    assert len(image_paths(frames)) == 4
    with pytest.raises(ValueError, match="no image files"):
        image_paths((tmp_path / "empty").mkdir() or tmp_path / "empty")
    with pytest.raises(ValueError, match="split applies to a manifest"):
        image_paths(frames, "train")
    assert main(["--base", "tclip-tiny-rn", "--images", str(tmp_path / "nope.jsonl"), "--out", str(tmp_path / "o")]) == 2
    assert "nope.jsonl: no such manifest or folder" in capsys.readouterr().err
    assert main(["--base", "tclip-tiny-rn", "--images", str(tmp_path / "m.jsonl"), "--split", "test", "--out", str(tmp_path / "o")]) == 2
    assert "m.jsonl: no records in split 'test'" in capsys.readouterr().err and not (tmp_path / "o").exists()
    assert main(["--base", "tclip-tiny", "--images", str(frames), "--out", str(tmp_path / "o"), "--no-progress", "--workers", "0"]) == 2
    assert "no batch-norm layers" in capsys.readouterr().err and not (tmp_path / "o").exists()
    assert main(["--base", "tclip-tiny-rn", "--images", str(tmp_path / "m.jsonl"), "--split", "train", "--out", str(tmp_path / "o"),
                 "--batch-size", "2", "--no-progress", "--workers", "0"]) == 0
    assert json.loads((tmp_path / "o" / "open_clip_config.json").read_text())["thermgen"]["batchnorm_stats"]["images"] == 2  # the last batch of one is left out
    assert json.loads((tmp_path / "o" / "open_clip_config.json").read_text())["thermgen"]["batchnorm_stats"]["images_left_out"] == 1


def test_adapt_base_takes_the_frames_in_a_seeded_random_order(tmp_path, monkeypatch):
    import tclip.data

    seen = []

    class Recording(tclip.data.ThermalImages):
        def __init__(self, paths, size):
            seen.append(list(paths))
            super().__init__(paths, size)

    monkeypatch.setattr(tclip.data, "ThermalImages", Recording)
    paths = image_paths(_frames(tmp_path / "frames", n=12))
    for i, seed in enumerate((0, 0, 1)):
        adapt_base("tclip-tiny-rn", paths, tmp_path / f"o{i}", batch_size=4, seed=seed, progress=False, workers=0)
    assert all(sorted(o) == paths for o in seen) and seen[0] != paths  # every frame once, not in the given order
    assert seen[0] == seen[1] and seen[0] != seen[2]
    assert json.loads((tmp_path / "o2" / "open_clip_config.json").read_text())["thermgen"]["batchnorm_stats"]["shuffle_seed"] == 1
