"""``python3 -m console``: the console's command line (see console/cli.py)."""

import sys

from console.cli import main

sys.exit(main())
