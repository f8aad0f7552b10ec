"""Writing files and model directories safely: into a temporary sibling, renamed into place only when complete."""

import contextlib
import json
import os
import secrets
import shutil
from collections.abc import Callable, Iterator
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


def set_generation_defaults(model, processor) -> None:
    """Give ``model.generation_config`` the stop tokens and pad token of ``processor`` (its chat template's end of
    turn, the tokenizer's eos), so that a plain ``generate()`` and transformers' ``image-text-to-text`` pipeline stop
    where ``mgm.chat`` stops.  A processor without ``stop_settings`` (a bare tokenizer) leaves it as it is."""
    if not hasattr(processor, "stop_settings"):
        return
    _, stop_ids = processor.stop_settings()
    if stop_ids:
        model.generation_config.eos_token_id = sorted(stop_ids)
    model.generation_config.pad_token_id = processor.tokenizer.pad_token_id


@contextlib.contextmanager
def code_for_auto_classes(*objects) -> Iterator[None]:
    """Within it, ``save_pretrained`` writes the package's model and processor code beside the weights, with the
    ``auto_map`` entries (transformers' ``register_for_auto_class``) that let ``AutoModelForImageTextToText`` /
    ``AutoProcessor.from_pretrained(dir, trust_remote_code=True)`` load the checkpoint where this package is not
    installed.  The classes and ``objects`` (the model's config, the processor, ...) are restored afterwards, so
    later saves are plain again."""
    from .configuration import MiniGeminiConfig
    from .image_processing import MiniGeminiImageProcessor
    from .modeling import MiniGeminiForConditionalGeneration
    from .processing import MiniGeminiProcessor

    auto_classes = {
        MiniGeminiConfig: "AutoConfig",
        MiniGeminiForConditionalGeneration: "AutoModelForImageTextToText",
        MiniGeminiProcessor: "AutoProcessor",
        MiniGeminiImageProcessor: "AutoImageProcessor",
    }
    saved_classes = [(cls, cls.__dict__.get("_auto_class", _MISSING)) for cls in auto_classes]
    saved_maps = [(obj, obj.__dict__.get("auto_map", _MISSING)) for obj in objects if obj is not None]
    for cls, auto_class in auto_classes.items():
        cls.register_for_auto_class(auto_class)
    try:
        yield
    finally:
        for cls, value in saved_classes:
            if value is _MISSING:
                del cls._auto_class  # back to the inherited None
            else:
                cls._auto_class = value
        for obj, value in saved_maps:
            if value is _MISSING:
                obj.__dict__.pop("auto_map", None)
            else:
                obj.auto_map = value


_MISSING = object()


def save_model_and_processor(model, processor, destination: str | os.PathLike, with_code: bool = False) -> Path:
    """save_pretrained of the model (and processor), atomically; the generation config gets the processor's stop
    tokens (``set_generation_defaults``).  ``with_code=True`` also writes the code that loads it without this
    package (``code_for_auto_classes``, transformers' ``trust_remote_code``)."""
    set_generation_defaults(model, processor)

    def write(directory: Path) -> None:
        model.save_pretrained(directory)
        if processor is not None:
            processor.save_pretrained(directory)

    if not with_code:
        return write_directory_atomically(destination, write)
    image_processor = getattr(processor, "image_processor", None)
    with code_for_auto_classes(model.config, processor, image_processor):
        return write_directory_atomically(destination, write)
