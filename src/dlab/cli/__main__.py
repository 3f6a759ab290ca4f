"""`python -m dlab.cli`: the same as the `dlab` script."""

import sys

from dlab.cli import main

sys.exit(main())
