"""python -m thermgen.bench.curves: two runs' per-stage loss curves compared."""

import json

from thermgen.bench.curves import STAGE_LOGS, main


def _write(run, rel, rows, header):
    path = run / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(",".join(header) + "\n" + "".join(",".join(map(str, r)) + "\n" for r in rows))


def test_curves_reports_the_largest_difference_per_stage_and_names_a_missing_log(tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    tclip = [(10, "base", 2.0), (20, "base", 1.5), (10, "global", 1.0)]
    _write(a, STAGE_LOGS["tclip"], tclip, ["step", "stage", "loss"])
    _write(b, STAGE_LOGS["tclip"], [(s, p, v * (1.01 if (s, p) == (20, "base") else 1)) for s, p, v in tclip],
           ["step", "stage", "loss"])
    unet = [(1, 0.5), (2, 0.4), (3, 0.3)]
    _write(a, STAGE_LOGS["unet"], unet, ["step", "loss"])
    _write(b, STAGE_LOGS["unet"], unet[:2], ["step", "loss"])
    _write(a, STAGE_LOGS["vae"], [(1, 0.1)], ["step", "loss"])
    out = tmp_path / "out"
    assert main(["--a", str(a), "--b", str(b), "--out", str(out)]) == 0
    rep = json.loads((out / "curves.json").read_text())
    assert rep["tclip"]["common"] == 3 and abs(rep["tclip"]["max_abs_diff"] - 0.015) < 1e-9
    assert abs(rep["tclip"]["max_rel_diff"] - 0.01) < 1e-9  # the base and global steps 10 are told apart
    assert rep["unet"]["common"] == 2 and rep["unet"]["max_abs_diff"] == 0.0 and rep["unet"]["steps_a"] == 3
    assert rep["vae"]["missing"] == [str(b / STAGE_LOGS["vae"])]
    assert (out / "curves.png").stat().st_size > 0
    printed = capsys.readouterr().out
    assert "vae: no loss log in" in printed and "tclip: 3 logged steps in common" in printed
    assert main(["--a", str(tmp_path / "nope"), "--b", str(b), "--out", str(out)]) == 2


def test_curves_with_no_step_in_common_says_so(tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    _write(a, STAGE_LOGS["unet"], [(1, 0.5), (3, 0.4)], ["step", "loss"])
    _write(b, STAGE_LOGS["unet"], [(2, 0.5), (4, 0.4)], ["step", "loss"])
    assert main(["--a", str(a), "--b", str(b), "--out", str(tmp_path / "out")]) == 0
    assert "unet: no logged step in common (2 / 2 steps)" in capsys.readouterr().out
