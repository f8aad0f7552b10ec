"""`python -m minigemini.train ...`: the `mgm train` command, for launchers (torchrun, accelerate launch)."""

import sys

from .command import main

if __name__ == "__main__":
    sys.exit(main())
