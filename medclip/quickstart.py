"""The quick-start bundle behind ``medclip demo`` on a fresh machine (DESIGN.md §6).

With no trained model at hand, :func:`build_quickstart` writes a synthetic dataset in the real
on-disk formats, trains a tri-modal contrastive model and ProtoECGNet on it (minutes on a CPU, with
progress bars), exports a bundle, builds its similar-case index and keeps a few synthetic examples
for the demo. SYNTHETIC DATA ONLY: the model has never seen a patient.

Layout (``HOME`` is ``$MEDCLIP_HOME`` or ``~/.cache/medclip/quickstart``; one folder per preset)::

    HOME/<preset>/
      quickstart.json          state: options fingerprint, finished steps and their durations
      .lock                    held while a process builds (a second one waits)
      data/                    synthetic dataset (datamodules.synthetic.generate)
      runs/contrastive/        `medclip fit` run folder (checkpoints, logs, metrics.json)
      runs/proto/              ProtoECGNet run folder (resumable work/, bundle/)
      bundle/                  the model bundle the demo serves
        prototypes/            copy of runs/proto/bundle
        index/, index_assets/  case index of the train+val studies and its previews
        examples/              examples.json + a few test-split studies (X-ray DICOM + WFDB ECG)

Steps run in order (``data``, ``fit``, ``export``, ``proto``, ``index``, ``examples``); each one
writes its output atomically and is recorded in ``quickstart.json`` only when it has finished. A
second call reuses every finished step; an interrupted one continues (training resumes from its
last checkpoint) and redoes the steps after the first unfinished one. Changing the options (or the
quick-start version) rebuilds the preset's folder from scratch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medclip import __version__
from medclip.errors import MedclipError
from medclip.safe_load import write_json_atomic

log = logging.getLogger(__name__)

#: Bump when the layout or the meaning of a step changes (forces a rebuild).
QUICKSTART_VERSION = 1
ENV_HOME = "MEDCLIP_HOME"
STATE_FILE = "quickstart.json"
STEPS: tuple[str, ...] = ("data", "fit", "export", "proto", "index", "examples")
EXAMPLES_FILE = "examples.json"
#: Fewest synthetic patients that give ProtoECGNet's validation and test folds positives.
MIN_PATIENTS = 60

#: Per-preset defaults: (patients, image size, extra config overrides).
PRESET_DEFAULTS: dict[str, tuple[int | None, int, tuple[str, ...]]] = {
    "tiny": (MIN_PATIENTS, 128, ("proto.epochs_pretrain=0",)),
    "small": (None, 256, ()),
    "base": (None, 256, ()),
}


def quickstart_home(home: str | Path | None = None) -> Path:
    """``home``, else ``$MEDCLIP_HOME``, else ``~/.cache/medclip/quickstart``."""
    if home is not None:
        return Path(home).expanduser()
    env = os.environ.get(ENV_HOME)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "medclip" / "quickstart"


@dataclass(frozen=True)
class QuickstartLayout:
    """Paths of one preset's quick-start folder (no file access)."""

    root: Path

    @property
    def state(self) -> Path:
        """``quickstart.json``."""
        return self.root / STATE_FILE

    @property
    def data(self) -> Path:
        """The synthetic dataset."""
        return self.root / "data"

    @property
    def contrastive_run(self) -> Path:
        """The contrastive training run."""
        return self.root / "runs" / "contrastive"

    @property
    def proto_run(self) -> Path:
        """The ProtoECGNet run."""
        return self.root / "runs" / "proto"

    @property
    def bundle(self) -> Path:
        """The bundle served by the demo."""
        return self.root / "bundle"

    @property
    def prototypes(self) -> Path:
        """The ProtoECGNet bundle inside the bundle."""
        return self.bundle / "prototypes"

    @property
    def index(self) -> Path:
        """The case index inside the bundle."""
        return self.bundle / "index"

    @property
    def examples(self) -> Path:
        """The bundled examples."""
        return self.bundle / "examples"


@dataclass(frozen=True)
class QuickstartOptions:
    """What to build.

    Attributes:
        preset: config preset (``tiny`` for tests, ``small`` for the CPU demo).
        n_patients: synthetic patients (None: the preset's ``data.synth_n``, at least
            :data:`MIN_PATIENTS`).
        seed: data and training seed.
        image_size: synthetic X-ray height in pixels (None: the preset default).
        overrides: extra ``key=value`` config overrides.
        with_proto: also train ProtoECGNet.
        n_examples: test-split studies kept as examples.
        max_time_s: wall-clock limit of the contrastive training (None: the preset's).
    """

    preset: str = "small"
    n_patients: int | None = None
    seed: int = 0
    image_size: int | None = None
    overrides: tuple[str, ...] = ()
    with_proto: bool = True
    n_examples: int = 4
    max_time_s: float | None = None

    def __post_init__(self) -> None:
        if self.n_patients is not None and self.n_patients < MIN_PATIENTS:
            raise ValueError(f"n_patients must be >= {MIN_PATIENTS}, got {self.n_patients}")
        if self.n_examples < 0:
            raise ValueError(f"n_examples must be >= 0, got {self.n_examples}")
        if self.image_size is not None and not 32 <= self.image_size <= 1024:
            raise ValueError(f"image_size must be in [32, 1024], got {self.image_size}")
        if self.max_time_s is not None and not self.max_time_s > 0:
            raise ValueError(f"max_time_s must be > 0, got {self.max_time_s}")
        object.__setattr__(self, "overrides", tuple(self.overrides))

    def all_overrides(self) -> list[str]:
        """The preset's quick-start overrides followed by the caller's."""
        extra = PRESET_DEFAULTS.get(self.preset, (None, 256, ()))[2]
        return [*extra, *self.overrides]

    def resolved_image_size(self) -> int:
        """Synthetic X-ray size."""
        return self.image_size or PRESET_DEFAULTS.get(self.preset, (None, 256, ()))[1]

    def fingerprint(self) -> str:
        """Hash of everything that changes what gets built."""
        payload = {
            **dataclasses.asdict(self),
            "quickstart_version": QUICKSTART_VERSION,
            "medclip": __version__,
        }
        text = json.dumps(payload, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass
class QuickstartResult:
    """What :func:`build_quickstart` did.

    Attributes:
        layout: the folder's paths.
        built: steps run by this call.
        reused: steps found finished.
        seconds: wall-clock seconds of this call.
        step_seconds: seconds each finished step took when it was built.
    """

    layout: QuickstartLayout
    built: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)
    seconds: float = 0.0
    step_seconds: dict[str, float] = field(default_factory=dict)

    @property
    def bundle(self) -> Path:
        """The bundle folder."""
        return self.layout.bundle


@dataclass
class BuildContext:
    """Handed to each step function."""

    layout: QuickstartLayout
    options: QuickstartOptions
    progress: bool
    cache: dict[str, Any] = field(default_factory=dict)

    def config(self) -> Any:
        """The :class:`~medclip.config.MedclipConfig` of the options (cached); its ``data``
        section records the synthetic dataset really generated (size and seed, for the card)."""
        if "config" not in self.cache:
            from medclip.config import load_config

            opts = self.options
            overrides = opts.all_overrides()
            n = opts.n_patients
            if n is None:
                default = PRESET_DEFAULTS.get(opts.preset, (None, 256, ()))[0]
                n = default or load_config(opts.preset, overrides).data.synth_n
            n = max(int(n), MIN_PATIENTS)
            self.cache["config"] = load_config(
                opts.preset,
                [
                    *overrides,
                    f"data.synth_n={n}",
                    f"data.synth_seed={opts.seed}",
                    f"trainer.seed={opts.seed}",
                ],
            )
        return self.cache["config"]

    def n_patients(self) -> int:
        """Synthetic patients to generate."""
        return int(self.config().data.synth_n)


StepFn = Callable[[BuildContext], None]


# ----------------------------------------------------------------------------- small helpers
def replace_dir(stage: Path, target: Path) -> None:
    """Move a finished ``stage`` folder onto ``target`` (replacing it) with ``os.replace``."""
    old: Path | None = None
    if target.exists():
        old = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
        os.replace(target, old)
    os.replace(stage, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _stage_dir(target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))


@contextlib.contextmanager
def _lock(root: Path) -> Iterator[None]:
    """Hold ``root/.lock`` exclusively (POSIX); a second builder waits for the first."""
    root.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no locking
        yield
        return
    with open(root / ".lock", "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("another process is building %s; waiting for it", root)
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def read_state(layout: QuickstartLayout) -> dict[str, Any]:
    """``quickstart.json`` (empty dict when absent or unreadable)."""
    try:
        data = json.loads(layout.state.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


# ----------------------------------------------------------------------------- the steps
def step_data(ctx: BuildContext) -> None:
    """Generate the synthetic dataset (atomic: written to a sibling folder, then moved)."""
    from datamodules.synthetic import generate

    generate(
        ctx.layout.data,
        n=ctx.n_patients(),
        seed=ctx.options.seed,
        image_size=ctx.options.resolved_image_size(),
        progress=ctx.progress,
    )


def step_fit(ctx: BuildContext) -> None:
    """Train the contrastive model (resumes an interrupted run from ``last.ckpt``)."""
    from medclip.fit import fit

    run = ctx.layout.contrastive_run
    last = run / "checkpoints" / "last.ckpt"
    fit(
        ctx.config(),
        data_root=ctx.layout.data,
        out_dir=run,
        max_time_s=ctx.options.max_time_s,
        resume="last" if last.is_file() else None,
        enable_progress_bar=ctx.progress,
    )


def _run_metrics(run: Path) -> dict[str, float]:
    try:
        data = json.loads((run / "metrics.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    values = data.get("metrics", {}) if isinstance(data, dict) else {}
    return {k: float(v) for k, v in values.items() if isinstance(v, (int, float))}


def step_export(ctx: BuildContext) -> None:
    """Export the bundle from the run's best (else last) checkpoint; replaces ``bundle/``."""
    from medclip.bundle import export_bundle

    run = ctx.layout.contrastive_run
    best, last = run / "checkpoints" / "best.ckpt", run / "checkpoints" / "last.ckpt"
    ckpt = best if best.is_file() else last
    if not ckpt.is_file():
        raise MedclipError(f"{run}: no checkpoint to export (the fit step did not finish)")
    # the checkpoint carries the config the model was built with (e.g. the text length)
    export_bundle(ckpt, ctx.layout.bundle, metrics=_run_metrics(run), overwrite=True)


def step_proto(ctx: BuildContext) -> None:
    """Train ProtoECGNet on the synthetic PTB-XL copy and put its bundle into the bundle."""
    if not ctx.options.with_proto:
        shutil.rmtree(ctx.layout.prototypes, ignore_errors=True)
        return
    from medclip.proto.fit import fit_proto

    result = fit_proto(ctx.config(), ctx.layout.data, ctx.layout.proto_run, progress=ctx.progress)
    stage = _stage_dir(ctx.layout.prototypes)
    try:
        shutil.copytree(result.bundle_dir, stage, dirs_exist_ok=True)
        replace_dir(stage, ctx.layout.prototypes)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise


def step_index(ctx: BuildContext) -> None:
    """Index the train and validation studies (X-ray, ECG, report) with previews."""
    from datamodules.sources import load_studies
    from medclip.bundle import load_bundle
    from medclip.indexing import build_case_index

    bundle = load_bundle(ctx.layout.bundle)
    studies = [s for s in load_studies("synthetic", ctx.layout.data) if s.split in ("train", "val")]
    build_case_index(
        bundle,
        studies,
        ctx.layout.index,
        dataset="synthetic",
        previews=True,
        progress=ctx.progress,
    )


def _readable(study: Any) -> bool:
    from medclip.io import MedclipDataError, read_cxr, read_ecg

    try:
        read_cxr(study.xray_path)
        read_ecg(study.ecg_path)
    except (MedclipDataError, OSError):
        return False
    return True


def _positives(study: Any) -> list[str]:
    return [k for k, v in study.labels.items() if v == 1.0]


def choose_examples(studies: Sequence[Any], n: int) -> list[Any]:
    """Up to ``n`` studies with an X-ray, an ECG and a report, greedily covering new labels."""
    pool = [s for s in studies if s.xray_path and s.ecg_path and s.report]
    pool.sort(key=lambda s: str(s.study_id))
    chosen: list[Any] = []
    covered: set[str] = set()
    while pool and len(chosen) < n:
        seen = [frozenset(_positives(s)) for s in chosen]
        best = max(
            pool,
            key=lambda s: (
                len(set(_positives(s)) - covered),
                frozenset(_positives(s)) not in seen,
                -pool.index(s),
            ),
        )
        pool.remove(best)
        if not _readable(best):
            continue
        chosen.append(best)
        covered |= set(_positives(best))
    return chosen


def _ecg_files(record: Path) -> list[Path]:
    """The WFDB header of ``record`` (a stem) and every file it names."""
    stem = record.with_suffix("") if record.suffix.lower() == ".hea" else record
    hea = Path(f"{stem}.hea")
    names: list[str] = []
    lines = [
        ln.split()
        for ln in hea.read_text(encoding="latin-1").splitlines()
        if ln.strip() and not ln.startswith("#")
    ]
    n_sig = int(lines[0][1]) if lines and len(lines[0]) > 1 else 0
    for parts in lines[1 : 1 + n_sig]:
        if parts and parts[0] not in names:
            names.append(parts[0])
    return [hea, *(hea.parent / name for name in names)]


def step_examples(ctx: BuildContext) -> None:
    """Copy a few test-split studies into ``bundle/examples`` with ``examples.json``."""
    from datamodules.sources import load_studies
    from medclip.indexing import report_snippet

    studies = load_studies("synthetic", ctx.layout.data, split="test")
    chosen = choose_examples(studies, ctx.options.n_examples)
    stage = _stage_dir(ctx.layout.examples)
    try:
        entries = []
        for i, study in enumerate(chosen, start=1):
            name = f"example-{i}"
            folder = stage / name
            folder.mkdir()
            xray_src = Path(study.xray_path)
            xray = folder / f"xray{xray_src.suffix.lower()}"
            shutil.copyfile(xray_src, xray)
            ecg_files = _ecg_files(Path(study.ecg_path))
            for f in ecg_files:
                shutil.copyfile(f, folder / f.name)
            labels = _positives(study)
            entries.append(
                {
                    "name": name,
                    "title": f"Synthetic example {i}: {', '.join(labels) or 'no finding'}",
                    "xray": f"{name}/{xray.name}",
                    "ecg": f"{name}/{ecg_files[0].name}",
                    "labels": labels,
                    "report": report_snippet(study.report, 400),
                }
            )
        write_json_atomic(
            stage / EXAMPLES_FILE,
            {
                "notice": "SYNTHETIC DATA - not real patients",
                "source": "medclip quick-start (datamodules.synthetic, test split)",
                "examples": entries,
            },
        )
        replace_dir(stage, ctx.layout.examples)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise


DEFAULT_STEPS: dict[str, StepFn] = {
    "data": step_data,
    "fit": step_fit,
    "export": step_export,
    "proto": step_proto,
    "index": step_index,
    "examples": step_examples,
}

_DESCRIPTIONS = {
    "data": "writing the synthetic dataset (MIMIC-CXR / MIMIC-IV-ECG / PTB-XL formats)",
    "fit": "training the tri-modal contrastive model",
    "export": "exporting the model bundle",
    "proto": "training ProtoECGNet (prototype ECG classifier)",
    "index": "building the similar-case index",
    "examples": "keeping example studies for the demo",
}


def _outputs_present(layout: QuickstartLayout, step: str, options: QuickstartOptions) -> bool:
    """Whether a step's output is still on disk (a finished step whose output vanished reruns)."""
    checks: dict[str, Callable[[], bool]] = {
        "data": lambda: (layout.data / "synthetic.json").is_file(),
        "fit": lambda: (layout.contrastive_run / "checkpoints" / "last.ckpt").is_file(),
        "export": lambda: (layout.bundle / "model.safetensors").is_file(),
        "proto": lambda: not options.with_proto or (layout.prototypes / "config.json").is_file(),
        "index": lambda: (layout.index / "index.json").is_file(),
        "examples": lambda: (layout.examples / EXAMPLES_FILE).is_file(),
    }
    return checks[step]()


def quickstart_ready(
    home: str | Path | None = None, options: QuickstartOptions | None = None
) -> Path | None:
    """The bundle path when the quick-start for ``options`` is complete, else None."""
    opts = options or QuickstartOptions()
    layout = QuickstartLayout(quickstart_home(home) / opts.preset)
    state = read_state(layout)
    if state.get("fingerprint") != opts.fingerprint():
        return None
    done = state.get("done", {})
    if all(s in done and _outputs_present(layout, s, opts) for s in STEPS):
        return layout.bundle
    return None


def build_quickstart(
    home: str | Path | None = None,
    options: QuickstartOptions | None = None,
    *,
    progress: bool = True,
    steps: Mapping[str, StepFn] | None = None,
) -> QuickstartResult:
    """Build (or reuse) the quick-start bundle.

    Args:
        home: base folder (default :func:`quickstart_home`); the preset's folder is inside it.
        options: what to build.
        progress: tqdm progress bars (steps, data generation, training, indexing).
        steps: replacement step functions by name (tests); default :data:`DEFAULT_STEPS`.

    Returns:
        :class:`QuickstartResult`; ``result.bundle`` is the bundle to serve.

    Raises:
        MedclipError: a step failed in a way the user must fix (the message says how).
    """
    from tqdm.auto import tqdm

    opts = options or QuickstartOptions()
    fns = {**DEFAULT_STEPS, **(steps or {})}
    layout = QuickstartLayout(quickstart_home(home) / opts.preset)
    started = time.perf_counter()
    result = QuickstartResult(layout)
    with _lock(layout.root):
        state = read_state(layout)
        fingerprint = opts.fingerprint()
        if state and state.get("fingerprint") != fingerprint:
            log.info("quick-start options changed; rebuilding %s", layout.root)
            for child in layout.root.iterdir():
                if child.name != ".lock":
                    if child.is_dir():
                        shutil.rmtree(child, ignore_errors=True)
                    else:
                        child.unlink(missing_ok=True)
            state = {}
        done: dict[str, Any] = dict(state.get("done", {}))
        state = {
            "format": "medclip-quickstart",
            "version": QUICKSTART_VERSION,
            "preset": opts.preset,
            "options": dataclasses.asdict(opts),
            "fingerprint": fingerprint,
            "done": done,
        }
        ctx = BuildContext(layout, opts, progress)
        dirty = False
        complete = all(s in done and _outputs_present(layout, s, opts) for s in STEPS)
        bar = tqdm(STEPS, desc="medclip quick-start", unit="step", disable=not progress or complete)
        for i, step in enumerate(bar, start=1):
            if not dirty and step in done and _outputs_present(layout, step, opts):
                result.reused.append(step)
                continue
            dirty = True
            done.pop(step, None)
            for later in STEPS[i:]:
                done.pop(later, None)
            write_json_atomic(layout.state, state)
            bar.set_postfix_str(step)
            log.info("quick-start [%d/%d] %s", i, len(STEPS), _DESCRIPTIONS[step])
            t0 = time.perf_counter()
            fns[step](ctx)
            seconds = round(time.perf_counter() - t0, 1)
            done[step] = {"seconds": seconds, "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}
            write_json_atomic(layout.state, state)
            result.built.append(step)
        bar.close()
    result.seconds = time.perf_counter() - started
    result.step_seconds = {s: float(done[s].get("seconds", 0.0)) for s in STEPS if s in done}
    if result.built:
        log.info(
            "quick-start ready in %.0f s: %s (built %s)",
            result.seconds,
            layout.bundle,
            ", ".join(result.built),
        )
    return result
