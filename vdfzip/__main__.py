"""``python -m vdfzip``: the command line (also under ``python -m mpi4py -m vdfzip``)."""

import sys

from .cli import main

sys.exit(main())
