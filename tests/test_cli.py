"""The command line: info reports, and one-line errors with exit code 2 for every bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from badfiles import BAD_INPUTS, copy_with_arrays, corrupt_copy
from conftest import shared_file
from vdfzip import layout, vlsv
from vdfzip.vlasiator import VDF_TAGS
from vdfzip.cli import main


def _run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_info_json_on_fullf(capsys, fullf):
    code, out, _ = _run(capsys, "info", str(fullf), "--json")
    info = json.loads(out)
    assert code == 0 and not info["is_restart"] and info["has_vdf"]
    pops = info["populations"]
    assert list(pops) == ["proton", "antiproton"]
    assert (pops["proton"]["blocks"], pops["antiproton"]["blocks"]) == (1390, 1395)
    for p in pops.values():
        assert p["threshold"] == 1e-16 and p["dtype"] == "float32" and p["cells"] == 1
        assert p["mesh"]["blocks_per_axis"] == [50, 50, 50] and p["mesh"]["dv"] == [2e4, 2e4, 2e4]
    assert pops["proton"]["vdf_bytes"] == 1390 * (4 + 256) + 4 + 8


def test_info_json_on_the_real_restart(capsys, restart_small):
    code, out, _ = _run(capsys, "info", str(restart_small), "--json")
    info = json.loads(out)
    proton = info["populations"]["proton"]
    assert code == 0 and info["is_restart"] and info["spatial_cells"] == 72
    assert (proton["cells"], proton["blocks"], proton["threshold"]) == (72, 48538, 1e-15)
    assert (proton["blocks_per_cell"]["min"], proton["blocks_per_cell"]["max"]) == (154, 1202)


def test_info_text_report(capsys, restart_small):
    code, out, _ = _run(capsys, "info", str(restart_small))
    assert code == 0 and "restart file" in out and "72 cells, 48,538 blocks" in out and "minValue 1e-15" in out


def test_info_describes_compressed_populations(capsys, tmp_path, restart_small):
    compressed = tmp_path / "c.vdfz.vlsv"
    assert _run(capsys, "encode", str(restart_small), "-o", str(compressed), "--method", "lossless")[0] == 0
    code, out, _ = _run(capsys, "info", str(compressed), "--json")
    proton = json.loads(out)["compressed_populations"]["proton"]
    with vlsv.read(compressed) as f, vlsv.read(restart_small) as original:
        stored = sum(f.element(tag, name="proton").nbytes for tag in ("VDFZIP_INDEX", "VDFZIP_MOMENTS",
                                                                       "VDFZIP_HEADER", "VDFZIP_RECORDS"))
        plain = sum(original.element(tag, name="proton").nbytes for tag in VDF_TAGS)
    assert code == 0 and (proton["cells"], proton["blocks"], proton["format"]) == (72, 48538, layout.FORMAT_VERSION)
    assert (proton["original_vdf_bytes"], proton["compressed_bytes"]) == (plain, stored)
    assert proton["ratio"] == pytest.approx(plain / stored) and proton["methods"] == {"lossless": 72}
    code, out, _ = _run(capsys, "info", str(compressed))
    assert code == 0 and "proton: compressed by vdfzip" in out and "lossless 72" in out
    assert "no velocity distribution data" not in out


@pytest.mark.parametrize("name", ["bulk.amr.vlsv", "init.vlsv"])
def test_info_on_a_file_without_vdf(capsys, name):
    code, out, _ = _run(capsys, "info", str(shared_file(name)), "--json")
    assert code == 0 and json.loads(out)["has_vdf"] is False


def test_info_warns_when_the_threshold_is_assumed(capsys):
    code, _, err = _run(capsys, "info", str(shared_file("bulk.1d.vlsv")))
    assert code == 0 and err.startswith("vdfzip: warning:") and "1e-15" in err


def _assert_one_line_error(code, err, expected):
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vdfzip: error: ") and expected in lines[0], err
    assert "Traceback" not in err


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_files_give_one_line_errors(case, capsys, tmp_path, fullf):
    edit, _, message = BAD_INPUTS[case]
    path = corrupt_copy(tmp_path, fullf, edit)
    before = path.read_bytes()
    code, out, err = _run(capsys, "info", str(path))
    _assert_one_line_error(code, err, message)
    assert out == "" and path.read_bytes() == before


def test_foreign_compressed_file_is_refused(capsys):
    code, _, err = _run(capsys, "info", str(shared_file("bulk_hermite_compressed.0000001.vlsv")))
    _assert_one_line_error(code, err, "already compressed")


def test_inconsistent_population_is_refused(capsys, tmp_path, fullf):
    with vlsv.read(fullf) as f:
        bpc = f.read("BLOCKSPERCELL", name="antiproton") + np.uint32(1)
    copy_with_arrays(fullf, tmp_path / "bad.vlsv", {("BLOCKSPERCELL", "antiproton"): bpc})
    code, _, err = _run(capsys, "info", str(tmp_path / "bad.vlsv"))
    _assert_one_line_error(code, err, "population antiproton: BLOCKSPERCELL sums to 1396")


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["info", "/nonexistent/file.vlsv"], "No such file"),
        (["frobnicate"], "invalid choice"),
        (["info"], "required: file"),
        (["synth", "x.vlsv", "--cells", "0"], "positive integer"),
    ],
)
def test_usage_errors(capsys, argv, expected):
    code, _, err = _run(capsys, *argv)
    _assert_one_line_error(code, err, expected)


def test_installed_command_runs(fullf):
    command = Path(sys.executable).with_name("vdfzip")
    result = subprocess.run([str(command), "info", str(fullf)], capture_output=True, text=True)
    assert result.returncode == 0 and "proton: 1 cells, 1,390 blocks" in result.stdout


@pytest.mark.parametrize("name", ["bulk.amr.vlsv", "init.vlsv", "1d_single.vlsv"])
def test_a_file_without_vdf_round_trips_through_every_command(tmp_path, capsys, name):
    """vdfzip copies such a file whole, with its manifest: decode gives the original's bytes back,
    check and verify pass, and encoding the copy again is refused, as for any file vdfzip wrote."""
    source = shared_file(name)
    encoded, decoded = tmp_path / "e.vdfz.vlsv", tmp_path / "d.vlsv"
    assert _run(capsys, "encode", str(source), "-o", str(encoded))[0] == 0
    assert _run(capsys, "decode", str(encoded), "-o", str(decoded))[0] == 0
    assert decoded.read_bytes() == source.read_bytes()
    code, out, _ = _run(capsys, "check", str(encoded), "--deep")
    assert code == 0 and "OK, " in out and "0 cell records" in out
    code, out, _ = _run(capsys, "verify", str(source), str(encoded))
    assert code == 0 and "non-VDF arrays identical: True" in out
    code, _, err = _run(capsys, "encode", str(encoded), "-o", str(tmp_path / "again.vlsv"))
    assert code == 2 and "already compressed by vdfzip" in err and not (tmp_path / "again.vlsv").exists()
