"""``python -m grader ...``: the same as ``nox -s grade -- ...``."""

import sys

from grader.cli import main

sys.exit(main())
