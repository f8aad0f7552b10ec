"""Errors the `mgm` command turns into one-line messages, and the table of optional extras.

Library code raises `UserError` (or `ValueError`/`OSError`) for problems with the user's input or environment;
`minigemini.cli` prints them as `mgm COMMAND: error: ...` with no traceback. A missing optional dependency is
reported with the extra that installs it (`missing_extra`).
"""

from __future__ import annotations

__all__ = ["EXTRAS", "MissingExtraError", "UserError", "missing_extra", "require"]


class UserError(Exception):
    """A problem with the user's input or environment: printed as one clear line, no traceback."""


class MissingExtraError(UserError, ImportError):
    """An optional dependency is not installed; the message names the `pip install` line that adds it."""


# top-level module -> the extra of pyproject.toml that installs it
EXTRAS = {
    "fastapi": "serve",
    "uvicorn": "serve",
    "httpx": "serve",
    "gradio": "web",
    "diffusers": "t2i",
    "rapidocr_onnxruntime": "ocr",
    "peft": "train",
    "accelerate": "train",
    "yaml": "train",
    "datasets": "eval",
    "pyarrow": "eval",
    "webdataset": "train",
    "gguf": "demo",
    "lmms_eval": "lmms",
    "deepspeed": "deepspeed",
    "bitsandbytes": "qlora",
    "torchao": "quant",
    "compressed_tensors": "quant",
    "sentencepiece": "convert",
    "trl": "trl",
}


def missing_extra(error: ImportError, extra: str | None = None) -> MissingExtraError | None:
    """The one-line error for an ImportError of an optional dependency (its extra looked up in `EXTRAS` unless
    given); None when the missing module is not one of ours."""
    if isinstance(error, MissingExtraError):
        return error
    name = (getattr(error, "name", None) or "").split(".")[0]
    extra = extra or EXTRAS.get(name)
    if extra is None:
        return None
    return MissingExtraError(
        f'{name} is not installed; it comes with the {extra} extra: pip install "minigemini[{extra}]"'
    )


def require(*modules: str, extra: str | None = None) -> None:
    """Check that optional dependencies import, else raise `MissingExtraError` naming the extra that installs them
    (`extra`, or each module's own from `EXTRAS`)."""
    import importlib

    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as error:
            raised = missing_extra(error, extra)
            if raised is None:
                raise
            raise raised from error
