"""The synthetic world's one font: DejaVu Sans (Debian's fonts-dejavu-core), found in the usual places."""

from __future__ import annotations

from functools import lru_cache

from PIL import ImageFont

__all__ = ["dejavu_font"]

_FONT_FILES = ("DejaVuSans.ttf", "DejaVuSans-Bold.ttf")
_FONT_DIRS = ("/usr/share/fonts/truetype/dejavu", "/usr/share/fonts/dejavu", "/usr/local/share/fonts")


@lru_cache(maxsize=64)
def dejavu_font(size: int, bold: bool = False) -> ImageFont.FreeTypeFont:
    """DejaVu Sans at ``size`` px; a clear error when the fonts are not installed."""
    name = _FONT_FILES[int(bold)]
    for candidate in (name, *(f"{d}/{name}" for d in _FONT_DIRS)):
        try:
            return ImageFont.truetype(candidate, size)
        except OSError:
            continue
    raise OSError(
        f"the synthetic world draws text in DejaVu Sans ({name} not found): install the Debian package "
        "fonts-dejavu-core (apt-get install fonts-dejavu-core)"
    )
