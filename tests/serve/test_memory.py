"""After a large image the server gives the decoded picture's memory back: its resident memory returns near idle
(without ``return_memory`` it stays at the decode's plateau, about 3 bytes per pixel, for the life of the process)."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent("""
    import base64, io, json, sys, time
    from pathlib import Path
    from fastapi.testclient import TestClient
    from PIL import Image
    from minigemini.loading import load_pretrained
    from minigemini.serve.app import create_app
    from minigemini.serve.settings import ServerSettings
    from tests.helpers.serving import save_tiny_mgm

    def resident_mib():
        line = next(l for l in Path("/proc/self/status").read_text().splitlines() if l.startswith("VmRSS:"))
        return int(line.split()[1]) / 1024

    def body(side):
        buffer = io.BytesIO()
        Image.new("RGB", (side, side), (200, 30, 90)).save(buffer, format="PNG")
        url = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
        return {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}},
                                                          {"type": "text", "text": "hi"}]}]}

    model, processor = load_pretrained(save_tiny_mgm(Path(sys.argv[1])))
    with TestClient(create_app(model, processor, ServerSettings(default_max_tokens=1))) as client:
        assert client.post("/v1/chat/completions", json=body(32)).status_code == 200
        large = body(5000)
        idle = resident_mib()
        after = []
        for _ in range(3):
            assert client.post("/v1/chat/completions", json=large).status_code == 200
            after.append(round(resident_mib() - idle, 1))
    print(json.dumps(after))
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="resident memory is read from /proc")
def test_resident_memory_returns_after_large_images(tmp_path):
    """Three requests with one 25 MP picture each (75 MB once decoded to RGB), in a fresh process."""
    result = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / "model")], cwd=ROOT, capture_output=True,
                            text=True, timeout=300, check=False)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    after = json.loads(result.stdout.splitlines()[-1])
    assert len(after) == 3 and max(after) < 30, f"resident memory above idle after each large image (MiB): {after}"
