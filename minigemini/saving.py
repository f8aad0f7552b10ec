"""Writing files and model directories safely: into a temporary sibling, renamed into place only when complete."""

import json
import os
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path


def check_new_directory(destination: str | os.PathLike) -> Path:
    """`destination` as a Path, if it is free to write (absent or an empty directory); else FileExistsError."""
    destination = Path(destination).expanduser()
    if destination.exists() and (not destination.is_dir() or any(destination.iterdir())):
        raise FileExistsError(f"{destination} already exists and is not empty; choose a new directory")
    return destination


def _staging_sibling(path: Path) -> Path:
    return path.with_name(f".{path.name}.partial-{os.getpid()}-{secrets.token_hex(4)}")


# What is renamed into place gets the permissions of any file the user creates (their umask): tempfile's staging is
# private (0600/0700) and safetensors writes 0600, which left saved models unreadable to others on a shared machine.
# The staging file or folder is created first, under the umask; its mode is then given to what the writer wrote
# (inside a folder: to its subfolders, and to its files without the execute bits unless the writer set one).


def write_file_atomic(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Run ``write(staging)`` for a temporary sibling of ``path``, then rename it into place: readers never see half
    a file, and an error (or an interrupt) leaves ``path`` as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = _staging_sibling(path)
    try:
        staging.touch(exist_ok=False)
        mode = staging.stat().st_mode & 0o777
        write(staging)
        os.chmod(staging, mode)
        os.replace(staging, path)
    except BaseException:
        staging.unlink(missing_ok=True)
        raise
    return path


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return write_file_atomic(path, lambda staging: staging.write_text(text, encoding="utf-8"))


def write_json_atomic(path: str | os.PathLike, value) -> Path:
    """``value`` as JSON (UTF-8, indented), written atomically."""
    return write_text_atomic(path, json.dumps(value, ensure_ascii=False, indent=1) + "\n")


def write_directory_atomically(destination: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Run `write(staging_dir)` in a temporary sibling of `destination`, then rename it into place.

    An error (or an interrupt) leaves nothing at `destination`. An existing non-empty `destination` is refused.
    """
    destination = check_new_directory(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    staging = _staging_sibling(destination)
    staging.mkdir()
    try:
        write(staging)
        folder_mode = staging.stat().st_mode & 0o777
        for path in staging.rglob("*"):
            if path.is_symlink():
                continue
            if path.is_dir():
                os.chmod(path, folder_mode)
            elif path.is_file():  # as the umask allows; executable (a script) only where the writer made it so
                os.chmod(path, folder_mode if path.stat().st_mode & 0o111 else folder_mode & 0o666)
        if destination.exists():
            destination.rmdir()
        staging.rename(destination)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return destination


def save_model_and_processor(model, processor, destination: str | os.PathLike) -> Path:
    """save_pretrained of the model (and processor), atomically."""

    def write(directory: Path) -> None:
        model.save_pretrained(directory)
        if processor is not None:
            processor.save_pretrained(directory)

    return write_directory_atomically(destination, write)
