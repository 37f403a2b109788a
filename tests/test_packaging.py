"""`pip install .` (not an editable install) gives a package that serves the demo page.

The wheel is built from this checkout and installed into a fresh folder; the project's
virtual environment provides the dependencies only (without its editable `dsm`).
"""

from __future__ import annotations

import socket
import subprocess
import sys
import sysconfig
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_installed_wheel_serves_the_demo_page(tmp_path: Path) -> None:
    wheels, target = tmp_path / "wheels", tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(wheels), str(REPO)], check=True, timeout=300,
                   cwd=tmp_path)
    (wheel,) = wheels.glob("dsm-*.whl")
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target",
                    str(target), str(wheel)], check=True, timeout=300)
    assert (target / "dsm" / "demo" / "index.html").is_file()
    # -S: no site processing, so the venv's editable dsm is not on the path; its packages are
    env = {"PYTHONPATH": f"{target}:{sysconfig.get_paths()['purelib']}", "PATH": "/usr/bin:/bin"}
    where = subprocess.run([sys.executable, "-S", "-c", "import dsm; print(dsm.__file__)"],
                           env=env, capture_output=True, text=True, cwd=tmp_path, check=True)
    assert where.stdout.strip() == str(target / "dsm" / "__init__.py")
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-S", "-m", "dsm.cli", "serve", "--scripted-tts",
                               "--port", str(port)], env=env, cwd=tmp_path,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as page:
                    body, kind = page.read(), page.headers["Content-Type"]
                break
            except OSError:
                assert server.poll() is None, server.stdout.read().decode()  # type: ignore[union-attr]
                assert time.monotonic() < deadline, "dsm serve did not start"
                time.sleep(0.2)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/app.js", timeout=5) as script:
            app = script.read()
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert kind.startswith("text/html") and b"<html" in body
    assert b"tts_streaming" in app
