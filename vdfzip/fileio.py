"""Safe output files: write to a temporary sibling, rename into place only on success."""

from __future__ import annotations

import contextlib
import glob
import os
import socket
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


def _scratch_prefix(path: Path) -> str:
    """Names of this host's temporary outputs for ``path`` start with this; the writer's pid follows."""
    return f".{path.name}.vdfzip-{socket.gethostname()}-"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_stale_outputs(path: Path) -> list[Path]:
    """Remove the temporary outputs for ``path`` that a killed run on this host left behind
    (SIGKILL, a node crash: nothing of the run could clean up); returns what was removed. Runs on
    other hosts are left alone: their pids mean nothing here."""
    prefix = _scratch_prefix(path)
    removed = []
    for leftover in path.parent.glob(glob.escape(prefix) + "*.part"):
        pid = leftover.name[len(prefix) : -len(".part")]
        if pid.isdigit() and not _alive(int(pid)):
            with contextlib.suppress(FileNotFoundError):
                leftover.unlink()
                removed.append(leftover)
    return removed


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` if the block succeeds.

    On any exception, Ctrl-C and SIGTERM (see :mod:`vdfzip.cli`) included, the temporary file is
    removed and ``path`` is untouched. It is named after ``path``, this host and this process, so
    the next run into the same place removes it if a SIGKILL left it behind.
    """
    path = Path(path)
    remove_stale_outputs(path)
    tmp = path.with_name(f"{_scratch_prefix(path)}{os.getpid()}.part")
    umask = os.umask(0)
    os.umask(umask)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666 & ~umask)
    except FileExistsError:
        raise VdfzipError(f"{path} is being written by this process already") from None
    os.close(fd)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
