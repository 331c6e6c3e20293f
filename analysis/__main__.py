"""``python -m analysis``: render docs/results.md and its figures (see :mod:`analysis.report`)."""
import sys

from .report import main

sys.exit(main())
