"""ProtoECGNet label groups derived from scp_statements.csv (rhythm 16, morphology 52, global 3)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from datamodules.errors import MetadataError
from datamodules.proto_groups import (
    GLOBAL_CODES,
    RHYTHM_EXTRA,
    ProtoGroups,
    derive_proto_groups,
    load_proto_groups,
    multi_hot,
    parse_scp_codes,
)

PTBXL_RHYTHM = {
    "SR", "AFIB", "STACH", "SARRH", "SBRAD", "PACE", "SVARR", "BIGU", "AFLT", "SVTAC", "PSVT",
    "TRIGU",
}  # fmt: skip


def test_real_scp_statements_give_16_52_3(real_ecg_dir: Path) -> None:
    path = real_ecg_dir / "ptbxl_metadata" / "scp_statements.csv"
    groups = load_proto_groups(path)
    assert (len(groups.rhythm), len(groups.morphology), len(groups.global_)) == (16, 52, 3)
    assert set(groups.rhythm) == PTBXL_RHYTHM | set(RHYTHM_EXTRA)
    assert set(groups.global_) == set(GLOBAL_CODES)
    table = pd.read_csv(path, index_col=0)
    assert set(groups.all_labels) == set(table.index)
    assert len(groups.all_labels) == 71
    # morphology: everything else, e.g. infarction, hypertrophy, ST-T and form codes
    for code in ("IMI", "LVH", "CLBBB", "NDT", "PVC", "LVOLT", "STD_"):
        assert code in groups.morphology
    # file row order is kept inside each group
    order = list(table.index)
    assert list(groups.morphology) == sorted(groups.morphology, key=order.index)


def test_regrouping_moves_conduction_codes_to_rhythm() -> None:
    table = pd.DataFrame(
        {"rhythm": [1.0, None, None, None, None, None], "diagnostic": [None, 1, 1, 1, 1, 1]},
        index=["SR", "1AVB", "IVCD", "NORM", "IMI", "CLBBB"],
    )
    g = derive_proto_groups(table)
    assert g.rhythm == ("SR", "1AVB", "IVCD")
    assert g.global_ == ("NORM",)
    assert g.morphology == ("IMI", "CLBBB")
    assert g["global"] == g.global_
    assert g.all_labels == ("SR", "1AVB", "IVCD", "IMI", "CLBBB", "NORM")


def test_bad_files_raise_metadata_error(tmp_path: Path) -> None:
    with pytest.raises(MetadataError, match="not found"):
        load_proto_groups(tmp_path / "missing.csv")
    bad = tmp_path / "scp_statements.csv"
    bad.write_text(",description,form\nNORM,normal,\n", encoding="utf-8")
    with pytest.raises(MetadataError, match="rhythm") as info:
        load_proto_groups(bad)
    assert str(bad) in str(info.value)
    only_rhythm = tmp_path / "r.csv"
    only_rhythm.write_text(",rhythm\nSR,1.0\nAFIB,1.0\n", encoding="utf-8")
    with pytest.raises(MetadataError, match="no SCP statement"):
        load_proto_groups(only_rhythm)


def test_scp_codes_parsing_and_multi_hot() -> None:
    codes = parse_scp_codes("{'NORM': 100.0, 'LVOLT': 0.0, 'SR': 0.0}")
    assert codes == {"NORM": 100.0, "LVOLT": 0.0, "SR": 0.0}
    with pytest.raises(MetadataError, match="dict literal"):
        parse_scp_codes("__import__('os')")
    with pytest.raises(MetadataError, match="dict literal"):
        parse_scp_codes("[1, 2]")
    # a code with likelihood 0.0 ("unknown") still counts as present; unknown codes are ignored
    y = multi_hot([set(codes), {"XYZ"}], ("SR", "NORM", "AFIB"))
    assert y.tolist() == [[1.0, 1.0, 0.0], [0.0, 0.0, 0.0]]


def test_groups_restrict_and_round_trip() -> None:
    g = ProtoGroups(("SR", "AFIB"), ("IMI",), ("NORM", "DIG"))
    r = g.restrict({"SR", "NORM", "IMI"})
    assert r.as_dict() == {"rhythm": ["SR"], "morphology": ["IMI"], "global": ["NORM"]}
    assert ProtoGroups.from_dict(g.as_dict()) == g
    empty = g.restrict({"SR"})
    assert empty.active == ("rhythm",)
    with pytest.raises(ValueError, match="more than one"):
        ProtoGroups(("SR",), ("SR",), ("NORM",))
    with pytest.raises(KeyError):
        g["other"]
