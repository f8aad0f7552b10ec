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


def test_written_files_and_folders_get_the_users_permissions_not_private_ones(tmp_path):
    import os

    import torch
    from safetensors.torch import save_file

    from minigemini.saving import write_directory_atomically

    def write_model(staging):
        (staging / "config.json").write_text("{}")
        (staging / "adapter").mkdir()
        save_file({"w": torch.zeros(2)}, str(staging / "adapter" / "w.safetensors"))  # safetensors writes 0600
        (staging / "private").mkdir(mode=0o700)
        (staging / "private" / "run.sh").write_text("#!/bin/sh\n")
        (staging / "private" / "run.sh").chmod(0o700)

    previous = os.umask(0o022)
    try:
        file = write_text_atomic(tmp_path / "config.json", "{}")
        weights = write_file_atomic(
            tmp_path / "w.safetensors", lambda staging: save_file({"w": torch.zeros(2)}, str(staging))
        )
        folder = write_directory_atomically(tmp_path / "model", write_model)
    finally:
        os.umask(previous)
    # as open() and mkdir() would make them: others may read a saved model
    assert file.stat().st_mode & 0o777 == 0o644 and weights.stat().st_mode & 0o777 == 0o644
    assert folder.stat().st_mode & 0o777 == 0o755 and (folder / "adapter").stat().st_mode & 0o777 == 0o755
    assert {p.stat().st_mode & 0o777 for p in folder.rglob("*") if p.is_file() and p.suffix != ".sh"} == {0o644}
    assert (folder / "private").stat().st_mode & 0o777 == 0o755
    assert (folder / "private" / "run.sh").stat().st_mode & 0o777 == 0o755  # an executable stays one
