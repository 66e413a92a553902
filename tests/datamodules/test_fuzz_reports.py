"""Fuzz the report parsers of :mod:`datamodules.reports` with arbitrary text (hypothesis).

Inputs: arbitrary Unicode, report-shaped text (upper-case headers, ``___`` de-identification
marks, odd whitespace), arbitrary bytes in report files, arbitrary cells of the MIMIC-IV-ECG
statement columns. Properties: no exception except :class:`ReportError`; sections are
whitespace-collapsed and only hold words of the input; the training text is ``None`` or
non-empty, stripped and free of ``___``; the vectorised statement join agrees with the per-row
join.

``MEDCLIP_FUZZ_EXAMPLES=N`` runs ``N`` random examples per target; see docs/fuzzing.md.
"""

from __future__ import annotations

import math
import os
import re
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from datamodules.errors import ReportError
from datamodules.reports import (
    clean_phi,
    combine_reports,
    cxr_report_text,
    ecg_statement_columns,
    join_ecg_statements,
    join_ecg_statements_frame,
    parse_cxr_sections,
    ptbxl_report_text,
    read_cxr_report,
)

#: Examples per target in a normal run (the whole fuzz suite stays well under a minute).
DEFAULT_EXAMPLES = 300


def fuzz_settings(default: int = DEFAULT_EXAMPLES) -> settings:
    """Hypothesis settings: ``default`` derandomised examples, or ``$MEDCLIP_FUZZ_EXAMPLES``
    random ones (failures then land in the local ``.hypothesis`` database for replay)."""
    scaled = int(os.environ.get("MEDCLIP_FUZZ_EXAMPLES", "0") or 0)
    return settings(
        max_examples=scaled if scaled > 0 else default,
        derandomize=scaled <= 0,
        database=settings().database if scaled > 0 else None,
        deadline=None,
        phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


# ---------------------------------------------------------------------------------------------
# Strategies

_HEADERS = [
    "FINDINGS",
    "IMPRESSION",
    "IMPRESSON",
    "CONCLUSION",
    "INDICATION",
    "HISTORY",
    "COMPARISON",
    "TECHNIQUE",
    "FINAL REPORT",
    "EXAMINATION",
    "FINDINGS AND IMPRESSION",
    "RECOMMENDATION(S)",
    "WET READ",
    "A",
    "X-RAY",
]
_PIECES = st.one_of(
    st.sampled_from(_HEADERS).map(lambda h: f"\n {h}:"),
    st.sampled_from(_HEADERS).map(lambda h: f"{h}: "),
    st.sampled_from(["___", "____", " ___ ", "_", "__", "\n", "\n\n", " \n \n", "\t", "\r\n"]),
    st.sampled_from(["No acute process.", "Heart size is normal", "Dr. ___ notified", ":"]),
    st.sampled_from(["\u00a0", "\u2028", "\x0b", "\x0c", "\x1c", "\u3000", "é", "😀", "\x00"]),
    st.text(max_size=20),
)
#: Report-shaped text: headers, PHI marks, odd whitespace and arbitrary snippets.
report_text = st.lists(_PIECES, max_size=25).map("".join)
#: Either report-shaped or fully arbitrary Unicode.
any_text = st.one_of(report_text, st.text(max_size=400))
phi_tokens = st.sampled_from(["", "[REDACTED]", "PHI"])


# ---------------------------------------------------------------------------------------------
# CXR reports


@fuzz_settings()
@given(text=any_text)
@example(text="")
@example(text="FINDINGS:")
@example(text="\n FINDINGS: a\n IMPRESSION: b\n FINDINGS: c")
@example(text="A" + " A" * 5000)  # long header-like line without a colon
@example(text="\n IMPRESSION:FINDINGS: \n IMPRESSION:\n IMPRESSION:FINDINGS: ")  # was "x  y"
def test_parse_cxr_sections(text: str) -> None:
    sections = parse_cxr_sections(text)
    assert isinstance(sections, dict)
    for name, body in sections.items():
        assert isinstance(name, str) and name and name == name.lower()
        assert isinstance(body, str) and body
        assert body == " ".join(body.split()), "whitespace inside a section is collapsed"
        # every word of the output comes from the input (headers removed, nothing invented)
        for word in body.split():
            assert word in text


@fuzz_settings()
@given(text=any_text, phi=phi_tokens, fallback=st.booleans())
@example(text="FINDINGS: __" + "_" * 3 + "_ x", phi="", fallback=True)
@example(text="\n\nFINAL REPORT\n\n", phi="", fallback=True)
def test_cxr_report_text(text: str, phi: str, fallback: bool) -> None:
    out = cxr_report_text(text, phi_token=phi, fallback_last_paragraph=fallback)
    if out is None:
        return
    assert isinstance(out, str) and out and out == out.strip()
    assert "___" not in out
    assert out == " ".join(out.split()), "no newlines or whitespace runs in the training text"


@fuzz_settings()
@given(
    findings=st.text(st.characters(blacklist_categories=["Cs"]), min_size=1, max_size=60),
    impression=st.text(st.characters(blacklist_categories=["Cs"]), min_size=1, max_size=60),
    noise=report_text,
)
def test_findings_and_impression_are_kept_in_order(
    findings: str, impression: str, noise: str
) -> None:
    """A report with both sections yields their words, FINDINGS first."""
    clean_f = " ".join(w for w in findings.split() if ":" not in w and "_" not in w)
    clean_i = " ".join(w for w in impression.split() if ":" not in w and "_" not in w)
    if not (clean_f and clean_i) or any(c.isupper() for c in clean_f + clean_i):
        return  # upper-case words could form a new header; the parser is right to split there
    noise = noise.replace(":", " ")
    text = f"{noise}\n FINDINGS: {clean_f}\n IMPRESSION: {clean_i}\n"
    out = cxr_report_text(text)
    assert out is not None
    f_at, i_at = out.find(clean_phi(clean_f)), out.rfind(clean_phi(clean_i))
    assert 0 <= f_at <= i_at, (out, clean_f, clean_i)


@fuzz_settings(default=150)
@given(data=st.binary(max_size=600), required=st.booleans())
@example(data=b"\xff\xfe\x00F\x00I", required=True)
@example(data=b"", required=True)
@example(data=b"FINDINGS: ok\xc3\x28 fine.", required=False)
def test_read_cxr_report_arbitrary_bytes(data: bytes, required: bool) -> None:
    with tempfile.TemporaryDirectory(prefix="fuzzrep") as tmp:
        path = Path(tmp) / "s50000000.txt"
        path.write_bytes(data)
        try:
            out = read_cxr_report(path, required=required)
        except ReportError as exc:
            assert required and exc.path and "s50000000" in str(exc)
            return
        assert out is None or (isinstance(out, str) and out == out.strip() and out)
        assert out is not None or not required


def test_read_cxr_report_on_folder_and_missing(tmp_path: Path) -> None:
    assert read_cxr_report(tmp_path) is None
    assert read_cxr_report(tmp_path / "nope.txt") is None
    for path in (tmp_path, tmp_path / "nope.txt"):
        with pytest.raises(ReportError):
            read_cxr_report(path, required=True)


@fuzz_settings()
@given(text=any_text, phi=phi_tokens)
def test_clean_phi(text: str, phi: str) -> None:
    out = clean_phi(text, phi)
    assert out == out.strip()
    assert "___" not in out
    assert "  " not in out and "\t" not in out


# ---------------------------------------------------------------------------------------------
# ECG statements and PTB-XL reports

_cells = st.one_of(
    st.none(),
    st.just(float("nan")),
    st.sampled_from(["***", "EKG", "ecg", " ", "", ".", "Sinus rhythm", "Normal ECG.", "-- ."]),
    st.text(max_size=30),
)


@fuzz_settings()
@given(cells=st.lists(_cells, max_size=18))
def test_join_ecg_statements(cells: list[object]) -> None:
    out = join_ecg_statements(cells)
    texts = [" ".join(c.split()) for c in cells if isinstance(c, str)]
    usable = [t.rstrip(" .") for t in texts if not _filler(t)]
    if out is None:
        assert not any(usable), (cells, usable)
        return
    assert out.endswith(".") and out == out.strip() and "\n" not in out
    for text in usable:  # every usable statement is in the report
        assert text in out, (text, out)


def _filler(text: str) -> bool:
    """Blank or only punctuation, or a lone EKG/ECG (the documented filler cells)."""
    return re.sub(r"[\W_]+", "", text).lower() in ("", "ekg", "ecg")


@fuzz_settings(default=100)
@given(rows=st.lists(st.lists(_cells, min_size=1, max_size=6), min_size=1, max_size=6))
def test_statement_frame_agrees_with_row_join(rows: list[list[object]]) -> None:
    """The vectorised join used for the whole table equals the per-row join."""
    width = max(len(r) for r in rows)
    data: dict[str, list[object]] = {"study_id": list(range(len(rows)))}
    for k in range(width):
        data[f"report_{k}"] = [r[k] if k < len(r) else None for r in rows]
    frame = pd.DataFrame(data).astype({f"report_{k}": object for k in range(width)})
    frame = frame.astype({f"report_{k}": "string" for k in range(width)}).astype(object)
    frame = frame.where(frame.notna(), np.nan)
    long = join_ecg_statements_frame(frame)
    assert list(long.columns) == ["study_id", "position", "statement"]
    joined = long.groupby("study_id")["statement"].agg(". ".join) + "."
    for sid in range(len(rows)):
        cells = [frame.at[sid, f"report_{k}"] for k in range(width)]
        expected = join_ecg_statements(cells)
        assert joined.get(sid) == expected, (cells, joined.get(sid), expected)


@fuzz_settings(default=100)
@given(names=st.lists(st.one_of(st.text(max_size=12), st.integers(0, 30).map(str)), max_size=20))
def test_ecg_statement_columns(names: list[str]) -> None:
    cols = ecg_statement_columns([*names, *(f"report_{k}" for k in (3, 0, 11))])
    numbers = [int(c.split("_")[1]) for c in cols]
    assert numbers == sorted(numbers) and {0, 3, 11} <= set(numbers)


@fuzz_settings(default=150)
@given(
    value=st.one_of(
        st.none(),
        st.floats(allow_nan=True),
        st.integers(),
        st.text(max_size=50),
        st.just(pd.NA),
    ),
    other=st.one_of(st.none(), st.text(max_size=20)),
)
def test_ptbxl_report_text_and_combine(value: object, other: str | None) -> None:
    text = ptbxl_report_text(value)
    assert text is None or (text == " ".join(text.split()) and text)
    if isinstance(value, float) and math.isnan(value):
        assert text is None
    both = combine_reports(text, other)
    assert both is None or (both == both.strip() and both)
    assert (both is None) == (not (text and text.strip()) and not (other and other.strip()))


# ---------------------------------------------------------------------------------------------
# Optional coverage-guided harness (atheris); skipped when atheris is not installed


@pytest.mark.slow  # ~30 s per target: atheris instruments pydicom and wfdb at start-up
@pytest.mark.parametrize("target", ["report", "wfdb", "dicom", "csv"])
def test_atheris_harness_runs(target: str, tmp_path: Path) -> None:
    """``fuzz_atheris.py TARGET -runs=300`` finishes without a crash (needs ``.[fuzz]``)."""
    pytest.importorskip("atheris")
    import subprocess
    import sys

    harness = Path(__file__).with_name("fuzz_atheris.py")
    root = Path(__file__).resolve().parents[2]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]),
    }
    proc = subprocess.run(
        [
            sys.executable,
            str(harness),
            target,
            "-runs=300",
            "-seed=1",
            f"-artifact_prefix={tmp_path}/",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=tmp_path,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Done 300 runs" in proc.stderr
