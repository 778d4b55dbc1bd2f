"""`python -m budgetsvc`: the `budgetsvc` command, where its script is not installed."""

import sys

from budgetsvc.cli import main

sys.exit(main())
