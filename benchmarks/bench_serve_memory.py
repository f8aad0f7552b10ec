"""Peak memory of `mgm serve` under worst-case image requests, against the bound its limits document.

    python benchmarks/bench_serve_memory.py [--clients 4] [--side 4000]      (from the repository root)
    python benchmarks/bench_serve_memory.py --resident                        (part 3 only)

Part 1, per image kind (each in a fresh process): the peak memory one counted pixel costs on the server's path
(header size, decode, conversion to RGB, shrink to the model's input square at release size, HR 768) against
``limits.BYTES_PER_DECODED_PIXEL``.  Square pictures of ``--side`` px, and strips whose padded square is what counts.

Part 2, end to end (a real server in its own process: ``create_app`` on a tiny random model with the default limits,
uvicorn on 127.0.0.1; the server's VmHWM minus its idle VmRSS):
- ``budget-filling``: ``--clients`` concurrent requests, each with 8 images that together fill the default pixel budget,
  in the costliest kind of part 1: accepted, and bounded by ``decode_slots x max_request_pixels x bytes/pixel``;
- ``largest-image``: ``--clients`` concurrent requests, each with one image of the costliest kind at the per-image
  limit (50 MP): the worst a decode slot holds, as only ``decode_slots`` of them decode at a time;
- ``issue-39``: the request of issue 39 (8 greyscale PNGs of 7000x7000, 0.5 MB): refused from the headers, at once;
- ``largest-body``: one request near the body limit (a PNG whose header is refused, followed by 19 MiB of noise, so
  that no pixel is decoded): its peak in bodies, against ``limits.BODY_COPIES``.

Each scenario also reports the server's resident memory (VmRSS) a second after its answers, above idle.

Part 3 (``--resident``, alone): what stays resident after large images: one 49 MP picture (7000x7000 RGB PNG, and the
costliest kind at the 50 MP limit, int32 TIFF) per request, three requests one after another, VmRSS above idle after
each (the server returns the C heap's free pages after a large decode: ``serve.images.return_memory``).
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.helpers.serving: the tiny model

KINDS = {  # name: (PIL mode, format, save options)
    "rgb-png": ("RGB", "PNG", {}),
    "grey-png": ("L", "PNG", {}),
    "palette-png": ("P", "PNG", {}),
    "rgba-png": ("RGBA", "PNG", {}),
    "grey-alpha-png": ("LA", "PNG", {}),
    "16-bit-png": ("I;16", "PNG", {}),
    "float-tiff": ("F", "TIFF", {"compression": "tiff_adobe_deflate"}),
    "int32-tiff": ("I", "TIFF", {"compression": "tiff_adobe_deflate"}),
    "cmyk-jpeg": ("CMYK", "JPEG", {}),
    "rgb-jpeg-rotated": ("RGB", "JPEG", {"exif": True}),
}


def make_image(mode: str, width: int, height: int, constant: bool = False) -> Image.Image:
    """A picture of ``mode``: a gradient (``constant``: one value, so that it compresses to almost nothing)."""
    y, x = np.mgrid[0:height, 0:width] if not constant else (np.zeros((height, width), np.int64),) * 2
    if mode == "I;16":
        return Image.fromarray(((x * 13 + y * 7) % 65536).astype(np.uint16))
    if mode == "F":
        return Image.fromarray(((x + y) % 1000 / 7).astype(np.float32), mode="F")
    if mode == "I":
        return Image.fromarray(((x * 31 + y) % 100_000).astype(np.int32))
    grey = Image.fromarray(((x + 2 * y) % 256).astype(np.uint8), mode="L")
    if mode == "L":
        return grey
    if mode == "P":
        return grey.convert("P")
    if mode == "LA":
        return Image.merge("LA", (grey, grey.point(lambda v: 255 - v)))
    rgb = Image.merge("RGB", (grey, grey.point(lambda v: (v * 3) % 256), grey.point(lambda v: 255 - v)))
    if mode == "RGBA":
        return Image.merge("RGBA", (*rgb.split(), grey))
    return rgb.convert(mode)


def encode(image: Image.Image, kind: str) -> bytes:
    _, fmt, options = KINDS[kind]
    options = dict(options)
    if options.pop("exif", False):
        exif = Image.Exif()
        exif[0x0112] = 6  # rotated: the loader transposes it
        options["exif"] = exif
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


# ------------------------------------------------------------------------------------------------ part 1


def one_image(path: str) -> dict:
    """In a fresh process: peak memory of the server's path for the image at ``path``, per counted pixel."""
    from minigemini.image_processing import MiniGeminiImageProcessor
    from minigemini.serve.images import ImageFetcher
    from minigemini.serve.limits import image_cost
    from minigemini.serve.settings import ServerSettings

    fetcher = ImageFetcher(ServerSettings(max_image_pixels=None, max_image_bytes=1 << 30))
    processor = MiniGeminiImageProcessor(image_size=336, image_size_aux=768)
    warm = io.BytesIO()
    Image.new("RGB", (8, 8)).save(warm, format="PNG")
    processor.to_square_hr(fetcher.decode(warm.getvalue(), "warm-up"))
    raw = Path(path).read_bytes()
    before = status_kib(os.getpid(), "VmHWM")  # the high-water mark of this process's own memory (ru_maxrss is
    width, height = fetcher.size(raw, "image")  # inherited from the parent across exec, VmHWM is not)
    small = processor.to_square_hr(fetcher.decode(raw, "image"))
    peak = status_kib(os.getpid(), "VmHWM")
    assert small.size == (768, 768)
    cost = image_cost(width, height)
    return {"size": f"{width}x{height}", "counted_pixels": cost, "peak_mib": round((peak - before) / 1024, 1),
            "bytes_per_pixel": round((peak - before) * 1024 / cost, 2)}  # fmt: skip


def per_kind(side: int, workdir: Path) -> dict:
    results = {}
    shapes = {"": (side, side), " strip": (2 * side, side // 8)}
    for kind, (mode, _, _) in KINDS.items():
        for suffix, (width, height) in shapes.items():
            if suffix and kind not in ("grey-png", "rgba-png", "float-tiff"):
                continue
            path = workdir / f"{kind}{suffix.strip()}.bin"
            path.write_bytes(encode(make_image(mode, width, height), kind))
            out = subprocess.run([sys.executable, __file__, "--one-image", str(path)], capture_output=True,
                                 text=True, check=True, cwd=ROOT)  # fmt: skip
            results[kind + suffix] = {"file_mb": round(path.stat().st_size / 1e6, 2), **json.loads(out.stdout)}
            path.unlink()
            print(f"  {kind + suffix}: {results[kind + suffix]}", file=sys.stderr)
    return results


# ------------------------------------------------------------------------------------------------ part 2


def serve(model_dir: str, port_file: str) -> None:
    """In its own process: the app with the default limits on a free 127.0.0.1 port (written to ``port_file``)."""
    import socket

    import uvicorn

    from minigemini.loading import load_pretrained
    from minigemini.serve.app import create_app
    from minigemini.serve.settings import ServerSettings

    model, processor = load_pretrained(model_dir)
    app = create_app(model, processor, ServerSettings(default_max_tokens=1))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    Path(port_file).write_text(str(sock.getsockname()[1]))
    uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[sock])


def status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def data_url(raw: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(raw).decode()


def scenario(model_dir: str, workdir: Path, bodies: list[dict], rounds: int = 1) -> dict:
    """Start a server, send ``bodies`` at once (``rounds`` times, one round after another); return statuses, wall
    time, the server's peak above idle and its resident memory above idle a second after each round."""
    import httpx

    port_file = workdir / "port"
    port_file.unlink(missing_ok=True)
    server = subprocess.Popen([sys.executable, __file__, "--serve", model_dir, str(port_file)], cwd=ROOT)
    try:
        deadline = time.monotonic() + 120
        while not port_file.exists() or not port_file.read_text():
            assert time.monotonic() < deadline and server.poll() is None, "the server did not start"
            time.sleep(0.1)
        base = f"http://127.0.0.1:{port_file.read_text()}"
        while True:
            try:
                if httpx.get(base + "/health", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        small = encode(make_image("RGB", 32, 32), "rgb-png")
        warm = {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": data_url(small)}},
                                                          {"type": "text", "text": "hi"}]}]}  # fmt: skip
        assert httpx.post(base + "/v1/chat/completions", json=warm, timeout=60).status_code == 200
        time.sleep(0.5)
        idle = status_kib(server.pid, "VmRSS")
        statuses: list[int] = []
        errors: list[str] = []
        resident: list[int] = []
        barrier = threading.Barrier(len(bodies))

        def send(body):
            barrier.wait(60)
            response = httpx.post(base + "/v1/chat/completions", json=body, timeout=600)
            statuses.append(response.status_code)
            if response.status_code != 200:
                errors.append(response.json()["error"]["code"])

        start = time.perf_counter()
        for _ in range(rounds):
            threads = [threading.Thread(target=send, args=(body,)) for body in bodies]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            time.sleep(1.0)
            resident.append(round((status_kib(server.pid, "VmRSS") - idle) / 1024))
        wall = time.perf_counter() - start - rounds
        peak = status_kib(server.pid, "VmHWM")
    finally:
        server.terminate()
        server.wait(30)
    return {"statuses": sorted(statuses), "errors": sorted(set(errors)), "wall_s": round(wall, 2),
            "idle_rss_mib": round(idle / 1024), "peak_above_idle_mib": round((peak - idle) / 1024),
            "resident_after_mib": resident if rounds > 1 else resident[0]}  # fmt: skip


def resident_after_large_images(workdir: Path) -> dict:
    """Part 3: resident memory above idle after each of three requests with one large picture, one at a time."""
    from tests.helpers.serving import save_tiny_mgm

    model_dir = str(save_tiny_mgm(workdir / "model"))
    results = {}
    for kind, side in (("rgb-png", 7000), ("int32-tiff", 7071)):
        body = chat_body(encode(make_image(KINDS[kind][0], side, side, constant=True), kind))
        results[f"1 x {side}x{side} {kind}"] = run = scenario(model_dir, workdir, [body], rounds=3)
        print(f"  {kind}: {run}", file=sys.stderr)
    return results


def chat_body(*images: bytes) -> dict:
    parts = [{"type": "image_url", "image_url": {"url": data_url(raw)}} for raw in images]
    return {"messages": [{"role": "user", "content": [*parts, {"type": "text", "text": "what is this?"}]}]}


def end_to_end(kind: str, clients: int, workdir: Path) -> dict:
    from minigemini.serve.limits import BODY_COPIES, BYTES_PER_DECODED_PIXEL
    from minigemini.serve.settings import ServerSettings
    from tests.helpers.serving import save_tiny_mgm

    settings = ServerSettings()
    model_dir = str(save_tiny_mgm(workdir / "model"))
    bound_mib = round(settings.decode_slots * settings.max_request_pixels * BYTES_PER_DECODED_PIXEL / 2**20)
    side = int((settings.max_request_pixels // settings.max_images) ** 0.5)
    filling = chat_body(*[encode(make_image(KINDS[kind][0], side, side, constant=True), kind)] * settings.max_images)
    largest_side = int(settings.max_image_pixels**0.5)
    largest = chat_body(encode(make_image(KINDS[kind][0], largest_side, largest_side, constant=True), kind))
    issue = chat_body(*[encode(make_image("L", 7000, 7000, constant=True), "grey-png")] * 8)
    noise = np.random.default_rng(0).integers(0, 256, 19 << 20, dtype=np.uint8).tobytes()
    big = chat_body(encode(make_image("L", 8100, 8100, constant=True), "grey-png") + noise)  # refused by its header
    results = {}
    for name, images, body, count in [
        ("budget-filling", f"{settings.max_images} x {side}x{side} {kind}", filling, clients),
        ("largest-image", f"1 x {largest_side}x{largest_side} {kind}", largest, clients),
        ("issue-39", "8 x 7000x7000 grey PNG", issue, clients),
        ("largest-body", "1 x 8100x8100 grey PNG + 19 MiB of noise", big, 1),
    ]:
        body_mib = len(json.dumps(body)) / 2**20
        run = scenario(model_dir, workdir, [body] * count)
        results[name] = {"images": images, "clients": count, "body_mib": round(body_mib, 2), **run}
        if name in ("budget-filling", "largest-image"):
            results[name]["decoding_bound_mib"] = bound_mib
        if name == "largest-body":
            results[name]["copies_held"] = round(run["peak_above_idle_mib"] / body_mib, 2)
            results[name]["documented"] = BODY_COPIES
        print(f"  {name}: {results[name]}", file=sys.stderr)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=4, help="concurrent worst-case requests in part 2")
    parser.add_argument("--side", type=int, default=4000, help="side of the square pictures of part 1")
    parser.add_argument("--resident", action="store_true", help="part 3 only: resident memory after large images")
    parser.add_argument("--one-image", help=argparse.SUPPRESS)
    parser.add_argument("--serve", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one_image:
        print(json.dumps(one_image(args.one_image)))
        return
    if args.serve:
        serve(*args.serve)
        return
    if args.resident:
        with tempfile.TemporaryDirectory() as tmp:
            print(json.dumps(resident_after_large_images(Path(tmp)), indent=2))
        return
    from minigemini.serve.limits import BYTES_PER_DECODED_PIXEL

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        kinds = per_kind(args.side, workdir)
        worst = max(kinds, key=lambda k: kinds[k]["bytes_per_pixel"])
        costliest = max((k for k in kinds if " " not in k), key=lambda k: kinds[k]["bytes_per_pixel"])
        results = {
            "bytes_per_counted_pixel": {k: v["bytes_per_pixel"] for k, v in kinds.items()},
            "worst": worst, "documented": BYTES_PER_DECODED_PIXEL,
            **end_to_end(costliest, args.clients, workdir),
        }  # fmt: skip
    body = results["largest-body"]
    largest = results["largest-image"]
    results["within"] = (
        kinds[worst]["bytes_per_pixel"] <= BYTES_PER_DECODED_PIXEL
        and largest["peak_above_idle_mib"] <= largest["decoding_bound_mib"]
        and body["copies_held"] <= body["documented"]
    )
    print(json.dumps(results, indent=2))
    sys.exit(0 if results["within"] else 1)


if __name__ == "__main__":
    main()
