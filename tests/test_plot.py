"""``vdfzip verify --plot``: the PNG is written, the report is the same, the worst cells are the ones
with the largest errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from vdfzip import plot, synth
from vdfzip.cli import main
from vdfzip.encode import encode_file
from vdfzip.verify import verify_files


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    folder = tmp_path_factory.mktemp("plot")
    source = folder / "restart.vlsv"
    synth.write_synthetic_restart(source, cells=3, seed=4)
    compressed = folder / "c.vdfz.vlsv"
    encode_file(source, compressed, tol=3e-2, progress=False)
    return source, compressed


def test_verify_plot_writes_a_png_and_the_same_report(tmp_path, capsys, pair):
    source, compressed = pair
    png = tmp_path / "verify.png"
    assert main(["verify", str(source), str(compressed), "--json", "--plot", str(png)]) == 0
    with_plot = json.loads(capsys.readouterr().out)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 50_000
    assert with_plot == verify_files(source, compressed)
    assert [p.name for p in tmp_path.iterdir()] == ["verify.png"]  # written atomically, nothing else


def test_the_worst_cells_are_the_largest_errors(monkeypatch, pair):
    source, compressed = pair
    captured = {}
    monkeypatch.setattr(plot, "write_verify_plot", lambda path, compared, title: captured.update(compared))
    verify_files(source, compressed, plot="unused.png")
    cells = plot._worst_cells(captured, 2)
    by_l2 = max((s["rel_l2"].max(), name) for name, (_, _, s) in captured.items())
    assert cells[0].reason.startswith("largest rel L2") and cells[0].population.name == by_l2[1]
    series = captured[by_l2[1]][2]
    assert cells[0].cell_id == int(series["cell_id"][np.argmax(series["rel_l2"])])
    assert cells[0].original.shape == cells[0].decoded.shape and cells[0].original.max() > 0
