"""Image loading (every awkward input) and the processor's numerics against a hand-written DESIGN §2 reference."""

from __future__ import annotations

import base64
import io
import resource
import struct
import warnings
import zlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from transformers import AutoImageProcessor

from minigemini.image_processing import (
    DEFAULT_MAX_IMAGE_PIXELS,
    OPENAI_CLIP_MEAN,
    OPENAI_CLIP_STD,
    ImageLoadError,
    MiniGeminiImageProcessor,
    load_image,
    read_image_size,
)

# ------------------------------------------------------------------------------------------- helpers


def gradient(width: int = 37, height: int = 23) -> np.ndarray:
    """A deterministic RGB gradient with distinct rows / columns / channels."""
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([x * 255 // (width - 1), y * 255 // (height - 1), (x * 7 + y * 13) % 256], -1).astype(np.uint8)


def encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def reference_hr(array: np.ndarray, hr: int) -> np.ndarray:
    """DESIGN §2 by hand: pad with int(mean*255) (image centred), PIL bicubic to (hr, hr), /255, CLIP mean/std."""
    height, width, _ = array.shape
    side = max(height, width)
    canvas = np.empty((side, side, 3), dtype=np.uint8)
    canvas[:] = [int(m * 255) for m in OPENAI_CLIP_MEAN]
    top, left = (side - height) // 2, (side - width) // 2
    canvas[top : top + height, left : left + width] = array
    resized = np.asarray(Image.fromarray(canvas).resize((hr, hr), Image.BICUBIC), dtype=np.float64) / 255.0
    return ((resized - np.array(OPENAI_CLIP_MEAN)) / np.array(OPENAI_CLIP_STD)).transpose(2, 0, 1)


def reference_lr(hr: np.ndarray, size: int) -> torch.Tensor:
    hr_t = torch.from_numpy(hr).float()[None]
    return F.interpolate(hr_t, size=(size, size), mode="bilinear", align_corners=False, antialias=False)[0]


def png_chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)


def huge_bilevel_png(width: int, height: int) -> bytes:
    """A valid all-black 1-bit PNG of any size, made in a fraction of a second (~0.2 MB for 20000x20000)."""
    row = b"\x00" * (1 + (width + 7) // 8)
    rows_per_block = 1000
    compressor = zlib.compressobj(1)
    parts = [compressor.compress(row * rows_per_block) for _ in range(height // rows_per_block)]
    parts.append(compressor.compress(row * (height % rows_per_block)))
    parts.append(compressor.flush())
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    chunks = png_chunk(b"IHDR", header) + png_chunk(b"IDAT", b"".join(parts)) + png_chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + chunks


# ------------------------------------------------------------------------------------------- numerics


@pytest.mark.parametrize("shape", [(23, 37), (37, 23)], ids=["wide", "tall"])
def test_normal_mode_matches_reference(shape):
    array = gradient(width=shape[1], height=shape[0])
    processor = MiniGeminiImageProcessor()  # 336 / 768, grid 1
    out = processor(array)
    hr = reference_hr(array, 768)
    assert out["high_res_pixel_values"].shape == (1, 3, 768, 768)
    assert out["pixel_values"].shape == (1, 3, 336, 336)
    assert out["high_res_pixel_values"].dtype == torch.float32 and out["pixel_values"].dtype == torch.float32
    np.testing.assert_allclose(out["high_res_pixel_values"][0].numpy(), hr, atol=1e-6, rtol=0)
    np.testing.assert_allclose(out["pixel_values"][0].numpy(), reference_lr(hr, 336).numpy(), atol=1e-6, rtol=0)


def test_padding_colour_is_truncated_mean_and_image_is_centred():
    processor = MiniGeminiImageProcessor(image_size=4, image_size_aux=37)  # HR = padded size: no resampling
    array = gradient()
    hr = processor(array)["high_res_pixel_values"][0]
    pixels = hr.numpy().transpose(1, 2, 0) * np.array(OPENAI_CLIP_STD) + np.array(OPENAI_CLIP_MEAN)
    pixels = np.rint(pixels * 255)
    assert processor.background_color == (122, 116, 104)
    np.testing.assert_array_equal(pixels[:7], np.broadcast_to([122, 116, 104], (7, 37, 3)))  # (37-23)//2 rows
    np.testing.assert_array_equal(pixels[7:30], array)
    np.testing.assert_array_equal(pixels[30:], np.broadcast_to([122, 116, 104], (7, 37, 3)))


def test_hd_mode_shapes_at_release_sizes():
    processor = MiniGeminiImageProcessor(image_grid=2, image_global=True, image_size_aux=1536)
    assert processor.num_views == 5
    out = processor([gradient()])
    assert out["pixel_values"].shape == (1, 5, 3, 336, 336)
    assert out["high_res_pixel_values"].shape == (1, 3, 1536, 1536)


def test_hd_mode_views_order_and_values():
    array = gradient()
    s, hr_size = 24, 64  # the layout does not depend on the sizes; small keeps the test fast
    processor = MiniGeminiImageProcessor(image_size=s, image_size_aux=hr_size, image_grid=2, image_global=True)
    out = processor([array, array[::-1].copy()])
    pv, hrv = out["pixel_values"], out["high_res_pixel_values"]
    assert pv.shape == (2, 5, 3, s, s)
    assert hrv.shape == (2, 3, hr_size, hr_size)
    hr = reference_hr(array, hr_size)
    np.testing.assert_allclose(hrv[0].numpy(), hr, atol=1e-6, rtol=0)
    lr = reference_lr(hr, 2 * s)  # the "672" tensor
    quarters = {
        1: lr[:, :s, :s],  # crop(0,0) top-left
        2: lr[:, :s, s:],  # crop(0,1) top-right
        3: lr[:, s:, :s],  # crop(1,0) bottom-left
        4: lr[:, s:, s:],  # crop(1,1) bottom-right
    }
    for view, expected in quarters.items():
        torch.testing.assert_close(pv[0, view], expected, atol=1e-6, rtol=0)
    global_view = F.interpolate(lr[None], size=(s, s), mode="bilinear", align_corners=False)[0]
    torch.testing.assert_close(pv[0, 0], global_view, atol=1e-6, rtol=0)
    # the second image is processed independently (batched ops do not mix images)
    np.testing.assert_allclose(hrv[1].numpy(), reference_hr(array[::-1].copy(), hr_size), atol=1e-6, rtol=0)


def test_hd_mode_without_global_has_only_crops():
    processor = MiniGeminiImageProcessor(image_size=8, image_size_aux=32, image_grid=2, image_global=False)
    assert processor.num_views == 4
    out = processor([gradient()])
    assert out["pixel_values"].shape == (1, 4, 3, 8, 8)
    lr16 = reference_lr(reference_hr(gradient(), 32), 16)
    torch.testing.assert_close(out["pixel_values"][0, 1], lr16[:, :8, 8:], atol=1e-6, rtol=0)


def test_grid_one_ignores_global_flag_and_batches():
    processor = MiniGeminiImageProcessor(image_size=8, image_size_aux=16, image_global=True)
    assert processor.num_views == 1
    out = processor([gradient(), gradient(5, 9), gradient(9, 5)])
    assert out["pixel_values"].shape == (3, 3, 8, 8)
    assert out["high_res_pixel_values"].shape == (3, 3, 16, 16)
    assert processor(gradient(), return_tensors="np")["pixel_values"].dtype == np.float32


def test_without_padding_uses_shortest_edge_resize_and_centre_crop():
    array = gradient(40, 20)
    processor = MiniGeminiImageProcessor(image_size=8, image_size_aux=10, pad_to_square=False)
    hr = processor(array)["high_res_pixel_values"][0].numpy()
    resized = Image.fromarray(array).resize((20, 10), Image.BICUBIC).crop((5, 0, 15, 10))
    expected = (np.asarray(resized) / 255.0 - OPENAI_CLIP_MEAN) / OPENAI_CLIP_STD
    np.testing.assert_allclose(hr, expected.transpose(2, 0, 1), atol=1e-6, rtol=0)


def test_one_by_one_image_becomes_uniform_tensor():
    processor = MiniGeminiImageProcessor(image_size=14, image_size_aux=28)
    out = processor(Image.new("RGB", (1, 1), (200, 10, 90)))
    expected = (np.array([200, 10, 90]) / 255.0 - OPENAI_CLIP_MEAN) / OPENAI_CLIP_STD
    hr = out["high_res_pixel_values"][0]
    np.testing.assert_allclose(hr.amax((1, 2)).numpy(), expected, atol=1e-6)
    np.testing.assert_allclose(hr.amin((1, 2)).numpy(), expected, atol=1e-6)
    assert out["pixel_values"].shape == (1, 3, 14, 14)


def test_save_load_round_trip(tmp_path):
    processor = MiniGeminiImageProcessor(
        image_size=8, image_size_aux=24, image_grid=2, image_global=True, max_image_pixels=1234
    )
    processor.save_pretrained(tmp_path)
    assert (tmp_path / "preprocessor_config.json").is_file()
    loaded = MiniGeminiImageProcessor.from_pretrained(tmp_path)
    assert loaded.to_dict() == processor.to_dict()
    assert (loaded.image_grid, loaded.image_global, loaded.num_views, loaded.max_image_pixels) == (2, True, 5, 1234)
    array = gradient()
    for key in ("pixel_values", "high_res_pixel_values"):
        assert torch.equal(processor(array)[key], loaded(array)[key])
    assert MiniGeminiImageProcessor.from_pretrained(tmp_path, image_grid=1).num_views == 1


def test_transformers_auto_class_and_size(tmp_path):
    """Registered with AutoImageProcessor (minigemini/__init__.py): transformers finds it by the class name it saved."""
    processor = MiniGeminiImageProcessor(image_size=8, image_size_aux=24, image_grid=2, image_global=True)
    processor.save_pretrained(tmp_path)
    loaded = AutoImageProcessor.from_pretrained(tmp_path)
    assert type(loaded) is MiniGeminiImageProcessor and loaded.to_dict() == processor.to_dict()
    assert loaded.size == {"height": 24, "width": 24}  # every image is padded square and resized to the HR size
    assert "size" not in processor.to_dict()  # derived, not saved
    assert processor(gradient())["high_res_pixel_values"].shape[-2:] == (24, 24)


def test_invalid_settings_raise():
    with pytest.raises(ValueError, match="image_grid"):
        MiniGeminiImageProcessor(image_grid=0)
    with pytest.raises(ValueError, match="image_std"):
        MiniGeminiImageProcessor(image_std=[1.0, 0.0, 1.0])
    with pytest.raises(ValueError, match="images must be given"):
        MiniGeminiImageProcessor()(None)


# ------------------------------------------------------------------------------------------- sources


def test_sources_path_bytes_filelike_dataurl_pil_array(tmp_path):
    array = gradient(6, 4)
    data = encode(Image.fromarray(array), "PNG")
    path = tmp_path / "g.png"
    path.write_bytes(data)
    data_url = "data:image/png;base64," + base64.b64encode(data).decode()
    for source in (path, str(path), data, bytearray(data), io.BytesIO(data), data_url, Image.fromarray(array), array):
        image = load_image(source)
        assert image.mode == "RGB" and image.size == (6, 4)
        np.testing.assert_array_equal(np.asarray(image), array)


def test_non_image_bytes_and_files(tmp_path):
    with pytest.raises(ImageLoadError, match=r"not a recognised image format.*<bytes>"):
        load_image(b"this is plain text, not a picture")
    text_file = tmp_path / "notes.png"
    text_file.write_text("hello")
    with pytest.raises(ImageLoadError, match="not a recognised image format") as info:
        load_image(text_file)
    assert str(text_file) in str(info.value)
    with pytest.raises(ImageLoadError, match="not found") as info:
        load_image(tmp_path / "missing.jpg")
    assert "missing.jpg" in str(info.value)
    with pytest.raises(ImageLoadError, match="empty image data"):
        load_image(b"")
    with pytest.raises(ImageLoadError, match="unsupported image source type int"):
        load_image(123)
    with pytest.raises(ImageLoadError, match="URLs are not fetched"):
        load_image("https://example.com/cat.png")
    assert issubclass(ImageLoadError, ValueError)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_files_give_clear_error(tmp_path, fmt):
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    data = encode(Image.fromarray(noise), fmt)
    cut = data[: len(data) // 2]
    with pytest.raises(ImageLoadError, match=r"truncated or corrupt image data.*<bytes>"):
        load_image(cut)
    path = tmp_path / f"cut.{fmt.lower()}"
    path.write_bytes(cut)
    with pytest.raises(ImageLoadError, match="truncated or corrupt") as info:
        load_image(path)
    assert str(path) in str(info.value)


# ------------------------------------------------------------------------------------------- modes


def test_palette_without_and_with_transparency():
    palette = [0, 0, 0, 255, 0, 0, 0, 0, 255] + [0] * (256 * 3 - 9)
    image = Image.new("P", (3, 1))
    image.putpalette(palette)
    image.putdata([0, 1, 2])
    np.testing.assert_array_equal(np.asarray(load_image(image))[0], [[0, 0, 0], [255, 0, 0], [0, 0, 255]])
    image.info["transparency"] = 0  # index 0 is transparent: over white, not black
    reloaded = encode(image, "PNG", transparency=0)
    for source in (image, reloaded):
        np.testing.assert_array_equal(np.asarray(load_image(source))[0], [[255, 255, 255], [255, 0, 0], [0, 0, 255]])


def test_alpha_modes_composite_over_white():
    rgba = Image.fromarray(np.array([[[10, 20, 30, 0], [10, 20, 30, 255], [0, 0, 0, 128]]], dtype=np.uint8), "RGBA")
    out = np.asarray(load_image(encode(rgba, "PNG"))).astype(int)[0]
    np.testing.assert_array_equal(out[0], [255, 255, 255])
    np.testing.assert_array_equal(out[1], [10, 20, 30])
    assert np.all(np.abs(out[2] - 127) <= 1)  # 0 * a + 255 * (1 - a), a = 128/255

    la = Image.fromarray(np.array([[[100, 255], [100, 0]]], dtype=np.uint8), "LA")
    np.testing.assert_array_equal(np.asarray(load_image(la))[0], [[100, 100, 100], [255, 255, 255]])

    pa = Image.frombytes("PA", (2, 1), bytes([1, 255, 1, 0]))
    pa.putpalette([0, 0, 0, 0, 200, 0] + [0] * (256 * 3 - 6))
    np.testing.assert_array_equal(np.asarray(load_image(pa))[0], [[0, 200, 0], [255, 255, 255]])


def test_cmyk_greyscale_and_bilevel():
    cmyk = Image.new("CMYK", (2, 2), (0, 255, 255, 0))
    np.testing.assert_array_equal(np.asarray(load_image(cmyk))[0, 0], [255, 0, 0])
    jpeg = np.asarray(load_image(encode(cmyk, "JPEG", quality=100))).astype(int)
    assert np.all(np.abs(jpeg - [255, 0, 0]) <= 3)

    grey = Image.fromarray(np.array([[0, 77, 255]], dtype=np.uint8), "L")
    np.testing.assert_array_equal(np.asarray(load_image(grey))[0], [[0] * 3, [77] * 3, [255] * 3])
    bilevel = Image.fromarray(np.array([[0, 255]], dtype=np.uint8)).convert("1")
    assert bilevel.mode == "1"
    np.testing.assert_array_equal(np.asarray(load_image(encode(bilevel, "PNG")))[0], [[0] * 3, [255] * 3])


@pytest.mark.parametrize("mode", ["I;16", "I;16B"])
def test_sixteen_bit_is_scaled_not_clipped(mode):
    values = np.array([[0, 257 * 128, 65535]], dtype=np.uint16)
    image = Image.frombytes(mode, (3, 1), values.astype(">u2" if mode == "I;16B" else "<u2").tobytes())
    assert image.mode == mode
    out = np.asarray(load_image(image))[0]
    np.testing.assert_array_equal(out, [[0] * 3, [128] * 3, [255] * 3])  # clipping would give 255 in the middle
    np.testing.assert_array_equal(np.asarray(load_image(encode(image, "PNG")))[0], out)  # 16-bit PNG file


def test_int32_and_float_modes():
    as16 = Image.fromarray(np.array([[0, 32896, 65535]], dtype=np.int32))
    assert as16.mode == "I"
    np.testing.assert_array_equal(np.asarray(load_image(as16))[0, :, 0], [0, 128, 255])
    as8 = Image.fromarray(np.array([[0, 100, 255]], dtype=np.int32))
    np.testing.assert_array_equal(np.asarray(load_image(as8))[0, :, 0], [0, 100, 255])
    signed = Image.fromarray(np.array([[-1000, 0, 1000]], dtype=np.int32))
    np.testing.assert_array_equal(np.asarray(load_image(signed))[0, :, 0], [0, 128, 255])

    unit = Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32))
    assert unit.mode == "F"
    np.testing.assert_array_equal(np.asarray(load_image(unit))[0, :, 0], [0, 128, 255])
    byte_range = Image.fromarray(np.array([[0.0, 100.0, 255.0]], dtype=np.float32))
    np.testing.assert_array_equal(np.asarray(load_image(byte_range))[0, :, 0], [0, 100, 255])
    wide = Image.fromarray(np.array([[-1.0, 1.0, 3.0, np.nan]], dtype=np.float32))
    np.testing.assert_array_equal(np.asarray(load_image(wide))[0, :, 0], [0, 128, 255, 0])


def test_exif_orientation_is_applied():
    array = np.zeros((20, 40, 3), dtype=np.uint8)
    array[:, :20] = [255, 0, 0]  # left half red
    array[:, 20:] = [0, 0, 255]  # right half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    data = encode(Image.fromarray(array), "JPEG", exif=exif.tobytes(), quality=95)
    raw = Image.open(io.BytesIO(data))
    assert raw.size == (40, 20) and raw.getexif()[0x0112] == 6
    image = load_image(data)
    assert image.size == (20, 40)  # portrait after rotation
    pixels = np.asarray(image).astype(int)
    assert np.all(np.abs(pixels[5, 10] - [255, 0, 0]) < 40)  # the left (red) half is now on top
    assert np.all(np.abs(pixels[35, 10] - [0, 0, 255]) < 40)


# ------------------------------------------------------------------------------------------- size limit


def test_huge_image_is_refused_from_its_header_without_decoding(tmp_path):
    data = huge_bilevel_png(20000, 20000)
    assert len(data) < 1_000_000
    path = tmp_path / "huge.png"
    path.write_bytes(data)
    pil_limit = Image.MAX_IMAGE_PIXELS
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no DecompressionBombWarning either
        for source in (data, path):
            with pytest.raises(ImageLoadError) as info:
                load_image(source)
            message = str(info.value)
            assert "20000x20000" in message and f"{DEFAULT_MAX_IMAGE_PIXELS:,}" in message
            assert "decompression bomb" not in message.lower()
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown_kib < 100_000  # decoding would need 400 MB (one byte per pixel)
    assert Image.MAX_IMAGE_PIXELS == pil_limit  # PIL's global setting is restored
    with pytest.raises(ImageLoadError, match="20000x20000"):
        MiniGeminiImageProcessor(image_size=8, image_size_aux=16)([data])


def test_pixel_limit_is_configurable_and_applies_to_every_source():
    image = Image.new("RGB", (40, 30))
    with pytest.raises(ImageLoadError, match=r"40x30 = 1,200 pixels exceeds the limit of 1,000"):
        load_image(image, max_pixels=1000)
    with pytest.raises(ImageLoadError, match="40x30"):
        load_image(np.zeros((30, 40, 3), dtype=np.uint8), max_pixels=1000)
    with pytest.raises(ImageLoadError, match="40x30"):
        MiniGeminiImageProcessor(image_size=4, image_size_aux=8, max_image_pixels=1000)(encode(image, "PNG"))
    assert load_image(encode(image, "PNG"), max_pixels=None).size == (40, 30)
    # a file in PIL's own warning range (> 89M pixels) is refused by our limit, without PIL's warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ImageLoadError, match="10000x10000"):
            load_image(huge_bilevel_png(10000, 10000))


# ------------------------------------------------------------------------------------------- URLs


@pytest.fixture
def served(tmp_path):
    """A folder served over HTTP on the loopback interface."""
    import functools
    import http.server
    import threading

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield tmp_path, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_the_processor_fetches_urls_and_load_image_does_not(served):
    folder, base = served
    Image.fromarray(gradient()).save(folder / "g.png")
    (folder / "notes.txt").write_text("not a picture")
    processor = MiniGeminiImageProcessor(image_size=8, image_size_aux=16)
    from_url = processor([f"{base}/g.png"])
    from_file = processor([str(folder / "g.png")])
    for key in from_file:
        assert torch.equal(from_url[key], from_file[key]), key
    with pytest.raises(ImageLoadError, match=r"not a recognised image format .*notes\.txt"):
        processor([f"{base}/notes.txt"])  # the error names the URL
    with pytest.raises(ImageLoadError, match=r"cannot fetch image .*404.*missing\.png"):
        processor([f"{base}/missing.png"])
    with pytest.raises(ImageLoadError, match="URLs are not fetched by load_image"):
        load_image(f"{base}/g.png")


def test_size_is_read_from_the_header_alone(tmp_path):
    data = huge_bilevel_png(20000, 10000)  # 200 MP: decoding would need 200 MB
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert read_image_size(data) == (20000, 10000)
    path = tmp_path / "wide.png"
    path.write_bytes(data)
    assert read_image_size(path) == (20000, 10000)
    assert read_image_size(io.BytesIO(encode(Image.new("L", (7, 3)), "JPEG"))) == (7, 3)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 100_000
    with pytest.raises(ImageLoadError, match="not a recognised image"):
        read_image_size(b"hello")


def _awkward_images():
    rng = np.random.default_rng(0)
    yield Image.fromarray(rng.integers(0, 256, (37, 53, 4), dtype=np.uint8), "RGBA")
    yield Image.fromarray(rng.integers(0, 256, (37, 53, 2), dtype=np.uint8), "LA")
    palette = Image.fromarray(rng.integers(0, 256, (37, 53), dtype=np.uint8), "L").convert("P")
    palette.info["transparency"] = 5
    yield palette
    yield Image.fromarray(rng.integers(0, 65536, (37, 53), dtype=np.uint16))
    wide = (rng.normal(size=(37, 53)) * 100).astype(np.float32)
    wide[3, 4], wide[5, 6] = np.nan, np.inf
    yield Image.fromarray(wide, "F")
    yield Image.fromarray(rng.random((37, 53)).astype(np.float32), "F")
    yield Image.fromarray(rng.integers(-5, 100000, (37, 53)).astype(np.int32))
    yield Image.fromarray(np.full((37, 53), np.nan, dtype=np.float32), "F")


def test_conversions_by_strips_equal_whole_image_conversions(monkeypatch):
    """Alpha compositing and high-depth scaling work a strip at a time (bounded scratch memory): same pixels."""
    from minigemini import image_processing

    monkeypatch.setattr(image_processing, "_STRIP_PIXELS", 1 << 30)
    whole = [np.asarray(load_image(image)) for image in _awkward_images()]
    monkeypatch.setattr(image_processing, "_STRIP_PIXELS", 60)  # strips of one row and a bit
    for image, expected in zip(_awkward_images(), whole):
        np.testing.assert_array_equal(np.asarray(load_image(image)), expected, err_msg=image.mode)
