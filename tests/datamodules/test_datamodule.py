"""LightningDataModules: splits, batches, seeding, grouping, cache use, classification sources."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pytest
import torch
import wfdb
from PIL import Image

from datamodules.cache import cache_path
from datamodules.datamodule import (
    ContrastiveDataModule,
    CxrClassificationDataModule,
    EcgClassificationDataModule,
    image_folder_studies,
    studies_from_csv,
)
from datamodules.errors import MetadataError
from datamodules.sampler import UniqueGroupBatchSampler
from datamodules.seeding import seed_worker
from datamodules.transforms import CxrTransformConfig, EcgTransformConfig
from datamodules.types import CANONICAL_LEADS, Batch, Study

ECG_CFG = EcgTransformConfig(fs_hz=100.0, length=100)
CXR_CFG = CxrTransformConfig(image_size=16)


def write_ecg(folder: Path, name: str, seed: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    sig = np.cumsum(np.random.default_rng(seed).normal(0, 0.02, size=(200, 12)), axis=0)
    wfdb.wrsamp(
        name,
        fs=100,
        units=["mV"] * 12,
        sig_name=list(CANONICAL_LEADS),
        p_signal=sig,
        fmt=["16"] * 12,
        adc_gain=[1000.0] * 12,
        baseline=[0] * 12,
        write_dir=str(folder),
    )
    return folder / name


def write_png(path: Path, seed: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, size=(20, 24), dtype=np.uint8)
    Image.fromarray(pixels, mode="L").save(path)
    return path


def write_dicom(path: Path, seed: int) -> Path:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 4096, size=(20, 24), dtype=np.uint16)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "CR"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = pixels.tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def tri_modal(folder: Path, n: int = 24) -> list[Study]:
    """n studies over n // 2 subjects (two pairs each, like many-to-many pairing)."""
    out = []
    for i in range(n):
        subject = f"p{i // 2}"
        split = "train" if i < n - 8 else ("val" if i < n - 4 else "test")
        out.append(
            Study(
                f"s{i}",
                subject,
                xray_path=write_png(folder / f"x{i}.png", i),
                ecg_path=write_ecg(folder, f"e{i}", i) if i % 5 else None,
                report=f"report {i}",
                labels={"A": float(i % 2)},
                split=split,
            )
        )
    return out


@pytest.fixture(scope="module")
def studies(tmp_path_factory: pytest.TempPathFactory) -> list[Study]:
    return tri_modal(tmp_path_factory.mktemp("data"))


def make_dm(studies: list[Study], **kw: Any) -> ContrastiveDataModule:
    settings: dict[str, Any] = {"ecg_cfg": ECG_CFG, "cxr_cfg": CXR_CFG, "batch_size": 4, **kw}
    return ContrastiveDataModule(studies, **settings)


def test_contrastive_splits_and_batches(studies: list[Study]) -> None:
    dm = make_dm(studies)
    dm.setup("fit")
    assert {k: len(v) for k, v in dm.datasets.items()} == {"train": 16, "val": 4, "test": 4}
    batches = list(dm.train_dataloader())
    assert sum(len(b) for b in batches) == 16
    b = batches[0]
    assert isinstance(b, Batch)
    assert b.xray.shape == (4, 1, 16, 16) and b.ecg.shape == (4, 12, 100)
    assert b.present.shape == (4, 3) and b.labels.shape == (4, 1)
    by_id = {s.study_id: s for s in studies}
    for batch in batches:  # at most one pair per subject in a batch
        subjects = [by_id[i].subject_id for i in batch.study_ids]
        assert len(subjects) == len(set(subjects))
        for row, sid in enumerate(batch.study_ids):
            assert bool(batch.present[row, 1]) == (by_id[sid].ecg_path is not None)
    assert {i for b in dm.val_dataloader() for i in b.study_ids} == {"s16", "s17", "s18", "s19"}
    assert dm.bad_records == 0


def test_unique_by_study_and_plain_shuffle(studies: list[Study]) -> None:
    loader = make_dm(studies, unique_by="study").train_dataloader()
    assert isinstance(loader.batch_sampler, UniqueGroupBatchSampler)
    plain = make_dm(studies, unique_by=None).train_dataloader()
    assert not isinstance(plain.batch_sampler, UniqueGroupBatchSampler)
    assert sum(len(b) for b in plain) == 16
    with pytest.raises(ValueError, match="unique_by"):
        make_dm(studies, unique_by="patient")  # type: ignore[arg-type]


def test_loader_settings_and_reproducibility(studies: list[Study]) -> None:
    dm = make_dm(studies, num_workers=1, seed=7)
    loader = dm.train_dataloader()
    assert loader.worker_init_fn is seed_worker
    assert loader.generator is not None and loader.generator.initial_seed() == 7
    assert loader.persistent_workers is True and loader.num_workers == 1
    assert loader.pin_memory is torch.cuda.is_available()
    assert make_dm(studies).train_dataloader().persistent_workers is False
    first = [b.study_ids for b in make_dm(studies, seed=7).train_dataloader()]
    again = [b.study_ids for b in make_dm(studies, seed=7).train_dataloader()]
    other = [b.study_ids for b in make_dm(studies, seed=8).train_dataloader()]
    assert first == again and first != other
    with_workers = [b.study_ids for b in loader]
    assert with_workers == first


def test_from_dataset_and_root(
    studies: list[Study], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import datamodules.sources as sources

    calls: list[tuple[Any, ...]] = []

    def fake_load(dataset: str, root: Path, **kw: Any) -> list[Study]:
        calls.append((dataset, Path(root), kw))
        return studies

    monkeypatch.setattr(sources, "load_studies", fake_load)
    dm = ContrastiveDataModule(
        dataset="mimic",
        root=tmp_path,
        load_kwargs={"pair_window_days": 30},
        batch_size=4,
        ecg_cfg=ECG_CFG,
        cxr_cfg=CXR_CFG,
    )
    dm.setup()
    assert calls == [("mimic", tmp_path, {"pair_window_days": 30})]
    assert dm.label_names == ["A"] and len(dm.datasets["train"]) == 16
    with pytest.raises(ValueError, match="studies or both"):
        ContrastiveDataModule(dataset="mimic")


def test_uses_the_cache_when_present(studies: list[Study], tmp_path: Path) -> None:
    cache_dir = tmp_path / "cache"
    dm = make_dm(studies, cache_dir=cache_dir)
    dm.setup()
    assert dm.datasets["train"].cache is None  # nothing built yet: decode per sample
    built = make_dm(studies, cache_dir=cache_dir, build_cache=True)
    built.prepare_data()
    assert cache_path(cache_dir, ECG_CFG, CXR_CFG).is_dir()
    built.setup()
    ds = built.datasets["train"]
    assert ds.cache is not None and (ds._cache_rows >= 0).sum() > 0
    fresh, cached = dm.datasets["train"][1], ds[1]
    torch.testing.assert_close(cached["ecg"], fresh["ecg"], atol=1e-2, rtol=1e-3)
    other_cfg = make_dm(studies, cache_dir=cache_dir, cxr_cfg=CxrTransformConfig(image_size=8))
    other_cfg.setup()
    assert other_cfg.datasets["train"].cache is None


def test_trainer_fit_runs_and_reshuffles(studies: list[Study]) -> None:
    seen: list[list[str]] = []

    class Tiny(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.lin = torch.nn.Linear(12, 1)

        def training_step(self, batch: Batch, idx: int) -> torch.Tensor:
            seen.append(list(batch.study_ids))
            rows = batch.present[:, 1]
            return self.lin(batch.ecg[rows].mean(-1)).pow(2).mean()

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.01)

    trainer = L.Trainer(
        max_epochs=2,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
    )
    trainer.fit(Tiny(), datamodule=make_dm(studies))
    assert len(seen) == 8  # 4 batches per epoch, exactly
    assert seen[:4] != seen[4:]  # the batch sampler got set_epoch


def test_ecg_classification_from_csv(tmp_path: Path) -> None:
    folder = tmp_path / "records"
    rows = ["path,AFIB,NORM,split,patient"]
    for i in range(6):
        write_ecg(folder, f"r{i}", i)
        label = "" if i == 2 else str(i % 2)
        rows.append(f"records/r{i},{label},{1 - i % 2},{'train' if i < 4 else 'valid'},{i}")
    (tmp_path / "table.csv").write_text("\n".join(rows) + "\n")
    dm = EcgClassificationDataModule(
        tmp_path / "table.csv", subject_column="patient", ecg_cfg=ECG_CFG, batch_size=3
    )
    dm.setup()
    assert dm.label_names == ["AFIB", "NORM"]
    assert len(dm.datasets["train"]) == 4 and len(dm.datasets["val"]) == 2
    batch = next(iter(dm.train_dataloader()))
    assert batch.ecg.shape == (3, 12, 100) and batch.present[:, 1].all()
    assert not batch.present[:, 0].any()
    ds = dm.datasets["train"]
    assert torch.isnan(ds[2]["labels"][0]) and ds[2]["labels"][1] == 1.0
    assert ds[1]["labels"].tolist() == [1.0, 0.0]


def test_csv_hash_split_and_bad_labels(tmp_path: Path) -> None:
    (tmp_path / "t.csv").write_text("path,X\n" + "".join(f"f{i},{i % 2}\n" for i in range(40)))
    studies, names = studies_from_csv(tmp_path / "t.csv", modality="ecg", test_frac=0.3)
    assert names == ["X"] and len(studies) == 40
    assert {s.split for s in studies} == {"train", "val", "test"}
    again, _ = studies_from_csv(tmp_path / "t.csv", modality="ecg", test_frac=0.3)
    assert [s.split for s in again] == [s.split for s in studies]
    (tmp_path / "bad.csv").write_text("path,X\nf0,-1\n")
    with pytest.raises(MetadataError, match=r"bad\.csv.*'X'"):
        studies_from_csv(tmp_path / "bad.csv", modality="ecg")
    with pytest.raises(MetadataError, match="missing"):
        studies_from_csv(tmp_path / "t.csv", modality="ecg", label_columns=["Y"])
    with pytest.raises(ValueError, match="exactly one"):
        EcgClassificationDataModule()


def test_ptbxl_task_on_real_data(real_ecg_dir: Path) -> None:
    meta = real_ecg_dir / "ptbxl_metadata"
    dm = EcgClassificationDataModule(
        root=real_ecg_dir / "ptbxl_native",
        task="superdiagnostic",
        ptbxl_kwargs={
            "database": meta / "ptbxl_database_subset.csv",
            "statements": meta / "scp_statements.csv",
        },
        ecg_cfg=ECG_CFG,
    )
    dm.setup()
    assert dm.label_names == ["CD", "HYP", "MI", "NORM", "STTC"]
    train = dm.datasets["train"]
    idx = next(i for i, s in enumerate(train.studies) if s.study_id == "1")
    sample = train[idx]
    assert sample["ecg"] is not None and sample["ecg"].shape == (12, 100)
    assert torch.isfinite(sample["ecg"]).all()
    assert sample["labels"][3] == 1.0  # ecg_id 1 is NORM
    assert all(s.xray_path is None for s in train.studies)


def test_cxr_image_folder(tmp_path: Path) -> None:
    root = tmp_path / "imgs"
    for i in range(6):
        write_png(root / "normal" / f"n{i}.png", i)
        write_dicom(root / "effusion" / f"e{i}.dcm", i)
    dm = CxrClassificationDataModule(root, cxr_cfg=CXR_CFG, batch_size=4, test_frac=0.3)
    dm.setup()
    assert dm.label_names == ["effusion", "normal"]
    total = sum(len(d) for d in dm.datasets.values())
    assert total == 12
    ds = next(d for d in dm.datasets.values() if len(d))
    for i in range(len(ds)):
        s = ds[i]
        assert s["xray"] is not None and s["xray"].shape == (1, 16, 16)
        assert s["labels"].sum() == 1.0 and s["ecg"] is None
        is_dicom = str(ds.studies[i].xray_path).endswith(".dcm")
        assert s["labels"].tolist() == ([1.0, 0.0] if is_dicom else [0.0, 1.0])
    assert ds.bad_records == 0


def test_cxr_image_folder_with_split_folders(tmp_path: Path) -> None:
    for split in ("train", "valid"):
        for cls in ("a", "b"):
            write_png(tmp_path / split / cls / "1.png", 1)
    studies, names = image_folder_studies(tmp_path)
    assert names == ["a", "b"]
    assert sorted(s.split for s in studies) == ["train", "train", "val", "val"]
    with pytest.raises(MetadataError, match="no class folders"):
        image_folder_studies(tmp_path / "train" / "a")


def test_cxr_image_folder_on_real_kermany(real_cxr_dir: Path) -> None:
    studies, names = image_folder_studies(real_cxr_dir / "kermany_test_224")
    assert names == ["NORMAL", "PNEUMONIA"] and len(studies) == 313
    dm = CxrClassificationDataModule(
        real_cxr_dir / "kermany_test_224", cxr_cfg=CXR_CFG, batch_size=4
    )
    dm.setup()
    batch = next(iter(dm.val_dataloader()))
    assert batch.xray.shape == (4, 1, 16, 16) and batch.present[:, 0].all()
    assert (batch.labels.sum(1) == 1).all()


def test_cxr_classification_drops_ecgs(
    studies: list[Study], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import datamodules.sources as sources

    monkeypatch.setattr(sources, "load_studies", lambda *a, **k: studies)
    dm = CxrClassificationDataModule(tmp_path, source="mimic", cxr_cfg=CXR_CFG, batch_size=4)
    dm.setup()
    assert dm.label_names is not None and "Cardiomegaly" in dm.label_names
    assert all(s.ecg_path is None for d in dm.datasets.values() for s in d.studies)


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from datamodules.synthetic import generate

    root = tmp_path_factory.mktemp("synthetic") / "out"
    generate(root, n=8, seed=0, image_size=64, progress=False)
    return root


def test_contrastive_on_the_synthetic_generator(synthetic_root: Path, tmp_path: Path) -> None:
    dm = ContrastiveDataModule(
        dataset="synthetic",
        root=synthetic_root,
        ecg_cfg=ECG_CFG,
        cxr_cfg=CXR_CFG,
        batch_size=4,
        cache_dir=tmp_path / "cache",
        build_cache=True,
    )
    dm.prepare_data()
    dm.setup("fit")
    assert dm.datasets["train"].cache is not None
    assert sum(len(d) for d in dm.datasets.values()) == len(dm.studies) >= 8
    assert dm.label_names is not None and "Cardiomegaly" in dm.label_names
    batch = next(iter(dm.train_dataloader()))
    assert batch.xray.shape[1:] == (1, 16, 16) and batch.ecg.shape[1:] == (12, 100)
    assert batch.present[:, :2].any()
    assert torch.isfinite(batch.ecg).all() and torch.isfinite(batch.xray).all()
    unreadable = [Path(p).name for d in dm.datasets.values() for p in d.bad_files()]
    assert dm.bad_records == 0, f"the readers rejected generator output: {unreadable}"


def test_cxr_classification_on_synthetic_chexpert(synthetic_root: Path) -> None:
    dm = CxrClassificationDataModule(synthetic_root, source="chexpert", cxr_cfg=CXR_CFG)
    dm.setup()
    assert dm.label_names is not None and len(dm.label_names) == 14
    ds = next(d for d in dm.datasets.values() if len(d))
    s = ds[0]
    assert s["xray"] is not None and s["xray"].shape == (1, 16, 16) and s["ecg"] is None
    assert s["labels"].shape == (14,)
    assert ds.bad_records == 0
