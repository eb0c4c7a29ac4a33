"""``python -m mtbio`` = the ``mtbio`` command."""

import sys

from mtbio.cli import main

sys.exit(main())
