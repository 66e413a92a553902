"""CheXpert reader: paths, official split, uncertainty policy, 5x200 subset."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import numpy as np
import pandas as pd
import pytest

from datamodules.chexpert import chexpert_5x200, load_chexpert
from datamodules.errors import MetadataError
from datamodules.labels import XRAY_LABELS


def _fixtures() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "readers_fixtures", Path(__file__).with_name("readers_fixtures.py")
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


RF = _fixtures()


def test_index_paths_and_split(tmp_path: Path) -> None:
    base = RF.write_chexpert(tmp_path)
    index = load_chexpert(tmp_path)  # parent folder is accepted too
    assert index.root == base
    images = index.images
    assert len(images) == 9
    first = images.iloc[0]
    assert first["path"] == str(base / "train/patient00001/study1/view1_frontal.jpg")
    assert first["rel_path"] == "train/patient00001/study1/view1_frontal.jpg"
    assert first["patient"] == "patient00001" and first["study"] == "patient00001/study1"
    assert images.iloc[1]["view"] == "Lateral" and images.iloc[1]["ap_pa"] == ""
    assert images["split"].value_counts().to_dict() == {"train": 7, "val": 2}
    only_val = load_chexpert(base, splits=["valid"])
    assert set(only_val.images["split"]) == {"val"}
    with pytest.raises(ValueError, match="no test"):
        load_chexpert(base, splits=["test"])


def test_labels(tmp_path: Path) -> None:
    index = load_chexpert(RF.write_chexpert(tmp_path))
    col = {n: i for i, n in enumerate(XRAY_LABELS)}
    ignore = index.label_matrix("ignore")
    ones = index.label_matrix("one")
    assert ignore.shape == (9, 14) and ignore.dtype == np.float32
    assert np.isnan(ignore[2, col["Atelectasis"]]) and ones[2, col["Atelectasis"]] == 1.0
    assert ignore[0, col["Edema"]] == 1.0 and ignore[0, col["Fracture"]] == 0.0


def test_5x200_recipe(tmp_path: Path) -> None:
    index = load_chexpert(RF.write_chexpert(tmp_path))
    subset = chexpert_5x200(index, n_per_class=5, seed=0)
    by_label = subset.groupby("label")["path"].apply(list).to_dict()
    # Edema: patient1 frontal is excluded (Support Devices=1), lateral excluded, patient2 has an
    # uncertain Atelectasis; no clean Edema image remains in train.
    assert "Edema" not in by_label
    assert [Path(p).parts[-3] for p in by_label["Cardiomegaly"]] == ["patient00003", "patient00004"]
    assert [Path(p).parts[-3] for p in by_label["Pleural Effusion"]] == ["patient00005"]
    assert not subset["path"].str.contains("/valid/").any()
    again = chexpert_5x200(index, n_per_class=1, seed=3)
    assert again.equals(chexpert_5x200(index, n_per_class=1, seed=3))
    assert (again.groupby("label").size() <= 1).all()


def test_bad_inputs(tmp_path: Path) -> None:
    with pytest.raises(MetadataError, match="train.csv"):
        load_chexpert(tmp_path)
    base = RF.write_chexpert(tmp_path)
    frame = pd.read_csv(base / "train.csv")
    frame.assign(Edema="yes").to_csv(base / "train.csv", index=False)
    with pytest.raises(MetadataError, match=r"train\.csv: column 'Edema'"):
        load_chexpert(base)
    frame.drop(columns=["Path"]).to_csv(base / "train.csv", index=False)
    with pytest.raises(MetadataError, match=r"train\.csv: missing required column.*Path"):
        load_chexpert(base)
