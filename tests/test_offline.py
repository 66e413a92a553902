"""No network at run time: an end-to-end CLI run under a guard that makes every outbound
connection and DNS lookup fail (tests/netguard/sitecustomize.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GUARD = Path(__file__).resolve().parent / "netguard"


def _env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(GUARD), env.get("PYTHONPATH", "")])
    # Unroutable proxies as a second line of defence, and no hub access at all.
    env.update(
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        GRADIO_ANALYTICS_ENABLED="False",
        HTTP_PROXY="http://10.255.255.1:9",
        HTTPS_PROXY="http://10.255.255.1:9",
        NO_PROXY="127.0.0.1,localhost",
        HF_HOME=str(tmp_path / "hf_home"),
        MPLBACKEND="Agg",
    )
    return env


def _run(args: list[str], tmp_path: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args],
        env=_env(tmp_path),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_guard_really_blocks_network(tmp_path: Path) -> None:
    code = (
        "import urllib.request\n"
        "try:\n"
        "    urllib.request.urlopen('https://huggingface.co', timeout=5)\n"
        "except Exception as e:\n"
        "    print(type(e).__name__, e)\n"
    )
    proc = _run(["-c", code], tmp_path)
    assert "network access blocked by test" in proc.stdout


def test_cli_end_to_end_offline(tmp_path: Path) -> None:
    from medclip.commands import COMMAND_MODULES

    proc = _run(["-m", "medclip", "doctor"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "text_model_weights           ok" in proc.stdout
    assert "blocked" not in proc.stderr

    data = tmp_path / "data"
    proc = _run(
        ["-m", "medclip", "synth", str(data), "--n", "12", "--seed", "3", "--no-progress"], tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    run_dir = tmp_path / "run"
    proc = _run(
        [
            "-m", "medclip", "fit", "--config", "tiny", "--data-root", str(data),
            "--out", str(run_dir), "--set", "trainer.max_steps=2", "--no-progress",
        ],
        tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    assert ckpt.exists()
    bundle = tmp_path / "bundle"
    proc = _run(["-m", "medclip", "export", str(ckpt), str(bundle)], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (bundle / "model.safetensors").exists()
    if "zeroshot" in COMMAND_MODULES and (ROOT / "medclip/commands/zeroshot.py").exists():
        ecg = next((data / "mimic-iv-ecg" / "files").rglob("*.hea"))
        proc = _run(["-m", "medclip", "zeroshot", "--bundle", str(bundle), str(ecg)], tmp_path)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert "research use only" in proc.stdout.lower()
    assert "blocked" not in proc.stderr
