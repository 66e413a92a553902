"""Helpers shared by the benchmark scripts (``benchmarks/_common.py``); nothing is timed here."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCH_DIR = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture(scope="module")
def common() -> ModuleType:
    """``benchmarks/_common.py`` loaded as a module (benchmarks/ is not a package)."""
    spec = importlib.util.spec_from_file_location("_common", BENCH_DIR / "_common.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("_common", module)
    spec.loader.exec_module(module)
    return module


def test_stat_summarises_and_formats(common: ModuleType) -> None:
    st = common.Stat.of([3.0, 1.0, 2.0, 10.0])
    assert (st.median, st.min, st.max, st.n) == (2.5, 1.0, 10.0, 4)
    assert st.fmt(".1f") == "2.5 (1.0-10.0)"
    with pytest.raises(ValueError, match="no measurements"):
        common.Stat.of([])


def test_paired_ratios_skip_zero_denominators(common: ModuleType) -> None:
    assert common.paired_ratios([2.0, 3.0, 4.0], [1.0, 0.0, 2.0]) == [2.0, 2.0]


def test_interleave_rotates_order_and_skips_warmup(common: ModuleType) -> None:
    calls: list[str] = []

    def make(name: str, value: float) -> object:
        def run() -> float:
            calls.append(name)
            return value

        return run

    out = common.interleave(
        {"a": make("a", 1.0), "b": make("b", 2.0), "c": make("c", 3.0)}, 3, warmup=1
    )
    assert out == {"a": [1.0] * 3, "b": [2.0] * 3, "c": [3.0] * 3}
    # warm-up a b c, then the start rotates every repeat
    assert calls == ["a", "b", "c", "a", "b", "c", "b", "c", "a", "c", "a", "b"]


def test_table_aligns_numbers_right(common: ModuleType) -> None:
    text = common.table(["name", "value"], [["x", "1"], ["y", "2"]])
    lines = text.splitlines()
    assert lines[0] == "| name | value |"
    assert lines[1] == "| --- | ---: |"
    assert lines[3] == "| y | 2 |"


def test_append_section_adds_heading_once_and_never_rewrites(
    common: ModuleType, tmp_path: Path
) -> None:
    out = tmp_path / "sub" / "BENCH.md"
    common.append_section(out, "## Part", "block one")
    first = out.read_text()
    common.append_section(out, "## Part", "\nblock two\n")
    common.append_section(out, "## Other", "block three")
    text = out.read_text()
    assert text.startswith(first)
    assert text.count("## Part") == 1 and text.count("## Other") == 1
    assert text.index("block one") < text.index("block two") < text.index("## Other")


def test_append_section_keeps_existing_content(common: ModuleType, tmp_path: Path) -> None:
    out = tmp_path / "BENCH.md"
    out.write_text("# Benchmarks\n\nintro without newline")
    common.append_section(out, "## Part", "new")
    text = out.read_text()
    assert text.startswith("# Benchmarks\n\nintro without newline\n")
    assert text.rstrip().endswith("new")


def test_report_header_names_command_and_machine(common: ModuleType) -> None:
    text = common.report_header("Title", packages=["numpy"], notes=["a note"])
    assert text.startswith("### Title, ")
    assert "- Command: `" in text and "- Machine: CPU " in text
    assert "numpy " in text and "- a note" in text


def test_output_args_default_to_benchmarks_md(common: ModuleType) -> None:
    p = argparse.ArgumentParser()
    common.add_output_args(p)
    args = p.parse_args([])
    assert args.out == common.DEFAULT_OUT and args.out.name == "BENCHMARKS.md"
    assert not args.no_append
    assert p.parse_args(["--output", "x.md", "--no-append"]).out == Path("x.md")
