"""Write golden compressed files: small files of one format version that every later vdfzip must
decode bit for bit (docs/format.md: every reader reads every older format version).

Run once per format version, never again for a version already committed:

    python tests/golden/make_golden.py write tests/golden/v2        # with the vdfzip of that version
    python tests/golden/make_golden.py record tests/golden           # SHA-256 of the new files, decoded

``write`` uses whatever ``vdfzip`` is importable, so the files of an older version come from a
checkout of it (``PYTHONPATH=/path/to/old/checkout python tests/golden/make_golden.py write
tests/golden/v1 --orders keep``); ``record`` decodes the files that ``golden.json`` does not list yet with
the current vdfzip and adds them, with the CPU kind that decoded them. The source of every file is :func:`golden_source`: the 64 blocks around the peak
of each population of ``shared/data/fullf.0000001.vlsv``, in the file's own block order.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # tests/badfiles.py
FULLF = HERE.parents[2] / "shared" / "data" / "fullf.0000001.vlsv"
BLOCKS = 64
TOL = 3e-2
#: file label → codec chain (the mlp codec alone misses the restart profile here: its chain goes on to octree)
CODECS = {"octree": "octree", "mlp": "mlp,octree", "lossless": "lossless"}
PROFILES = ("core", "restart")
ORDERS = ("sorted", "keep")


def golden_source(path: Path, fullf: Path = FULLF) -> Path:
    """fullf cut to the :data:`BLOCKS` blocks nearest each population's peak block (by block
    coordinates, ties by position), kept in the file's order: small, real, with content and tails."""
    from badfiles import copy_with_arrays

    from vdfzip import vlasiator
    from vdfzip.mesh import block_coordinates

    arrays = {}
    with vlasiator.open_file(fullf) as f:
        for name, p in f.populations.items():
            ids, values = p.cell(0)
            coords = block_coordinates(ids, p.mesh).astype(float)
            peak = coords[np.argmax(np.asarray(values).max(axis=1))]
            keep = np.sort(np.argsort(((coords - peak) ** 2).sum(axis=1), kind="stable")[:BLOCKS])
            arrays[("BLOCKSPERCELL", name)] = np.array([BLOCKS], np.uint32)
            arrays[("BLOCKIDS", name)] = np.asarray(ids)[keep]
            arrays[("BLOCKVARIABLE", name)] = np.asarray(values)[keep]
    copy_with_arrays(fullf, path, arrays)
    return path


def case_name(codec: str, profile: str, order: str) -> str:
    return f"{codec}-{profile}-{order}.vdfz.vlsv"


def write(folder: Path, orders) -> None:
    from vdfzip.encode import encode_file

    folder.mkdir(parents=True, exist_ok=True)
    source = golden_source(folder / "source.vlsv")
    for label, chain in CODECS.items():
        for profile in PROFILES:
            for order in orders:
                encode_file(source, folder / case_name(label, profile, order), tol=TOL, method=chain,
                            profile=profile, block_order=order, progress=False, force=True)
    source.unlink()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def record(root: Path) -> None:
    """Add to ``golden.json``, per golden file not yet in it, what it is, the SHA-256 of its
    decoded file and the machine that decoded it (entries already there are never recorded again:
    lossy decoding is bit-exact only on the CPU kind that recorded it)."""
    import warnings

    import llvmlite.binding

    from vdfzip.decode import decode_file

    manifest_path = root / "golden.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {"files": {}}
    scratch = root / "scratch"
    scratch.mkdir(exist_ok=True)
    source = golden_source(scratch / "source.vlsv")
    if manifest.setdefault("source_sha256", sha256(source)) != sha256(source):
        raise SystemExit("the golden source is no longer reproduced: its recorded files cannot be extended")
    machine = {"cpu": llvmlite.binding.get_host_cpu_name(), "machine": platform.machine(), "numpy": np.__version__}
    for path in sorted(root.glob("v*/*.vdfz.vlsv")):
        name = str(path.relative_to(root))
        if name in manifest["files"]:
            continue
        label, profile, order = path.name[: -len(".vdfz.vlsv")].split("-")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # format 1 has no whole-file checksums: it says so
            decoded = decode_file(path, scratch / "decoded.vlsv", progress=False, force=True)
        manifest["files"][name] = {
            "method": CODECS[label], "profile": profile, "block_order": order, "tol": TOL,
            "decoded_sha256": sha256(decoded), "recorded_on": machine,
        }
    manifest.setdefault("recorded_on", machine)
    manifest_path.write_text(json.dumps(manifest, indent=1) + "\n")
    for leftover in scratch.iterdir():
        leftover.unlink()
    scratch.rmdir()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("write", "record"))
    parser.add_argument("folder", type=Path)
    parser.add_argument("--orders", nargs="+", default=list(ORDERS), choices=ORDERS)
    args = parser.parse_args()
    write(args.folder, args.orders) if args.action == "write" else record(args.folder)


if __name__ == "__main__":
    main()
