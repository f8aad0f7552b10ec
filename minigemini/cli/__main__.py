"""`python -m minigemini.cli ...`: the same as `mgm ...`."""

import sys

from minigemini.cli import main

sys.exit(main())
