"""``tcsa-uda convert ...`` on the command line: summary printed, errors without traceback."""

from __future__ import annotations

import json

from tcsa_uda.cli import main


def test_convert_mmwhs_prints_the_summary(tmp_path, raw, capsys):
    raw.write_mmwhs(tmp_path / "dl", "ct", [1001, 1003, 1008, 1014, 1019], shape=(6, 6, 6))
    raw.write_mmwhs(tmp_path / "dl", "mr", [1002, 1007, 1009, 1018, 1019], shape=(6, 6, 6))
    code = main(
        [
            "convert",
            "mmwhs",
            "--ct",
            str(tmp_path / "dl"),
            "--mr",
            str(tmp_path / "dl"),
            "--out",
            str(tmp_path / "out"),
            "--no-progress",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "CT (computed tomography): 5 case(s) (train 1, val 0, test 4); labelled 5" in out
    assert "verify: OK" in out
    assert (tmp_path / "out" / "dataset.json").is_file() and (tmp_path / "out" / "summary.json").is_file()


def test_convert_error_is_one_line_with_status_2(tmp_path, raw, capsys):
    raw.write_mmwhs(tmp_path / "dl", "ct", [1001, 1003], shape=(6, 6, 6))
    code = main(
        [
            "convert",
            "mmwhs",
            "--ct",
            str(tmp_path / "dl"),
            "--mr",
            str(tmp_path / "nope"),
            "--out",
            str(tmp_path / "out"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: ") and "--mr folder" in err and "Traceback" not in err


def test_convert_brats_split_reuse(tmp_path, raw, capsys):
    raw.write_brats(tmp_path / "dl", 6, shape=(6, 6, 4), missing_seg=False)
    assert (
        main(
            [
                "convert",
                "brats",
                "--root",
                str(tmp_path / "dl"),
                "--out",
                str(tmp_path / "a"),
                "--seed",
                "5",
                "--no-progress",
            ]
        )
        == 0
    )
    split = tmp_path / "a" / "split.json"
    assert (
        main(
            [
                "convert",
                "brats",
                "--root",
                str(tmp_path / "dl"),
                "--out",
                str(tmp_path / "b"),
                "--split",
                str(split),
                "--no-progress",
            ]
        )
        == 0
    )
    a, b = (json.loads((tmp_path / d / "split.json").read_text())["domains"] for d in ("a", "b"))
    assert a == b
    assert "FLAIR (" in capsys.readouterr().out


def test_convert_abdomen_and_sifa_commands(tmp_path, raw, capsys):
    for cid in (1, 13, 32, 38):
        raw.write_chaos_case(tmp_path / "chaos", cid, rows=6, cols=6, n_slices=4)
    raw.write_btcv(tmp_path / "btcv", [1, 9, 30, 32, 33, 39], shape=(6, 6, 4))
    assert (
        main(
            [
                "convert",
                "abdomen",
                "--chaos",
                str(tmp_path / "chaos"),
                "--btcv",
                str(tmp_path / "btcv"),
                "--out",
                str(tmp_path / "abd"),
                "--no-progress",
            ]
        )
        == 0
    )
    raw.write_sifa(tmp_path / "sifa", size=8, depth=4)
    assert (
        main(
            ["convert", "mmwhs-sifa", "--root", str(tmp_path / "sifa"), "--out", str(tmp_path / "sf"), "--no-progress"]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "abdomen_chaos_btcv" in out and "mmwhs_sifa" in out
    spec = json.loads((tmp_path / "abd" / "dataset.json").read_text())
    assert [c["id"] for c in spec["domains"]["MR"]["cases"]] == ["1", "13", "32", "38"]
    assert len(spec["domains"]["CT"]["cases"]) == 6


def test_convert_mmwhs_sifa_reads_the_mpscl_tree_and_its_slice_values_flag(tmp_path, raw, capsys):
    raw.write_mpscl(tmp_path / "mpscl", size=8, n_train=2, n_val=1, depth=4)
    argv = ["convert", "mmwhs-sifa", "--root", str(tmp_path / "mpscl"), "--out", str(tmp_path / "o"), "--no-progress"]
    assert main([*argv, "--slice-values", "zscore"]) == 0
    assert "intensities z-scores as released" in capsys.readouterr().out
    assert main([*argv, "--slice-values", "percent"]) == 2
    assert "--slice-values: expected one of unit, zscore, found 'percent'" in capsys.readouterr().err


def test_convert_with_a_bad_training_case_exits_0_and_prints_the_note(tmp_path, raw, capsys):
    raw.write_mmwhs(tmp_path / "dl", "ct", [1001, 1002, 1003, 1008, 1014, 1019], shape=(6, 6, 6))
    raw.write_mmwhs(tmp_path / "dl", "mr", [1002, 1007, 1009, 1018, 1019], shape=(6, 6, 6))
    bad = next((tmp_path / "dl").rglob("ct_train_1002_image.nii.gz"))
    bad.write_bytes(b"\x1f\x8b not really gzip")
    args = ["convert", "mmwhs", "--ct", str(tmp_path / "dl"), "--mr", str(tmp_path / "dl")]
    code = main([*args, "--out", str(tmp_path / "out"), "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0
    assert f"CT train case 1002 skipped: {bad}: cannot read image as NIfTI" in out
    assert "verify: OK" in out


def test_convert_out_must_be_empty_or_an_earlier_conversion(tmp_path, raw, capsys):
    raw.write_mmwhs(tmp_path / "dl", "ct", [1001, 1003, 1008, 1014, 1019], shape=(6, 6, 6))
    raw.write_mmwhs(tmp_path / "dl", "mr", [1002, 1007, 1009, 1018, 1019], shape=(6, 6, 6))
    args = ["convert", "mmwhs", "--ct", str(tmp_path / "dl"), "--mr", str(tmp_path / "dl"), "--no-progress"]
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    assert main([*args, "--out", str(mine)]) == 2
    err = capsys.readouterr().err
    assert f"convert --out {mine}: the folder is not empty (notes.txt) and was not written by convert" in err
    assert "--overwrite" in err and sorted(p.name for p in mine.iterdir()) == ["notes.txt"]
    out = tmp_path / "out"
    assert main([*args, "--out", str(out)]) == 0
    assert main([*args, "--out", str(out)]) == 0  # a rerun into its own folder
    assert main([*args, "--out", str(mine), "--overwrite"]) == 0
    assert (mine / "dataset.json").is_file() and (mine / "notes.txt").read_text() == "keep"
