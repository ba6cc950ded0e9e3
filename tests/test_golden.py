"""Golden files: compressed files of every format version, committed once, must decode to the
same bytes forever (docs/format.md: every reader reads every older format version).

``tests/golden/golden.json`` holds the SHA-256 of each decoded file, recorded when the files were
written (``tests/golden/make_golden.py``). Lossless decoding is exact on any machine. Lossy decoding
is bit-exact on the CPU kind that recorded it: numba compiles the kernels for the host's vector
units and the sums' association follows them. On another CPU kind the lossy files are held to
their guarantees against the source instead, and a warning says that the bit-exact check did not run.
"""

from __future__ import annotations

import hashlib
import json
import platform
import warnings
from pathlib import Path

import llvmlite.binding
import pytest
from golden.make_golden import golden_source

from vdfzip.check import check_file
from vdfzip.decode import UncheckedFileWarning, decode_file
from vdfzip.layout import UnsupportedFormatError
from vdfzip.verify import verify_files

GOLDEN = Path(__file__).resolve().parent / "golden"
MANIFEST = json.loads((GOLDEN / "golden.json").read_text())


def _recorded_on(name: str) -> dict:
    """The machine that recorded a file's decoded bytes (its own, or the manifest's for the
    files recorded before each file said)."""
    return MANIFEST["files"][name].get("recorded_on", MANIFEST["recorded_on"])


def _recorded_here(name: str) -> bool:
    machine = _recorded_on(name)
    return machine["cpu"] == llvmlite.binding.get_host_cpu_name() and machine["machine"] == platform.machine()


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def source(tmp_path_factory, fullf):
    path = golden_source(tmp_path_factory.mktemp("golden") / "source.vlsv", fullf)
    assert _sha256(path) == MANIFEST["source_sha256"]  # the files' source is reproduced exactly
    return path


@pytest.fixture(scope="module")
def fullf():
    from conftest import shared_file

    return shared_file("fullf.0000001.vlsv")


def test_every_version_and_case_is_there():
    names = set(MANIFEST["files"])
    assert {n.split("/")[0] for n in names} == {"v1", "v2", "v3", "v4"}
    for version in ("v2", "v3", "v4"):
        assert len([n for n in names if n.startswith(f"{version}/")]) == 12  # 3 codecs x 2 profiles x 2 orders


@pytest.mark.parametrize("name", sorted(MANIFEST["files"]))
def test_golden_file_decodes_to_the_recorded_bytes(tmp_path, source, name):
    entry, path = MANIFEST["files"][name], GOLDEN / name
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        decoded = decode_file(path, tmp_path / "d.vlsv", progress=False)
        assert str(check_file(path)).startswith(f"{path}: OK")
    assert any(issubclass(w.category, UncheckedFileWarning) for w in caught) == name.startswith("v1/")
    if _recorded_here(name) or entry["method"] == "lossless":
        assert _sha256(decoded) == entry["decoded_sha256"]
        return
    warnings.warn(f"{name}: bit-exact decoding is recorded for CPU {_recorded_on(name)['cpu']}, "
                  f"not {llvmlite.binding.get_host_cpu_name()}: checked against its guarantees only")
    report = verify_files(source, decoded)
    assert report["rel_l2"]["max"] <= entry["tol"] and report["non_vdf_identical"] and report["block_sets_identical"]
    for key in ("density_rel_err_max", "velocity_err_over_vth_max", "pressure_tensor_rel_err_max"):
        assert report[key] <= 1e-6


def test_format_1_with_sorted_blocks_is_refused(tmp_path):
    """Format 1 stored values in the input's order beside sorted ids (issue 15): not decodable."""
    with pytest.raises(UnsupportedFormatError, match="--block-order sorted"):
        decode_file(GOLDEN / "refused" / "v1-lossless-core-sorted.vdfz.vlsv", tmp_path / "d.vlsv", progress=False)
    assert not (tmp_path / "d.vlsv").exists()
