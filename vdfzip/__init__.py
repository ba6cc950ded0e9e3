"""vdfzip: lossy compression of Vlasiator velocity distribution functions.

The layers, bottom up: :mod:`vdfzip.vlsv` (the container), :mod:`vdfzip.vlasiator`
(populations, meshes, cells), :mod:`vdfzip.mesh` and :mod:`vdfzip.physics` (geometry and
moments), :mod:`vdfzip.conservation` (moment restoration), :mod:`vdfzip.codecs`,
:mod:`vdfzip.layout` (the compressed format), :func:`encode_file`, :func:`decode_file`,
:func:`verify_files`, :mod:`vdfzip.synth` (synthetic restarts), :mod:`vdfzip.cli`; for cells in
memory :class:`Compressor` (:mod:`vdfzip.runtime`), :class:`CompressedCells` and
:func:`write_compressed`.
"""

import importlib.util
import sys
from pathlib import Path

__version__ = "0.1.0"


def _load_source_kernels() -> None:
    """Make ``vdfzip.kernels`` importable from a source checkout.

    DESIGN.md fixes ``kernels/`` at the top of the repository; the wheel ships it as
    ``vdfzip/kernels``, but an editable install maps only ``vdfzip/``, so there the package is
    loaded from ``../kernels``.
    """
    if importlib.util.find_spec(f"{__name__}.kernels") is not None:
        return
    source = Path(__file__).resolve().parent.parent / "kernels"
    spec = importlib.util.spec_from_file_location(
        f"{__name__}.kernels", source / "__init__.py", submodule_search_locations=[str(source)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)


_load_source_kernels()

_API = {"encode_file": "encode", "decode_file": "decode", "verify_files": "verify", "Compressor": "runtime",
        "CompressedCells": "cells", "write_compressed": "writer"}


def __getattr__(name: str):
    """``vdfzip.encode_file`` / ``decode_file`` / ``verify_files``, the runtime API
    (``Compressor``, ``CompressedCells``, ``write_compressed``), imported on first use so that
    ``import vdfzip`` (and ``vdfzip --help``) stays light."""
    if name in _API:
        return getattr(importlib.import_module(f"{__name__}.{_API[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
