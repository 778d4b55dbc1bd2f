"""`python -m budgetsvc_client`: the `budgetsvc` command, where its script is not installed."""

import sys

from budgetsvc_client.cli import main

sys.exit(main())
