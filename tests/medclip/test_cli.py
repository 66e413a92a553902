"""The ``medclip`` console script: help, version, doctor."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from medclip import __version__
from medclip.cli import main


def test_help_lists_commands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "doctor" in out
    assert "Research use" in out


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--version"])
    assert __version__ in capsys.readouterr().out


def test_no_command_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 0
    assert "usage: medclip" in capsys.readouterr().out


def test_doctor_json(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["doctor", "--json"])
    info = json.loads(capsys.readouterr().out)
    assert code == 0
    assert info["packages"]["torch"] != "not installed"
    assert info["device"].startswith(("cpu", "cuda"))
    assert info["torch_threads"] >= 1
    assert info["offline_assets"]["text_model_weights"] is True
    assert info["text_model"].endswith("model")


def test_doctor_text(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    for word in ("device:", "threads:", "text model:", "offline assets:", "timm"):
        assert word in out


def test_python_dash_m() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "medclip", "--version"], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0
    assert __version__ in proc.stdout


def test_unknown_command_fails() -> None:
    with pytest.raises(SystemExit) as exc:
        main(["no-such-command"])
    assert exc.value.code == 2
