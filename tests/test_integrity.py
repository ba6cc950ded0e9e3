"""Whole-file integrity: any changed byte of a compressed file is refused by decode, check and
verify, naming what is damaged; ``vdfzip check`` without the original."""

from __future__ import annotations

import pytest

from vdfzip import integrity, layout, synth, vlsv
from vdfzip.check import check_file
from vdfzip.cli import main
from vdfzip.decode import decode_file
from vdfzip.encode import encode_file
from vdfzip.errors import VdfzipError
from vdfzip.verify import verify_files

#: Every STRIDE-th byte of the data section is flipped (a different bit each time); every byte of
#: the header and the footer is.
STRIDE = 61


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A 2-cell synthetic restart (two populations, every restart array) and its default encoding."""
    folder = tmp_path_factory.mktemp("integrity")
    source = folder / "restart.vlsv"
    synth.write_synthetic_restart(source, cells=2, seed=1)
    compressed = folder / "c.vdfz.vlsv"
    encode_file(source, compressed, tol=3e-2, progress=False)
    return source, compressed


def _flipped(data: bytes, position: int) -> bytes:
    changed = bytearray(data)
    changed[position] ^= 1 << (position % 8)
    return bytes(changed)


def test_every_flipped_bit_is_refused_by_decode_and_check(tmp_path, files):
    _, compressed = files
    data = compressed.read_bytes()
    with vlsv.read(compressed) as f:
        footer = f.footer_offset
    positions = [*range(vlsv.HEADER_BYTES), *range(vlsv.HEADER_BYTES, footer, STRIDE)]
    bad, out = tmp_path / "bad.vdfz.vlsv", tmp_path / "out.vlsv"
    for position in positions:
        bad.write_bytes(_flipped(data, position))
        with pytest.raises(VdfzipError):
            decode_file(bad, out, progress=False, force=True)
        assert not out.exists(), position
        with pytest.raises(VdfzipError):
            check_file(bad)
    for position in range(footer, len(data)):  # the footer: refused when the file is opened
        bad.write_bytes(_flipped(data, position))
        with pytest.raises(VdfzipError):
            check_file(bad)
    assert len(positions) + len(data) - footer > 3000


def _damage(path, tag, name=None, at=0):
    with vlsv.read(path) as f:
        element = f.element(tag, **({"name": name} if name else {}))
    data = bytearray(path.read_bytes())
    data[element.offset + at] ^= 0x10
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("tag, name, message", [
    ("CONFIG", None, "array CONFIG config_file is damaged"),
    ("VARIABLE", "fg_PERB", "array VARIABLE fg_PERB is damaged"),
    ("VDFZIP_INTEGRITY", None, "VDFZIP_INTEGRITY fails its checksum"),
])
def test_a_damaged_array_is_named(tmp_path, capsys, files, tag, name, message):
    _, compressed = files
    bad = tmp_path / "bad.vdfz.vlsv"
    bad.write_bytes(compressed.read_bytes())
    _damage(bad, tag, name)
    for argv in (["decode", bad, "-o", tmp_path / "d.vlsv"], ["check", bad]):
        assert main([str(a) for a in argv]) == 2
        err = capsys.readouterr().err
        assert err.startswith("vdfzip: error:") and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "d.vlsv").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.vdfz.vlsv"]  # no temporary file left


def test_a_changed_footer_attribute_is_refused(tmp_path, files):
    _, compressed = files
    text = compressed.read_bytes()
    changed = text.replace(b'name="moments_dt2"', b'name="moments_dt3"', 1)
    assert changed != text
    bad = tmp_path / "bad.vdfz.vlsv"
    bad.write_bytes(changed)
    with pytest.raises(integrity.IntegrityError, match="the footer has been changed"):
        check_file(bad)


def test_verify_refuses_a_damaged_compressed_file(tmp_path, files):
    source, compressed = files
    bad = tmp_path / "bad.vdfz.vlsv"
    bad.write_bytes(compressed.read_bytes())
    _damage(bad, "VARIABLE", "fg_E", at=3)
    with pytest.raises(integrity.IntegrityError, match="fg_E is damaged"):
        verify_files(source, bad)


def test_check_reports_what_it_checked(capsys, files):
    source, compressed = files
    assert main(["check", str(compressed), "--deep"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{compressed}: OK,") and "4 cell records" in out and "every cell decoded" in out
    report = check_file(compressed, deep=True)
    assert report.cells == 4 and report.worst_moment_error <= 1e-6 and report.format == layout.FORMAT_VERSION
    assert main(["check", str(source)]) == 2
    assert "is not a vdfzip-compressed file" in capsys.readouterr().err


def test_decoded_file_matches_what_was_encoded(tmp_path, files):
    """The manifest's restored footer is the original's: a clean decode passes its own check."""
    source, compressed = files
    decoded = decode_file(compressed, tmp_path / "d.vlsv", progress=False)
    with vlsv.read(source) as a, vlsv.read(decoded) as b:
        assert a.raw_footer() == b.raw_footer()
