"""Exception types: every bad input gets its own type, all under :class:`VdfzipError`.

The command line turns any :class:`VdfzipError` into a one-line ``vdfzip: error: ...`` message
and exit code 2; library callers can catch the specific type.
"""


class VdfzipError(Exception):
    """Base class of every error vdfzip raises on purpose."""


class NotVlsvError(VdfzipError):
    """The file is not a VLSV file at all (too short, no footer, no ``<VLSV>`` root)."""


class TruncatedFileError(VdfzipError):
    """The file ends before its footer (footer offset 0 or beyond the end): the writer died."""


class UnsupportedFileError(VdfzipError):
    """A valid VLSV file that vdfzip does not handle (big-endian data)."""


class CorruptFooterError(VdfzipError):
    """The XML footer cannot be parsed or an element lacks a required attribute."""


class ArrayOutOfBoundsError(VdfzipError):
    """An array's bytes run past the start of the footer."""


class MissingArrayError(VdfzipError):
    """An array the caller asked for is not in the file."""


class InconsistentPopulationError(VdfzipError):
    """A population's VDF arrays disagree with each other (sizes, block width)."""


class AlreadyCompressedError(VdfzipError):
    """The VDF arrays were written by a compressing tool and are not plain block values."""


class CorruptFileError(VdfzipError):
    """A compressed file whose bytes fail their checksums or do not parse."""
