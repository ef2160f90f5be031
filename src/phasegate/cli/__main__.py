"""``python -m phasegate.cli``: the same as the ``phasegate`` command."""

import sys

from phasegate.cli import main

sys.exit(main())
