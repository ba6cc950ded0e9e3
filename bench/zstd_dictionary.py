"""Would a zstd dictionary trained per file shrink the octree payloads? (issue 17, item 3)

Encodes the real restart (default and ``--profile core``) and a synthetic restart (``vdfzip
synth --cells N --seed 1``, default), takes every octree payload's zstd frame (the byte planes
of the quantized Tucker factors and core, ``docs/format.md``), and compresses their contents
again at the codec's level 19 without and with a dictionary of 2–16 KiB trained by
``zstandard.train_dictionary``:

- *in-file*: trained on all of the file's frames, the dictionary stored once in the file (its
  bytes are counted): what a two-pass encoder would store;
- *held out*: trained on the even cells, measured on the odd ones (dictionary not counted): how
  well a dictionary trained on the first cells (a one-pass, MPI-friendly encoder) carries over.

Bytes are the frames' only (the records also hold block structure, multipliers and headers).

    python bench/zstd_dictionary.py [--synth-cells 600] [--markdown bench/RESULTS-zstd-dictionary.md]
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

import zstandard

from vdfzip.decode import CompressedFile
from vdfzip.encode import encode_file
from vdfzip.synth import write_synthetic_restart

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "restart_ipshock_small.vlsv"
MAGIC = b"\x28\xb5\x2f\xfd"
LEVEL = 19
SIZES = (2048, 4096, 8192, 16384)


def octree_frames(path: Path) -> list[bytes]:
    """The decompressed contents of every octree payload's zstd frame."""
    contents = []
    with CompressedFile(path) as f:
        for p in f.populations.values():
            octree = [k for k, codec in enumerate(p.codecs) if codec.codec_id == "octree"]
            for cell in range(p.cell_count):
                if p.index["codec"][cell] not in octree:
                    continue
                payload = p.record(cell)[2]
                frame = payload[payload.index(MAGIC, 1) :]  # the frame ends the payload
                contents.append(zstandard.ZstdDecompressor().decompress(frame, max_output_size=1 << 26))
    return contents


def compressed(contents: list[bytes], dictionary: zstandard.ZstdCompressionDict | None) -> tuple[int, float]:
    compressor = zstandard.ZstdCompressor(level=LEVEL, dict_data=dictionary)
    started = time.perf_counter()
    size = sum(len(compressor.compress(c)) for c in contents)
    return size, time.perf_counter() - started


def rows(label: str, contents: list[bytes]) -> list[str]:
    plain, seconds = compressed(contents, None)
    held_plain, _ = compressed(contents[1::2], None)
    lines = [f"| {label} | {len(contents)} | none | {plain} | | {seconds:.2f} | {held_plain} | |"]
    for size in SIZES:
        dictionary = zstandard.train_dictionary(size, contents)
        inside, seconds = compressed(contents, dictionary)
        held, _ = compressed(contents[1::2], zstandard.train_dictionary(size, contents[::2]))
        lines.append(f"| {label} | {len(contents)} | {size} | {inside} | {(inside + size) / plain - 1:+.1%} | "
                     f"{seconds:.2f} | {held} | {held / held_plain - 1:+.1%} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--synth-cells", type=int, default=600)
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args()
    lines = ["# A zstd dictionary per file for the octree payloads\n",
             f"Machine: {platform.machine()}, Python {platform.python_version()}, zstandard {zstandard.__version__}. "
             f"Command: `python bench/zstd_dictionary.py --synth-cells {args.synth_cells}`. See the script's "
             "docstring for what each column is.\n",
             "| case | octree cells | dictionary B | frames B, in-file | with the dictionary vs none | compress s | "
             "frames B, held-out odd cells | vs none |",
             "|---|---|---|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        synthetic = tmp / "synth.vlsv"
        write_synthetic_restart(synthetic, cells=args.synth_cells, seed=1)
        for label, source, profile in (("real restart, default", REAL, None), ("real restart, core", REAL, "core"),
                                       (f"synthetic {args.synth_cells} cells, default", synthetic, None)):
            out = tmp / "out.vdfz.vlsv"
            encode_file(source, out, profile=profile, progress=False, force=True)
            lines += rows(label, octree_frames(out))
    text = "\n".join(lines) + "\n"
    print(text)
    if args.markdown:
        args.markdown.write_text(text)


if __name__ == "__main__":
    sys.exit(main())
