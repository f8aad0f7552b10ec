"""`mgm data ...` and `mgm train ...` run in-process through the one front door, `minigemini.cli.main`."""

from minigemini import cli


def data_main(argv: list[str]) -> int:
    return cli.main(["data", *argv])


def train_main(argv: list[str]) -> int:
    return cli.main(["train", *argv])
