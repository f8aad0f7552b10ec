"""Atomic file writes: a reader sees the old file or the new one, never half of one, and nothing is left behind."""

import pytest

from minigemini.saving import write_file_atomic, write_text_atomic


def test_a_failed_write_keeps_the_previous_file_and_leaves_no_staging_file(tmp_path):
    target = write_text_atomic(tmp_path / "sub" / "weights.bin", "old")
    assert target.read_text() == "old"

    def dies_half_way(staging):
        staging.write_text("half of the new")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_file_atomic(target, dies_half_way)
    assert target.read_text() == "old" and sorted(p.name for p in target.parent.iterdir()) == ["weights.bin"]
    write_file_atomic(target, lambda staging: staging.write_bytes(b"new"))
    assert target.read_bytes() == b"new" and len(list(target.parent.iterdir())) == 1
