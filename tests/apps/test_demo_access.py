"""Who can reach the demo and what it accepts: loopback bind by default, the file-type allowlist."""

from __future__ import annotations

import inspect
import socket
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest

from apps.handlers import analyze_upload

gradio_client = pytest.importorskip("gradio_client")


def _non_loopback_ipv4() -> str | None:
    """An IPv4 address of this machine outside 127.0.0.0/8 (None when there is none)."""
    psutil = pytest.importorskip("psutil")
    for addrs in psutil.net_if_addrs().values():
        for a in addrs:
            if a.family == socket.AF_INET and not a.address.startswith("127."):
                return str(a.address)
    return None


def _connects(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def test_the_demo_binds_to_loopback_by_default(demo_url: str) -> None:
    from apps.demo import launch

    assert inspect.signature(launch).parameters["host"].default == "127.0.0.1"
    port = urlparse(demo_url).port
    assert port is not None and _connects("127.0.0.1", port)
    other = _non_loopback_ipv4()
    if other is None:
        pytest.skip("this machine has no non-loopback IPv4 address to try")
    assert not _connects(other, port), f"the demo answers on {other}:{port}"


def test_a_launched_demo_listens_on_loopback_and_bounds_its_sessions(demo_resources: Any) -> None:
    from apps.demo import SESSION_CAPACITY, launch

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    app = launch(resources=demo_resources, port=port, block=False, quiet=True)
    try:
        assert app.server_name == "127.0.0.1"
        assert app.state_session_capacity == SESSION_CAPACITY < 10000
        assert _connects("127.0.0.1", port)
    finally:
        app.close()


def _exe(tmp_path: Path) -> Path:
    path = tmp_path / "setup.exe"
    path.write_bytes(b"MZ" + b"\0" * 510)
    return path


def test_executables_are_refused_in_both_upload_boxes(demo_resources: Any, tmp_path: Path) -> None:
    exe = _exe(tmp_path)
    as_xray = analyze_upload(demo_resources, exe, None)
    assert "X-ray: file type .exe of setup.exe is not accepted" in as_xray.error
    as_ecg = analyze_upload(demo_resources, None, [exe])
    assert "ECG: file type .exe of setup.exe is not accepted" in as_ecg.error
    assert not as_xray.probabilities and not as_ecg.probabilities


def test_an_executable_over_http_gets_a_readable_error(demo_url: str, tmp_path: Path) -> None:
    client = gradio_client.Client(demo_url, verbose=False, download_files=False)
    try:
        exe = gradio_client.handle_file(str(_exe(tmp_path)))
        out = client.predict(exe, None, api_name="/analyze")
        assert "file type .exe of setup.exe is not accepted" in out[0]
        assert "upload a DICOM (.dcm), PNG or JPEG" in out[0]
    finally:
        client.close()


def test_malloc_tuning_applies_on_glibc_and_yields_to_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import platform
    import sys

    from apps.demo import tune_malloc

    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert tune_malloc() is False  # an explicit setting wins
    monkeypatch.delenv("MALLOC_ARENA_MAX")
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    glibc = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"
    assert tune_malloc() is glibc
