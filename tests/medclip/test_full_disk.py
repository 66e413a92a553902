"""A full disk while saving leaves the previous file intact: checkpoints, bundles, case indexes.

Each test writes a good version, then runs the same writer again with ``ENOSPC`` simulated part
way through the write (after some bytes really went to disk), and checks: our
:class:`~medclip.errors.OutputWriteError` naming the output and the problem (also at the CLI,
without a traceback), the previous output byte for byte and still loadable, and no temporary
file or folder left behind.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from medclip.config import MedclipConfig, ModelConfig, TowerConfig, TrainerConfig
from medclip.errors import OutputWriteError

TINY = ModelConfig(
    xray=TowerConfig("xray_vit_tiny_dropkey", {"img_size": 32, "patch_size": 8}),
    ecg=TowerConfig("ecg_resnet1d18", {"width": 8, "layers": [1, 1, 1, 1], "length": 250}),
    text=TowerConfig("text_tiny_random", {"tiny_layers": 1, "max_length": 16}),
    embed_dim=16,
)
NO_SPACE = os.strerror(errno.ENOSPC)  # "No space left on device"


def enospc() -> OSError:
    return OSError(errno.ENOSPC, NO_SPACE)


class FullDisk:
    """Lets ``budget`` bytes through (really written), then every write fails with ENOSPC."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.used = 0
        self.failures = 0

    def write(self, fh: Any, data: Any) -> int:
        room = self.budget - self.used
        if len(data) <= room:
            self.used += len(data)
            return int(fh.write(data))
        if room > 0:
            fh.write(data[:room])
            self.used = self.budget
        self.failures += 1
        raise enospc()

    def wrap(self, fh: Any) -> Any:
        return _LimitedFile(fh, self)

    def open_func(self, real: Callable[..., Any]) -> Callable[..., Any]:
        """``open`` / ``os.fdopen`` replacement: files opened for writing get the budget."""

        def opener(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
            fh = real(file, mode, *args, **kwargs)
            return self.wrap(fh) if any(c in mode for c in "wax+") else fh

        return opener


class _LimitedFile:
    def __init__(self, fh: Any, disk: FullDisk) -> None:
        self._fh = fh
        self._disk = disk

    def write(self, data: Any) -> int:
        return self._disk.write(self._fh, data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._fh, name)

    def __enter__(self) -> _LimitedFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self._fh.close()


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file and folder under ``folder`` (hidden ones included) with its bytes."""
    return {
        str(p.relative_to(folder)): p.read_bytes() if p.is_file() else b"<dir>"
        for p in sorted(folder.rglob("*"))
    }


def check_error(error: BaseException, target: Path) -> None:
    assert isinstance(error, OutputWriteError) and isinstance(error, OSError)
    assert error.errno == errno.ENOSPC
    message = str(error)
    assert message.startswith(str(target)), message
    assert "no space left on device" in message and "previous version is unchanged" in message


# ---------------------------------------------------------------------------- checkpoints
def test_checkpoint_save_on_a_full_disk_keeps_the_previous_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import medclip.safe_load as safe_load
    from medclip.fit import AtomicCheckpointIO
    from medclip.safe_load import safe_torch_load

    io = AtomicCheckpointIO()
    ckpt = tmp_path / "checkpoints" / "last.ckpt"
    g = torch.Generator().manual_seed(0)
    first: dict[str, Any] = {
        "global_step": 3,
        "state_dict": {"w": torch.randn(64, 64, generator=g)},
    }
    io.save_checkpoint(first, ckpt)
    before = snapshot(tmp_path)
    second = {"global_step": 4, "state_dict": {"w": torch.randn(64, 64, generator=g)}}
    disk = FullDisk(budget=ckpt.stat().st_size // 2)
    monkeypatch.setattr(safe_load.os, "fdopen", disk.open_func(os.fdopen))
    with pytest.raises(OutputWriteError) as info:
        io.save_checkpoint(second, ckpt)
    monkeypatch.undo()
    assert disk.failures >= 1 and disk.used == disk.budget  # it failed part-way through
    check_error(info.value, ckpt)
    assert snapshot(tmp_path) == before  # same bytes, no temp file
    loaded = safe_torch_load(ckpt)
    assert loaded["global_step"] == 3
    assert torch.equal(loaded["state_dict"]["w"], first["state_dict"]["w"])


# ---------------------------------------------------------------------------- bundles
def tiny_model(seed: int) -> Any:
    from medclip.model import MedclipModel

    torch.manual_seed(seed)
    return MedclipModel(TINY)


def fake_save_file_full(real: Callable[..., Any]) -> Callable[..., Any]:
    """safetensors' ``save_file`` on a full disk: part of the file, then its own error type."""
    from safetensors import SafetensorError

    def save_file(tensors: Any, filename: str, metadata: Any = None) -> None:
        real(tensors, filename, metadata=metadata)
        data = Path(filename).read_bytes()
        Path(filename).write_bytes(data[: len(data) // 2])
        raise SafetensorError(
            'Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No '
            'space left on device" })'
        )

    return save_file


@pytest.mark.parametrize("where", ["weights", "config"])
def test_bundle_export_on_a_full_disk_keeps_the_previous_bundle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    import safetensors.torch

    import medclip.bundle as bundle_mod
    from medclip.bundle import export_bundle, load_bundle

    cfg = MedclipConfig(name="full-disk", model=TINY, trainer=TrainerConfig(accelerator="cpu"))
    out = export_bundle(tiny_model(0), tmp_path / "bundles" / "b", config=cfg)
    with torch.no_grad():
        expected = load_bundle(out).model.encode_text(["pleural effusion"])
    before = snapshot(tmp_path / "bundles")

    if where == "weights":
        monkeypatch.setattr(
            safetensors.torch, "save_file", fake_save_file_full(safetensors.torch.save_file)
        )
    else:
        disk = FullDisk(budget=40)

        def write_json(path: Path, data: Any) -> None:
            with disk.open_func(open)(path, "w", encoding="utf-8") as fh:
                fh.write(bundle_mod.json.dumps(data, indent=2) + "\n")

        monkeypatch.setattr(bundle_mod, "_write_json", write_json)
    with pytest.raises(OutputWriteError) as info:
        export_bundle(tiny_model(1), out, config=cfg, overwrite=True)
    monkeypatch.undo()
    check_error(info.value, out)
    assert snapshot(tmp_path / "bundles") == before  # same bytes, no .b.tmp-* folder
    with torch.no_grad():
        again = load_bundle(out).model.encode_text(["pleural effusion"])
    assert torch.equal(again, expected)


def test_cli_export_on_a_full_disk_prints_one_clear_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import safetensors.torch

    from medclip.cli import main
    from medclip.safe_load import atomic_torch_save
    from medclip.training import ContrastiveModule

    cfg = MedclipConfig(name="full-disk", model=TINY, trainer=TrainerConfig(accelerator="cpu"))
    torch.manual_seed(0)
    module = ContrastiveModule(cfg)
    ckpt = atomic_torch_save(
        {"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)},
        tmp_path / "last.ckpt",
    )
    out = tmp_path / "bundle"
    assert main(["export", str(ckpt), str(out)]) == 0
    before = snapshot(tmp_path)
    capsys.readouterr()
    monkeypatch.setattr(
        safetensors.torch, "save_file", fake_save_file_full(safetensors.torch.save_file)
    )
    assert main(["export", str(ckpt), str(out), "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "SafetensorError" not in err
    assert f"medclip export: error: {out}: could not be written: no space left on device" in err
    monkeypatch.undo()
    assert snapshot(tmp_path) == before


# ---------------------------------------------------------------------------- case index
def make_index(seed: int) -> Any:
    from medclip.retrieval import CaseIndex, CaseRecord

    rng = np.random.default_rng(seed)
    index = CaseIndex(dim=8, kind="exact")
    for modality in ("xray", "ecg"):
        cases = [
            CaseRecord(f"{modality}-{seed}-{i}", modality, ("Edema",), f"report {i}")
            for i in range(20)
        ]
        index.add(rng.normal(size=(20, 8)).astype(np.float32), cases)
    return index


@pytest.mark.parametrize("where", ["faiss", "cases"])
def test_index_save_on_a_full_disk_keeps_the_previous_index(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    import medclip.retrieval as retrieval
    from medclip.retrieval import CaseIndex

    target = tmp_path / "indexes" / "index"
    first = make_index(0)
    first.save(target)
    query = np.ones(8, dtype=np.float32)
    expected = [h.case_id for h in CaseIndex.load(target).search(query, k=5)]
    before = snapshot(tmp_path / "indexes")

    if where == "faiss":
        real_write = retrieval.faiss.write_index

        def write_index(index: Any, path: str) -> None:
            real_write(index, path)
            data = Path(path).read_bytes()
            Path(path).write_bytes(data[: len(data) // 2])
            raise RuntimeError(  # how faiss words a failed fwrite
                f"Error in faiss::FileIOWriter::operator() at impl/io.cpp:84: write error in "
                f"{path}: 100 != 341 ({NO_SPACE})"
            )

        monkeypatch.setattr(retrieval.faiss, "write_index", write_index)
    else:
        disk = FullDisk(budget=300)
        monkeypatch.setattr(retrieval, "open", disk.open_func(open), raising=False)
    with pytest.raises(OutputWriteError) as info:
        make_index(1).save(target)
    monkeypatch.undo()
    check_error(info.value, target.resolve())
    assert snapshot(tmp_path / "indexes") == before  # no .index.tmp-* / .index.previous
    loaded = CaseIndex.load(target)
    assert len(loaded) == len(first)
    assert [h.case_id for h in loaded.search(query, k=5)] == expected
