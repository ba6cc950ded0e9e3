"""``python -m vdfzip``: the command line (also under ``python -m mpi4py -m vdfzip``)."""

import sys

from .cli import main

if __name__ == "__main__":  # why: --jobs workers import this module again as __mp_main__
    sys.exit(main())
