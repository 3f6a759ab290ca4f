"""`python -m dlab` runs the command line."""

import sys

from dlab.cli import main

sys.exit(main())
