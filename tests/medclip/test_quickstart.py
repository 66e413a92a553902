"""The quick-start bundle: step order, reuse, resume after a failure, and one real tiny build."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from medclip.quickstart import (
    STEPS,
    BuildContext,
    QuickstartLayout,
    QuickstartOptions,
    build_quickstart,
    choose_examples,
    quickstart_home,
    quickstart_ready,
    read_state,
)

# ----------------------------------------------------------------------------- fake steps
_OUTPUT = {
    "data": lambda lay: lay.data / "synthetic.json",
    "fit": lambda lay: lay.contrastive_run / "checkpoints" / "last.ckpt",
    "export": lambda lay: lay.bundle / "model.safetensors",
    "proto": lambda lay: lay.prototypes / "config.json",
    "index": lambda lay: lay.index / "index.json",
    "examples": lambda lay: lay.examples / "examples.json",
}


class FakeSteps:
    """Step functions that write the output each real step leaves, and record their calls."""

    def __init__(self, fail: str | None = None) -> None:
        self.calls: list[str] = []
        self.fail = fail

    def fns(self) -> dict[str, Any]:
        return {name: self._make(name) for name in STEPS}

    def _make(self, name: str) -> Any:
        def step(ctx: BuildContext) -> None:
            self.calls.append(name)
            if name == self.fail:
                raise RuntimeError(f"{name} interrupted")
            out = _OUTPUT[name](ctx.layout)
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text("{}")

        return step


OPTS = QuickstartOptions(preset="tiny")


def test_home_resolution(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MEDCLIP_HOME", str(tmp_path / "env"))
    assert quickstart_home(tmp_path / "given") == tmp_path / "given"
    assert quickstart_home() == tmp_path / "env"
    monkeypatch.delenv("MEDCLIP_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    assert quickstart_home() == tmp_path / "user" / ".cache" / "medclip" / "quickstart"


def test_options_are_validated_and_fingerprinted() -> None:
    with pytest.raises(ValueError, match="n_patients"):
        QuickstartOptions(n_patients=10)
    with pytest.raises(ValueError, match="image_size"):
        QuickstartOptions(image_size=8)
    assert QuickstartOptions().fingerprint() == QuickstartOptions().fingerprint()
    assert QuickstartOptions().fingerprint() != QuickstartOptions(n_examples=2).fingerprint()
    assert "proto.epochs_pretrain=0" in OPTS.all_overrides()


def test_first_run_builds_in_order_and_second_run_reuses(tmp_path: Path) -> None:
    fake = FakeSteps()
    first = build_quickstart(tmp_path, OPTS, progress=False, steps=fake.fns())
    assert fake.calls == list(STEPS) and first.built == list(STEPS) and first.reused == []
    assert first.bundle == tmp_path / "tiny" / "bundle"
    state = read_state(QuickstartLayout(tmp_path / "tiny"))
    assert set(state["done"]) == set(STEPS) and state["fingerprint"] == OPTS.fingerprint()
    assert quickstart_ready(tmp_path, OPTS) == first.bundle
    assert not [p for p in (tmp_path / "tiny").iterdir() if ".tmp" in p.name]

    again = FakeSteps()
    second = build_quickstart(tmp_path, OPTS, progress=False, steps=again.fns())
    assert again.calls == [] and second.built == [] and second.reused == list(STEPS)


def test_a_vanished_output_rebuilds_that_step_and_the_later_ones(tmp_path: Path) -> None:
    build_quickstart(tmp_path, OPTS, progress=False, steps=FakeSteps().fns())
    (tmp_path / "tiny" / "bundle" / "index" / "index.json").unlink()
    assert quickstart_ready(tmp_path, OPTS) is None
    fake = FakeSteps()
    result = build_quickstart(tmp_path, OPTS, progress=False, steps=fake.fns())
    assert fake.calls == ["index", "examples"]
    assert result.reused == ["data", "fit", "export", "proto"]


def test_an_interrupted_build_resumes_at_the_failed_step(tmp_path: Path) -> None:
    broken = FakeSteps(fail="proto")
    with pytest.raises(RuntimeError, match="proto interrupted"):
        build_quickstart(tmp_path, OPTS, progress=False, steps=broken.fns())
    state = read_state(QuickstartLayout(tmp_path / "tiny"))
    assert list(state["done"]) == ["data", "fit", "export"]
    assert quickstart_ready(tmp_path, OPTS) is None
    fake = FakeSteps()
    build_quickstart(tmp_path, OPTS, progress=False, steps=fake.fns())
    assert fake.calls == ["proto", "index", "examples"]


def test_changed_options_rebuild_everything_and_presets_live_apart(tmp_path: Path) -> None:
    build_quickstart(tmp_path, OPTS, progress=False, steps=FakeSteps().fns())
    other = QuickstartOptions(preset="tiny", n_examples=1)
    fake = FakeSteps()
    build_quickstart(tmp_path, other, progress=False, steps=fake.fns())
    assert fake.calls == list(STEPS)
    assert quickstart_ready(tmp_path, OPTS) is None and quickstart_ready(tmp_path, other)
    small = FakeSteps()
    build_quickstart(tmp_path, QuickstartOptions(preset="small"), progress=False, steps=small.fns())
    assert small.calls == list(STEPS) and (tmp_path / "small" / "bundle").is_dir()
    assert quickstart_ready(tmp_path, other)  # untouched by the other preset


def test_choose_examples_covers_new_labels_first(monkeypatch: pytest.MonkeyPatch) -> None:
    import medclip.quickstart as qs

    class S:
        def __init__(self, sid: str, labels: dict[str, float], report: str = "r") -> None:
            self.study_id, self.labels, self.report = sid, labels, report
            self.xray_path, self.ecg_path = Path(f"{sid}.dcm"), Path(sid)

    monkeypatch.setattr(qs, "_readable", lambda s: s.study_id != "bad")
    studies = [
        S("a", {"NORM": 1.0}),
        S("b", {"AFIB": 1.0, "Edema": 1.0}),
        S("bad", {"LVH": 1.0, "MI": 1.0, "Edema": 1.0}),
        S("c", {"NORM": 1.0}),
        S("d", {"AFIB": 1.0, "NORM": 0.0}),
        S("e", {"LVH": 1.0}, report=""),
    ]
    chosen = choose_examples(studies, 3)
    assert [s.study_id for s in chosen] == ["b", "a", "d"]


# ----------------------------------------------------------------------------- the real thing
@pytest.fixture(scope="module")
def real_build(tmp_path_factory: pytest.TempPathFactory) -> Any:
    # same folder as tests/apps/conftest.py: one real build per session
    home = tmp_path_factory.getbasetemp() / "medclip-quickstart"
    return home, build_quickstart(home, OPTS, progress=False)


def test_real_tiny_quickstart_layout_and_reuse(real_build: Any) -> None:
    from medclip.bundle import load_bundle
    from medclip.io import read_cxr, read_ecg
    from medclip.retrieval import CaseIndex

    home, result = real_build
    layout = result.layout
    assert set(result.built) | set(result.reused) == set(STEPS)
    assert (layout.data / "synthetic.json").is_file()
    assert (layout.contrastive_run / "checkpoints" / "last.ckpt").is_file()
    bundle = load_bundle(result.bundle)
    assert bundle.prototypes is not None and bundle.prototypes.labels
    assert "SYNTHETIC" in bundle.card and "60 generated studies" in bundle.card
    index = CaseIndex.load(layout.index)
    assert set(index.modalities) == {"xray", "ecg", "text"} and len(index) > 0
    examples = json.loads((layout.examples / "examples.json").read_text())["examples"]
    assert 1 <= len(examples) <= OPTS.n_examples
    for ex in examples:
        assert read_cxr(layout.examples / ex["xray"]).pixels.ndim == 2
        assert read_ecg(layout.examples / ex["ecg"]).signal.shape[0] == 12
    assert quickstart_ready(home, OPTS) == result.bundle
    again = build_quickstart(home, OPTS, progress=False)
    assert again.built == [] and again.reused == list(STEPS)
