"""Image loading and the Mini-Gemini image processor (one LR and one HR tensor per image).

Why this file exists: the published release copies its preprocessing into ~7 entry points and opens images
with a bare ``Image.open(...).convert("RGB")``.  Here there is one loader that turns any input into a clean
RGB picture (or a clear error), and one processor that reproduces the release's numerics (DESIGN §2):

    pad to square with the mean colour -> bicubic resize to the HR size -> /255 -> CLIP mean/std
    -> HR tensor;  LR tensor = bilinear (align_corners=False, no antialias) downsample of the HR tensor;
    HD mode: 4 row-major crops of the (grid x LR) tensor plus an optional global view.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import io
import os
import threading
import warnings
from collections.abc import Iterable
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError
from transformers.image_processing_base import BatchFeature
from transformers.image_processing_utils import BaseImageProcessor
from transformers.processing_utils import ImagesKwargs

__all__ = [
    "DEFAULT_MAX_IMAGE_PIXELS",
    "OPENAI_CLIP_MEAN",
    "OPENAI_CLIP_STD",
    "ImageLoadError",
    "MiniGeminiImageProcessor",
    "expand_to_square",
    "load_image",
    "read_image_size",
]

#: Refuse images above this many pixels (width * height), checked from the header before decoding.
DEFAULT_MAX_IMAGE_PIXELS = 50_000_000
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

_WHITE = (255, 255, 255)
_ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}
_SIXTEEN_BIT_MODES = {"I;16", "I;16L", "I;16B", "I;16N"}
# PIL's own decompression-bomb check is a process-wide setting; we do our own (configurable) check and
# switch PIL's off only while opening a header (and decoding an image that the caller explicitly allowed).
_PIL_LIMIT_LOCK = threading.RLock()
# Conversions that need more than a byte or two of scratch memory per pixel (high-depth scaling, alpha compositing)
# are done a strip of this many pixels at a time, so that a large picture costs about its own size to convert.
_STRIP_PIXELS = 1 << 20


class ImageLoadError(ValueError):
    """An image could not be turned into RGB pixels; the message names the problem and the source."""


# ----------------------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _pil_bomb_check_disabled():
    """Temporarily disable PIL's MAX_IMAGE_PIXELS so our own limit (with a better message) is the one applied."""
    with _PIL_LIMIT_LOCK:
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                yield
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def _describe(source: Any) -> str:
    if isinstance(source, (str, os.PathLike)):
        text = os.fspath(source)
        return text if not text.startswith("data:") else "<data URL>"
    if isinstance(source, (bytes, bytearray, memoryview)):
        return "<bytes>"
    if isinstance(source, Image.Image):
        return "<PIL.Image>"
    if isinstance(source, np.ndarray):
        return "<numpy array>"
    name = getattr(source, "name", None)
    return str(name) if isinstance(name, str) else "<file object>"


def _check_size(width: int, height: int, max_pixels: int | None, where: str) -> None:
    if width <= 0 or height <= 0:
        raise ImageLoadError(f"image has an empty size {width}x{height}: {where}")
    if max_pixels is not None and width * height > max_pixels:
        raise ImageLoadError(
            f"image is too large: {width}x{height} = {width * height:,} pixels exceeds the limit of "
            f"{max_pixels:,} pixels (max_pixels / max_image_pixels): {where}"
        )


def _open(source: Any, where: str):
    """Return an opened (header-only) PIL image for a path / bytes / file-like / data URL source."""
    if isinstance(source, (str, os.PathLike)):
        text = os.fspath(source)
        if isinstance(text, str) and text.startswith("data:"):
            try:
                payload = base64.b64decode(text.split(",", 1)[1], validate=False)
            except (IndexError, binascii.Error) as err:
                raise ImageLoadError(f"malformed base64 data URL: {where}") from err
            return _open(payload, where)
        if isinstance(text, str) and text.startswith(("http://", "https://")):
            raise ImageLoadError(f"URLs are not fetched by load_image; download the file first: {where}")
        if not os.path.exists(text):
            raise ImageLoadError(f"image file not found: {where}")
        if os.path.isdir(text):
            raise ImageLoadError(f"path is a directory, not an image: {where}")
        fp: Any = text
    elif isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) == 0:
            raise ImageLoadError(f"empty image data: {where}")
        fp = io.BytesIO(bytes(source))
    elif hasattr(source, "read"):
        fp = source
    else:
        raise ImageLoadError(
            f"unsupported image source type {type(source).__name__}; expected a path, bytes, a file object, "
            f"a PIL image or a numpy array: {where}"
        )
    try:
        with _pil_bomb_check_disabled():
            return Image.open(fp)
    except UnidentifiedImageError as err:
        raise ImageLoadError(f"not a recognised image format (cannot identify image data): {where}") from err
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        raise ImageLoadError(f"cannot read image header ({err}): {where}") from err


def _scale_to_uint8(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Map [lo, hi] linearly onto [0, 255] with rounding (hi == lo gives black)."""
    values = np.nan_to_num(values.astype(np.float64), nan=lo, posinf=hi, neginf=lo)
    if hi <= lo:
        return np.zeros(values.shape, dtype=np.uint8)
    return np.clip(np.rint((values - lo) * (255.0 / (hi - lo))), 0, 255).astype(np.uint8)


def _strips(size: tuple[int, int]):
    """Boxes of horizontal strips of about ``_STRIP_PIXELS`` pixels covering an image of ``size``, top to bottom."""
    width, height = size
    rows = max(1, _STRIP_PIXELS // max(width, 1))
    for top in range(0, height, rows):
        yield (0, top, width, min(top + rows, height))


def _high_depth_to_l(image: Image.Image) -> Image.Image:
    """Convert 16-bit / 32-bit int / float greyscale to 8-bit 'L' by scaling, not clipping (PIL clips).

    Rules: I;16* -> full 16-bit range (v / 257).  I (int32): max <= 255 -> already 8-bit values; values in
    [0, 65535] -> 16-bit range; otherwise min..max stretch.  F: values in [0, 1] -> x 255; values in
    [0, 255] -> as is; otherwise min..max stretch.  NaN -> black.
    Worked strip by strip (the float64 arithmetic needs 8 bytes a pixel), so the scratch memory stays small.
    """
    if image.mode in _SIXTEEN_BIT_MODES:
        lo, hi = 0.0, 65535.0
    else:
        low, high = np.inf, -np.inf
        for box in _strips(image.size):
            arr = np.asarray(image.crop(box))
            finite = arr[np.isfinite(arr)] if arr.dtype.kind == "f" else arr
            if finite.size:
                low, high = min(low, float(finite.min())), max(high, float(finite.max()))
        if low > high:  # no finite value at all
            low = high = 0.0
        if image.mode == "F" and low >= 0.0 and high <= 1.0:
            lo, hi = 0.0, 1.0
        elif low >= 0.0 and high <= 255.0:
            lo, hi = 0.0, 255.0
        elif image.mode == "I" and low >= 0.0 and high <= 65535.0:
            lo, hi = 0.0, 65535.0
        else:
            lo, hi = low, high
    out = np.empty((image.height, image.width), dtype=np.uint8)
    for box in _strips(image.size):
        out[box[1] : box[3]] = _scale_to_uint8(np.asarray(image.crop(box)), lo, hi)
    return Image.fromarray(out, mode="L")


def _composite_over_white(image: Image.Image) -> Image.Image:
    """Alpha-composite over opaque white: out = a*c + (1-a)*255 (a in [0, 1]), the usual 'paper' background.

    The release's ``.convert("RGB")`` just drops alpha, so fully transparent pixels show whatever colour
    they store (often black); white is what image viewers and browsers show behind transparency.
    Worked strip by strip (the RGBA copies it needs are a strip each, not the whole picture).
    """
    out = Image.new("RGB", image.size)
    for box in _strips(image.size):
        rgba = image.crop(box).convert("RGBA")
        background = Image.new("RGBA", rgba.size, _WHITE + (255,))
        out.paste(Image.alpha_composite(background, rgba).convert("RGB"), box[:2])
    return out


def _to_rgb(image: Image.Image, where: str) -> Image.Image:
    mode = image.mode
    has_transparency = "transparency" in image.info
    try:
        if mode == "RGB" and not has_transparency:
            return image
        if mode in _SIXTEEN_BIT_MODES or mode in {"I", "F"}:  # a transparent colour here (rare) is ignored
            return _high_depth_to_l(image).convert("RGB")
        if mode in _ALPHA_MODES or has_transparency:  # incl. P / L / RGB with a transparent colour (tRNS)
            return _composite_over_white(image)
        return image.convert("RGB")  # L, 1, P, CMYK, YCbCr, LAB, HSV, ...
    except (ValueError, OSError) as err:
        raise ImageLoadError(f"cannot convert image mode {mode!r} to RGB ({err}): {where}") from err


def read_image_size(source: Any) -> tuple[int, int]:
    """(width, height) of an encoded image (path, bytes, file object or ``data:`` URL), read from its header alone.

    Nothing is decoded, so a caller can refuse an image (or a set of images) by its size before paying for its
    pixels.  The size is the stored one (EXIF orientation may swap width and height; their product and the longer
    side do not change).  Raises ImageLoadError when the header cannot be read.
    """
    where = _describe(source)
    opened = _open(source, where)
    try:
        return opened.width, opened.height
    finally:
        if opened is not source:
            opened.close()


def load_image(source: Any, max_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS) -> Image.Image:
    """Load ``source`` (path, bytes, file object, ``data:`` URL, PIL image or HxW[xC] uint8 array) as RGB.

    - The size is checked from the header before any pixel is decoded (``max_pixels=None``: no limit);
      PIL's own decompression-bomb check is bypassed so this limit, and its message, is the one that counts.
    - EXIF orientation is applied; only the first frame of multi-frame files is used.
    - Alpha (RGBA/LA/PA, palette or grey with a transparent colour) is composited over white.
    - 16-bit, 32-bit int and float images are scaled to 8 bit (see ``_high_depth_to_l``); CMYK, palette,
      greyscale and 1-bit images are converted with PIL.
    Raises ImageLoadError (a ValueError) naming the problem and the source.
    """
    where = _describe(source)
    if isinstance(source, np.ndarray):
        if source.ndim not in (2, 3):
            raise ImageLoadError(f"array must be HxW or HxWxC, got shape {source.shape}: {where}")
        _check_size(source.shape[1], source.shape[0], max_pixels, where)
        try:
            source = Image.fromarray(source)
        except (TypeError, ValueError) as err:
            raise ImageLoadError(f"cannot make an image from array {source.dtype} {source.shape}: {where}") from err
    opened = None
    if isinstance(source, Image.Image):
        image = source
    else:
        image = opened = _open(source, where)
    try:
        _check_size(image.width, image.height, max_pixels, where)
        # Decode now so that truncated / corrupt data fails here with a clear message.
        allowed_by_pil = Image.MAX_IMAGE_PIXELS is None or image.width * image.height <= Image.MAX_IMAGE_PIXELS
        try:
            with contextlib.nullcontext() if allowed_by_pil else _pil_bomb_check_disabled():
                if getattr(image, "n_frames", 1) > 1:
                    image.seek(0)
                image.load()
        except (OSError, SyntaxError, ValueError, EOFError, IndexError) as err:
            raise ImageLoadError(f"truncated or corrupt image data ({err}): {where}") from err

        with contextlib.suppress(Exception):  # a malformed EXIF block must not make a readable image unusable
            orientation = image.getexif().get(0x0112, 1)
            if orientation in (2, 3, 4, 5, 6, 7, 8):
                image = ImageOps.exif_transpose(image)
        result = _to_rgb(image, where)
        if result is opened and getattr(opened, "n_frames", 1) > 1:
            result = result.copy()  # multi-frame files keep their file open; detach the pixels from it
    except BaseException:
        if opened is not None:
            opened.close()
        raise
    if opened is not None and result is not opened:
        opened.close()  # release the file handle now rather than at garbage collection
    return result


def fetch_url(source: Any, timeout: float = 30.0) -> Any:
    """The data behind an http(s) URL, as a file object named by the URL (as transformers' image processors and
    pipelines fetch them); any other source unchanged.  ``load_image`` itself never fetches: the data is checked
    there like any other, and its errors name the URL."""
    if not (isinstance(source, str) and source.startswith(("http://", "https://"))):
        return source
    from huggingface_hub.utils import httpx  # the HTTP client transformers fetches images with

    try:
        response = httpx.get(source, timeout=timeout, follow_redirects=True)
        response.raise_for_status()
    except httpx.HTTPError as err:
        raise ImageLoadError(f"cannot fetch image ({err}): {source}") from err
    data = io.BytesIO(response.content)
    data.name = source
    return data


# ----------------------------------------------------------------------------------------------------------
# Processor
# ----------------------------------------------------------------------------------------------------------


def expand_to_square(image: Image.Image, background: tuple[int, int, int]) -> Image.Image:
    """Pad an RGB image to a square, image centred (offset floor((long - short) / 2)), as LLaVA's expand2square."""
    width, height = image.size
    if width == height:
        return image
    side = max(width, height)
    square = Image.new(image.mode, (side, side), background)
    square.paste(image, ((side - width) // 2, (side - height) // 2))
    return square


def _resize_shortest_edge_and_crop(image: Image.Image, size: int) -> Image.Image:
    """CLIP's default path without padding: bicubic shortest-edge resize to ``size``, then centre crop."""
    width, height = image.size
    short, long = (width, height) if width <= height else (height, width)
    new_long = int(size * long / short)
    new_w, new_h = (size, new_long) if width <= height else (new_long, size)
    image = image.resize((new_w, new_h), Image.Resampling.BICUBIC)
    left, top = (new_w - size) // 2, (new_h - size) // 2
    return image.crop((left, top, left + size, top + size))


class MiniGeminiImageProcessorKwargs(ImagesKwargs, total=False):
    """Keys accepted by ``from_pretrained(..., key=value)`` overrides."""

    image_size: int
    image_size_aux: int
    image_grid: int
    image_global: bool
    pad_to_square: bool
    max_image_pixels: int | None


class MiniGeminiImageProcessor(BaseImageProcessor):
    """Images -> ``pixel_values`` (LR, for the CLIP tower) and ``high_res_pixel_values`` (HR, ConvNeXt tower).

    Shapes: normal (``image_grid == 1``): pixel_values (N, 3, S, S); HD (``image_grid == g > 1``):
    pixel_values (N, num_views, 3, S, S) ordered [global, crop(0,0), crop(0,1), ..., crop(g-1,g-1)]
    (the global view only when ``image_global``); high_res_pixel_values (N, 3, HR, HR).  S = image_size,
    HR = image_size_aux.  Note: the release's own loader emits [crops..., global] and its model moves the
    global tokens first; here the input order already equals the token order.
    Saved as ``preprocessor_config.json`` by ``save_pretrained``.
    """

    valid_kwargs = MiniGeminiImageProcessorKwargs
    model_input_names: ClassVar[list[str]] = ["pixel_values", "high_res_pixel_values"]

    def __init__(
        self,
        image_size: int = 336,
        image_size_aux: int = 768,
        image_grid: int = 1,
        image_global: bool = False,
        image_mean: Iterable[float] | None = None,
        image_std: Iterable[float] | None = None,
        pad_to_square: bool = True,
        max_image_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS,
        **kwargs,
    ):
        kwargs.pop("image_processor_type", None)
        kwargs.pop("size", None)  # derived from image_size_aux (the ``size`` property)
        super().__init__(**kwargs)
        self.image_size = int(image_size)
        self.image_size_aux = int(image_size_aux)
        self.image_grid = int(image_grid)
        self.image_global = bool(image_global)
        self.image_mean = [float(m) for m in (OPENAI_CLIP_MEAN if image_mean is None else image_mean)]
        self.image_std = [float(s) for s in (OPENAI_CLIP_STD if image_std is None else image_std)]
        self.pad_to_square = bool(pad_to_square)
        self.max_image_pixels = None if max_image_pixels is None else int(max_image_pixels)
        self._validate()

    def _validate(self) -> None:
        if self.image_size < 1 or self.image_size_aux < 1:
            raise ValueError(
                f"image_size and image_size_aux must be positive, got {self.image_size}, {self.image_size_aux}"
            )
        if self.image_grid < 1:
            raise ValueError(f"image_grid must be >= 1, got {self.image_grid}")
        if len(self.image_mean) != 3 or len(self.image_std) != 3:
            raise ValueError("image_mean and image_std must have 3 values (RGB)")
        if any(s <= 0 for s in self.image_std):
            raise ValueError(f"image_std must be positive, got {self.image_std}")
        if self.max_image_pixels is not None and self.max_image_pixels < 1:
            raise ValueError(f"max_image_pixels must be positive or None, got {self.max_image_pixels}")

    @property
    def num_views(self) -> int:
        """LR views per image: 1, or grid**2 crops (+1 global view)."""
        if self.image_grid == 1:
            return 1
        return self.image_grid**2 + (1 if self.image_global else 0)

    @property
    def size(self) -> dict[str, int]:
        """transformers' ``size``: every image is padded to a square and resized to this (the HR input); the LR
        input is its bilinear downsample to ``image_size * image_grid``."""
        return {"height": self.image_size_aux, "width": self.image_size_aux}

    @property
    def background_color(self) -> tuple[int, int, int]:
        """The padding colour: the mean, as the release computes it (truncating, not rounding)."""
        return tuple(int(m * 255) for m in self.image_mean)

    def to_square_hr(self, image: Image.Image) -> Image.Image:
        """RGB image -> (HR, HR) RGB image: pad with the mean colour (or crop) and resize bicubically."""
        hr = self.image_size_aux
        if self.pad_to_square:
            square = expand_to_square(image, self.background_color)
            return square.resize((hr, hr), Image.Resampling.BICUBIC)
        return _resize_shortest_edge_and_crop(image, hr)

    def _views(self, lr: torch.Tensor) -> torch.Tensor:
        """(N, 3, gS, gS) LR tensor -> (N, V, 3, S, S) HD views, or (N, 3, S, S) in normal mode."""
        g, s = self.image_grid, self.image_size
        if g == 1:
            return lr
        n = lr.shape[0]
        crops = lr.reshape(n, 3, g, s, g, s).permute(0, 2, 4, 1, 3, 5).reshape(n, g * g, 3, s, s)
        if not self.image_global:
            return crops.contiguous()
        global_view = F.interpolate(lr, size=(s, s), mode="bilinear", align_corners=False, antialias=False)
        return torch.cat([global_view[:, None], crops], dim=1)

    def preprocess(self, images: Any, return_tensors: str | None = "pt") -> BatchFeature:
        """Images (one or a list; anything ``load_image`` takes, or an http(s) URL) -> pixel_values +
        high_res_pixel_values."""
        if images is None:
            raise ValueError("images must be given (an image or a list of images)")
        if not isinstance(images, (list, tuple)):
            images = [images]
        if return_tensors not in (None, "pt", "np"):
            raise ValueError(f"return_tensors must be 'pt', 'np' or None, got {return_tensors!r}")

        hr, s = self.image_size_aux, self.image_size * self.image_grid
        if len(images) == 0:
            squares = np.zeros((0, hr, hr, 3), dtype=np.uint8)
        else:
            # Decoding and PIL resizing are per image; everything after is one batched tensor op.
            squares = np.stack(
                [np.asarray(self.to_square_hr(load_image(fetch_url(im), self.max_image_pixels))) for im in images]
            )
        mean = torch.tensor(self.image_mean, dtype=torch.float32).view(1, 3, 1, 1)
        std = torch.tensor(self.image_std, dtype=torch.float32).view(1, 3, 1, 1)
        # uint8 NHWC -> NCHW first (cheap on bytes), then float, /255 and normalise in place.
        high = torch.from_numpy(squares).permute(0, 3, 1, 2).contiguous().to(torch.float32)
        high = high.div_(255.0).sub_(mean).div_(std)
        if len(images) == 0:
            low = high.new_zeros((0, 3, s, s))
        else:
            low = F.interpolate(high, size=(s, s), mode="bilinear", align_corners=False, antialias=False)
        pixel_values = self._views(low)
        if len(images) == 0 and self.image_grid > 1:
            pixel_values = low.new_zeros((0, self.num_views, 3, self.image_size, self.image_size))

        data = {"pixel_values": pixel_values, "high_res_pixel_values": high}
        if return_tensors == "np":
            data = {k: v.numpy() for k, v in data.items()}
        return BatchFeature(data=data)

    def __call__(self, images: Any, return_tensors: str | None = "pt", **kwargs) -> BatchFeature:
        if kwargs:
            raise TypeError(f"unexpected arguments: {sorted(kwargs)}")
        return self.preprocess(images, return_tensors=return_tensors)
