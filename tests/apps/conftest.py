"""Session fixtures of the demo tests: one tiny quick-start bundle, its resources, one server.

The bundle is the real quick-start (``preset="tiny"``: synthetic data, a few training steps,
ProtoECGNet, case index, examples), built once per session in the session's temp folder.
``tests/medclip/test_quickstart.py`` builds into the same folder, so whichever runs first builds
and the other one reuses it.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

#: Upload limit of the test app (MB): small, so that the size check is cheap to exercise.
TEST_MAX_UPLOAD_MB = 1.0


def free_port() -> int:
    """A TCP port that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def quickstart_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's quick-start home (shared with tests/medclip/test_quickstart.py)."""
    return tmp_path_factory.getbasetemp() / "medclip-quickstart"


@pytest.fixture(scope="session")
def demo_bundle(quickstart_home: Path) -> Path:
    """The tiny quick-start bundle (built once per session)."""
    from medclip.quickstart import QuickstartOptions, build_quickstart

    return build_quickstart(
        quickstart_home, QuickstartOptions(preset="tiny"), progress=False
    ).bundle


@pytest.fixture(scope="session")
def demo_resources(demo_bundle: Path) -> Any:
    """Loaded demo resources over the tiny bundle (upload limit 1 MB, top 4 cases)."""
    import torch

    from apps.handlers import load_resources
    from apps.uploads import UploadPolicy

    torch.manual_seed(0)
    return load_resources(demo_bundle, policy=UploadPolicy(TEST_MAX_UPLOAD_MB), top_k=4)


@pytest.fixture(scope="session")
def demo_url(demo_resources: Any) -> Iterator[str]:
    """A running demo server (background thread) on a free port; closed after the session."""
    from apps.demo import launch

    port = free_port()
    app = launch(
        resources=demo_resources,
        port=port,
        max_upload_mb=TEST_MAX_UPLOAD_MB,
        block=False,
        quiet=True,
    )
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        app.close()


@pytest.fixture(scope="session")
def real_xray(real_cxr_dir: Path) -> Path:
    """A real pediatric chest X-ray (Kermany test split, PNEUMONIA)."""
    files = sorted((real_cxr_dir / "kermany_test_224" / "PNEUMONIA").glob("*.jpeg"))
    assert files, "no Kermany PNEUMONIA images"
    return files[0]


@pytest.fixture(scope="session")
def real_ecg_pair(real_ecg_dir: Path) -> tuple[Path, Path]:
    """A real 500 Hz 12-lead record in CinC format: (``HR06000.hea``, ``HR06000.mat``)."""
    hea = real_ecg_dir / "cinc2021" / "HR06000.hea"
    return hea, hea.with_suffix(".mat")


@pytest.fixture()
def corrupt_dicom(tmp_path: Path) -> Path:
    """A file with a DICOM preamble and magic followed by garbage."""
    path = tmp_path / "broken.dcm"
    path.write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00\x10\x00UI\xff\xffgarbage" * 20)
    return path
