"""`python -m minigemini.train ...`: `mgm train ...`, for launchers (torchrun, accelerate launch) that run a module."""

import sys

from minigemini.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
