"""Safe output files: write to a temporary sibling, rename into place only on success."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .errors import VdfzipError


class OutputExistsError(VdfzipError):
    """The output path exists and overwriting was not allowed."""


class SameFileError(VdfzipError):
    """The output path resolves to an input file."""


def check_output_path(out: str | os.PathLike, *, inputs=(), overwrite: bool = False) -> Path:
    """Refuse an output that is one of ``inputs`` or that exists when ``overwrite`` is false."""
    out = Path(out)
    for src in inputs:
        if out.resolve() == Path(src).resolve():
            raise SameFileError(f"output {out} is the input file; choose another output path")
    if out.exists() and not overwrite:
        raise OutputExistsError(f"{out} exists; pass --force to overwrite it")
    if not out.parent.is_dir():
        raise VdfzipError(f"output directory {out.parent} does not exist")
    return out


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` if the block succeeds.

    On any exception, Ctrl-C included, the temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; outputs get the usual permissions
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
