"""Session fixtures for the medclip tests: a tiny synthetic dataset and a tiny trained bundle.

``tiny_bundle`` is built once per test session with the ``tiny`` preset (ECG tower narrowed
further), two optimizer steps of :func:`medclip.fit.fit` on ``tiny_synthetic_root`` and
:func:`medclip.bundle.export_bundle`. It learns nothing useful: tests use it for shapes, files
and plumbing, never for accuracy. Do not write into it (use ``--out``/``tmp_path`` for indexes
and reports); ``tiny_bundle_copy`` gives a private copy when a test must.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import pytest

TINY_OVERRIDES = (
    "trainer.max_steps=2",
    "trainer.accelerator=cpu",
    "trainer.val_check_interval=0",
    "trainer.log_every_n_steps=1",
    "model.ecg.kwargs={width: 8, layers: [1, 1, 1, 1]}",
)


@pytest.fixture(scope="session")
def tiny_synthetic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic dataset (24 patients, seed 0, 64-px images) in the real on-disk formats."""
    from datamodules.synthetic import generate

    root = tmp_path_factory.mktemp("synthetic") / "data"
    generate(root, n=24, seed=0, image_size=64, progress=False)
    return root


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory, tiny_synthetic_root: Path) -> Path:
    """Path of a tiny bundle trained for two steps on ``tiny_synthetic_root`` (read-only)."""
    import torch

    from medclip.bundle import export_bundle
    from medclip.config import load_config
    from medclip.fit import fit

    base = tmp_path_factory.mktemp("tiny_bundle")
    torch.manual_seed(0)
    cfg = load_config("tiny", [*TINY_OVERRIDES, f"trainer.out_dir={base / 'run'}"])
    logging.getLogger("lightning").setLevel(logging.WARNING)
    result = fit(
        cfg,
        data_root=tiny_synthetic_root,
        enable_progress_bar=False,
        checkpoint_every_n_steps=0,
    )
    return export_bundle(result.last_checkpoint, base / "bundle")


@pytest.fixture(scope="session")
def tiny_loaded_bundle(tiny_bundle: Path) -> Any:
    """``load_bundle(tiny_bundle)``, loaded once (treat as read-only)."""
    from medclip.bundle import load_bundle

    return load_bundle(tiny_bundle)


@pytest.fixture
def tiny_bundle_copy(tiny_bundle: Path, tmp_path: Path) -> Path:
    """A private, writable copy of ``tiny_bundle``."""
    return Path(shutil.copytree(tiny_bundle, tmp_path / "bundle"))
