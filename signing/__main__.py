"""``python3 -m signing``: the same as ``coalmine-sign``."""

import sys

from signing.cli import main

sys.exit(main())
