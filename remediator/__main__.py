"""``python -m remediator``: the same as the ``remediator`` command."""

import sys

from remediator.cli import main

sys.exit(main())
