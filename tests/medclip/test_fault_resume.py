"""A training run killed with SIGKILL at a random step resumes from its last checkpoint, and in
deterministic mode every loss after the resume equals the uninterrupted run's, bit for bit.

Three ``medclip fit`` processes on one tiny synthetic dataset: a reference run, a victim killed
(SIGKILL) once its step log reaches a step drawn with a seeded ``random.Random``, and
``medclip fit --resume`` of the victim's folder in a fresh process. The reference and the victim
run side by side; the resuming process does its imports meanwhile and only starts (reads the
checkpoint) once the victim is dead. Losses come from ``OUT/logs/steps.csv`` (one flushed line
per optimizer step, see :class:`medclip.resume.StepLossLog`).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

BATCHES_PER_EPOCH = 5  # 13 training studies, batches of 3 (the generator's seed-0 split)
N_STEPS = 10
CKPT_EVERY = 2  # last.ckpt at steps 2, 4, 6, 8 and at epoch ends (5, 10)
SEED = 5  # draws step 7: the last checkpoint before the kill is mid-epoch (step 6)
TIMEOUT_S = 240.0
FIT_SET = [
    "model.xray.kwargs={img_size: 32, patch_size: 8}",
    "model.ecg.kwargs={width: 8, layers: [1, 1, 1, 1], length: 250}",
    "model.text.kwargs={tiny_layers: 1, max_length: 32}",
    "data.image_size=32",
    "data.ecg_length=250",
    "data.batch_size=3",
    "data.num_workers=0",
    f"trainer.max_steps={N_STEPS}",
    "trainer.max_epochs=4",
    "trainer.accelerator=cpu",
    "trainer.deterministic=true",
    "trainer.log_every_n_steps=1",
]


@dataclass(frozen=True)
class StepRow:
    step: int
    epoch: int
    loss: float
    start_step: int


def read_steps(path: Path) -> list[StepRow]:
    """Complete lines of a step log (a line cut by the kill has no newline and is dropped)."""
    if not path.is_file():
        return []
    text = path.read_text(encoding="utf-8")
    lines = text.split("\n")[:-1]  # the last element is "" or a partial line
    rows = []
    for line in lines[1:]:
        step, epoch, loss, start = line.split(",")
        rows.append(StepRow(int(step), int(epoch), float(loss), int(start)))
    return rows


def fit_command(out: Path, data: Path, *extra: str) -> list[str]:
    cmd = [sys.executable, "-m", "medclip", "fit", "--config", "tiny", "--out", str(out)]
    cmd += ["--data-root", str(data), "--no-progress", "--checkpoint-every", str(CKPT_EVERY)]
    return cmd + [a for s in FIT_SET for a in ("--set", s)] + list(extra)


#: ``medclip <args>`` that imports the heavy libraries first, then waits for a line on stdin.
WAIT_THEN_RUN = (
    "import sys\n"
    "import medclip.fit, medclip.cli, transformers, timm\n"
    "sys.stdin.readline()\n"
    "sys.exit(medclip.cli.main(sys.argv[1:]))\n"
)


def start(cmd: list[str], log: Path, repo: Path, wait: bool = False) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",  # same reduction order in every process
        "MKL_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "PYTHONPATH": str(repo),
    }
    if wait:
        cmd = [sys.executable, "-c", WAIT_THEN_RUN, *cmd[3:]]  # drop "python -m medclip"
    stdin = subprocess.PIPE if wait else subprocess.DEVNULL
    with log.open("wb") as fh:
        return subprocess.Popen(
            cmd, cwd=repo, env=env, stdin=stdin, stdout=fh, stderr=subprocess.STDOUT
        )


def finish(proc: subprocess.Popen[bytes], log: Path) -> None:
    try:
        rc = proc.wait(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        pytest.fail(f"{proc.args!r} timed out; log:\n{log.read_text()[-3000:]}")
    assert rc == 0, f"exit {rc}; log:\n{log.read_text(errors='replace')[-3000:]}"


def test_sigkill_at_a_random_step_resumes_with_identical_losses(
    tmp_path: Path, repo_root: Path
) -> None:
    from datamodules.synthetic import generate

    data = tmp_path / "data"
    generate(data, n=16, seed=0, image_size=32, progress=False)
    kill_at = random.Random(SEED).randint(3, N_STEPS - 3)

    ref_out, victim_out = tmp_path / "reference", tmp_path / "victim"
    victim_log, resume_log = tmp_path / "victim.log", tmp_path / "resume.log"
    steps_csv = victim_out / "logs" / "steps.csv"
    procs = [
        start(fit_command(victim_out, data), victim_log, repo_root),
        start(fit_command(ref_out, data), tmp_path / "reference.log", repo_root),
        start(fit_command(victim_out, data, "--resume"), resume_log, repo_root, wait=True),
    ]
    victim, ref, resumer = procs
    try:
        deadline = time.monotonic() + TIMEOUT_S
        while not any(r.step >= kill_at for r in read_steps(steps_csv)):
            assert victim.poll() is None, f"victim ended early:\n{victim_log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, "victim never reached the kill step"
            time.sleep(0.01)
        os.kill(victim.pid, signal.SIGKILL)
        assert victim.wait(timeout=60) == -signal.SIGKILL
        killed = read_steps(steps_csv)
        assert resumer.stdin is not None
        resumer.stdin.write(b"go\n")  # resume only now: the victim is dead
        resumer.stdin.close()
        finish(resumer, resume_log)
        finish(ref, tmp_path / "reference.log")
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    last_killed = max(r.step for r in killed)
    assert kill_at <= last_killed < N_STEPS, "the kill must land mid-run"
    assert [r.step for r in killed] == list(range(1, last_killed + 1))
    assert {r.start_step for r in killed} == {0}
    assert "Traceback" not in resume_log.read_text()

    reference = read_steps(ref_out / "logs" / "steps.csv")
    assert [r.step for r in reference] == list(range(1, N_STEPS + 1))
    assert [r.epoch for r in reference] == [
        (s - 1) // BATCHES_PER_EPOCH for s in range(1, N_STEPS + 1)
    ]
    by_step = {r.step: r for r in reference}
    # the killed process computed what the reference computed (same config, same process setup)
    for r in killed:
        assert (r.loss, r.epoch) == (by_step[r.step].loss, by_step[r.step].epoch), r

    resumed = read_steps(steps_csv)[len(killed) :]
    assert resumed, f"the resumed run logged no step:\n{resume_log.read_text()[-3000:]}"
    (from_step,) = {r.start_step for r in resumed}
    # resumed from the last checkpoint written before the kill: at most one interval lost
    assert from_step % CKPT_EVERY == 0 or from_step % BATCHES_PER_EPOCH == 0
    assert last_killed - CKPT_EVERY <= from_step <= last_killed
    # the step counter continues: steps after the checkpoint re-done once, none skipped
    assert [r.step for r in resumed] == list(range(from_step + 1, N_STEPS + 1))
    for r in resumed:
        ref_row = by_step[r.step]
        assert r.loss == ref_row.loss, (r, ref_row)  # exact float equality
        assert r.epoch == ref_row.epoch, (r, ref_row)
    summary = json.loads((victim_out / "metrics.json").read_text())
    assert summary["global_step"] == N_STEPS
    ref_summary = json.loads((ref_out / "metrics.json").read_text())
    assert summary["metrics"]["train/loss"] == ref_summary["metrics"]["train/loss"]
    if "val/loss" in summary["metrics"]:  # absent when resumed after the last validation
        assert summary["metrics"]["val/loss"] == ref_summary["metrics"]["val/loss"]
