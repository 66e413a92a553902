"""The Gradio demo: zero-shot diagnosis, similar cases and ProtoECGNet explanations.

    from apps.demo import build_app, launch
    launch("runs/demo/bundle", host="127.0.0.1", port=7860)

Inputs: a chest X-ray (DICOM, PNG, JPEG) and/or an ECG (a WFDB ``.hea`` with its ``.dat``/``.mat``
selected together, a ``.zip`` of them, or a DICOM waveform), or a bundled example. Outputs: the
X-ray with PHI-free metadata, the 12-lead ECG in the standard layout, zero-shot probabilities per
label with the research-use notice, similar cases (previews, labels, report snippets), a
free-text case search, and the prototypes behind ProtoECGNet's ECG labels.

Refused input (wrong type, a header without its signal file, an upload over the size limit, a
corrupt DICOM, ...) is shown in the error panel (``#error``) and the app keeps serving.

API endpoints (``gradio_client``): ``/analyze`` (xray file, list of ECG files),
``/analyze_example`` (example name), ``/search`` (query, case type).
"""

from __future__ import annotations

import logging
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from apps.handlers import (
    PROBABILITY_COLUMNS,
    PROTO_COLUMNS,
    QUERY_MODALITIES,
    SIMILAR_COLUMNS,
    AnalysisResult,
    DemoResources,
    SearchResult,
    analyze_example,
    analyze_upload,
    load_resources,
    search_text,
)
from apps.uploads import DEFAULT_MAX_UPLOAD_MB, UploadPolicy

log = logging.getLogger(__name__)

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

#: Gradio deletes cached uploads/outputs older than this, checking this often (seconds).
CACHE_SWEEP_S = 600
#: Browser / API sessions whose state Gradio keeps in memory, oldest evicted first. Gradio's
#: default, 10000, lets a busy demo hold ~75 KB of config per visitor, up to ~0.75 GB; the demo
#: keeps no per-session state, so evicting a session loses nothing.
SESSION_CAPACITY = 256
#: glibc malloc settings of the server process (:func:`tune_malloc`).
MALLOC_ARENA_MAX = 2
MALLOC_MMAP_THRESHOLD = 1 << 20
EXAMPLE_QUERY = "ECGs with atrial fibrillation and a rapid ventricular response"
_CSS = """
#error { color: #b00020; }
#notice, #probs-notice { background: #fff8e1; border-left: 4px solid #f9a825; padding: 6px 10px; }
"""


def _frame(rows: list[list[Any]], columns: Sequence[str]) -> Any:
    import pandas as pd

    return pd.DataFrame(rows, columns=list(columns))


def analysis_outputs(result: AnalysisResult) -> tuple[Any, ...]:
    """A result in the order of the app's analysis outputs."""
    similar = [(c.image, c.caption) for c in result.similar]
    return (
        result.error,
        result.notice,
        result.xray_image,
        result.xray_info or None,
        result.ecg_image,
        result.ecg_info or None,
        result.probabilities or None,
        _frame(result.probability_rows, PROBABILITY_COLUMNS),
        similar,
        _frame([c.row for c in result.similar], SIMILAR_COLUMNS),
        result.proto_note,
        result.proto_image,
        result.proto_pairs,
        _frame(result.proto_rows, PROTO_COLUMNS),
    )


def search_outputs(result: SearchResult) -> tuple[Any, ...]:
    """A search result in the order of the app's search outputs."""
    return (
        result.error,
        [(c.image, c.caption) for c in result.similar],
        _frame([c.row for c in result.similar], SIMILAR_COLUMNS),
    )


def _case_views(
    gallery_label: str, table_label: str, gallery_id: str, table_id: str
) -> tuple[Any, Any]:
    """A gallery of case previews and the table of the same cases (labels, report snippets)."""
    import gradio as gr

    gallery = gr.Gallery(
        label=gallery_label, columns=6, height="auto", object_fit="contain", elem_id=gallery_id
    )
    frame = gr.Dataframe(
        headers=list(SIMILAR_COLUMNS),
        label=table_label,
        elem_id=table_id,
        interactive=False,
        wrap=True,
    )
    return gallery, frame


def build_app(
    bundle_dir: str | Path | None = None,
    *,
    resources: DemoResources | None = None,
    max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB,
    top_k: int = 6,
    device: str = "cpu",
) -> Any:
    """The demo as a ``gr.Blocks`` (not launched).

    Args:
        bundle_dir: model bundle folder (ignored when ``resources`` is given).
        resources: already loaded resources (tests, benchmarks).
        max_upload_mb: upload size limit per input, in MiB.
        top_k: similar cases shown.
        device: torch device.

    Returns:
        The ``gr.Blocks`` app.
    """
    import gradio as gr

    if resources is None:
        if bundle_dir is None:
            raise ValueError("build_app needs bundle_dir or resources")
        resources = load_resources(
            bundle_dir, policy=UploadPolicy(max_upload_mb), top_k=top_k, device=device
        )
    res = resources
    example_titles = [ex.title for ex in res.examples]

    with gr.Blocks(
        title="medclip demo (research use only)",
        analytics_enabled=False,
        delete_cache=(CACHE_SWEEP_S, CACHE_SWEEP_S),  # uploads and outputs leave Gradio's cache
    ) as app:
        gr.Markdown(
            "# medclip: chest X-ray + 12-lead ECG + report\n"
            "Zero-shot labels, similar cases and prototype explanations from one shared "
            "embedding space."
        )
        notice = gr.Markdown(res.notice, elem_id="notice")
        error = gr.Markdown("", elem_id="error")
        with gr.Row():
            with gr.Column(scale=1):
                xray_in = gr.File(
                    label="Chest X-ray: DICOM (.dcm), PNG or JPEG",
                    file_count="single",
                    type="filepath",
                    elem_id="xray-upload",
                )
                ecg_in = gr.File(
                    label="ECG: WFDB .hea + .dat/.mat (select both), a .zip of them, or a DICOM "
                    "ECG (.dcm)",
                    file_count="multiple",
                    type="filepath",
                    elem_id="ecg-upload",
                )
                gr.Markdown(
                    f"Uploads up to {res.policy.max_upload_mb:g} MB per input. Uploaded files "
                    f"leave the server's cache within about {2 * CACHE_SWEEP_S // 60} minutes; "
                    "do not upload identifiable patient data."
                )
                analyze_btn = gr.Button("Analyse uploads", variant="primary", elem_id="analyze")
            with gr.Column(scale=1):
                example_in = gr.Dropdown(
                    choices=example_titles,
                    value=example_titles[0] if example_titles else None,
                    label="Bundled examples (synthetic; no real data is shipped)",
                    elem_id="example",
                    interactive=bool(example_titles),
                )
                example_btn = gr.Button(
                    "Analyse example", elem_id="analyze-example", interactive=bool(example_titles)
                )
        with gr.Row():
            xray_img = gr.Image(label="Chest X-ray", type="numpy", elem_id="xray-image")
            xray_info = gr.JSON(label="X-ray metadata (PHI-free)", elem_id="xray-info")
        with gr.Row():
            ecg_img = gr.Image(
                label="12-lead ECG (25 mm/s, 10 mm/mV)", type="numpy", elem_id="ecg-plot", scale=3
            )
            ecg_info = gr.JSON(label="ECG metadata (PHI-free)", elem_id="ecg-info", scale=1)
        gr.Markdown("## Zero-shot probabilities")
        probs_notice = gr.Markdown(res.notice, elem_id="probs-notice")
        with gr.Row():
            probs = gr.Label(
                label="Zero-shot probability per label", num_top_classes=12, elem_id="probs"
            )
            prob_table = gr.Dataframe(
                headers=list(PROBABILITY_COLUMNS),
                label="All labels",
                elem_id="prob-table",
                interactive=False,
            )
        gr.Markdown("## Similar cases")
        similar, similar_table = _case_views(
            "Most similar indexed cases", "Similar cases", "similar", "similar-table"
        )
        gr.Markdown("## Search cases with free text")
        with gr.Row():
            query = gr.Textbox(label="Query", placeholder=EXAMPLE_QUERY, elem_id="query", scale=4)
            query_kind = gr.Radio(
                list(QUERY_MODALITIES),
                value="Any",
                label="Case type",
                elem_id="query-modality",
                scale=2,
            )
            search_btn = gr.Button("Search", elem_id="search", scale=1)
        query_results, query_table = _case_views(
            "Matching cases", "Matching cases", "query-results", "query-table"
        )
        gr.Markdown("## ProtoECGNet: prototypes behind the ECG labels")
        proto_note = gr.Markdown("", elem_id="proto-note")
        proto_img = gr.Image(
            label="Top prototypes drawn over the input ECG", type="numpy", elem_id="proto-plot"
        )
        proto_pairs = gr.Gallery(
            label="Best-matching window of the input (black) beside each prototype's source "
            "segment (red)",
            columns=2,
            object_fit="contain",
            height="auto",
            elem_id="proto-pairs",
        )
        proto_table = gr.Dataframe(
            headers=list(PROTO_COLUMNS),
            label="Prototype contributions",
            elem_id="proto-table",
            interactive=False,
        )

        outputs = [
            error,
            probs_notice,
            xray_img,
            xray_info,
            ecg_img,
            ecg_info,
            probs,
            prob_table,
            similar,
            similar_table,
            proto_note,
            proto_img,
            proto_pairs,
            proto_table,
        ]

        def on_analyze(xray: str | None, ecg: list[str] | str | None) -> tuple[Any, ...]:
            return analysis_outputs(analyze_upload(res, xray, ecg))

        def on_example(name: str | None) -> tuple[Any, ...]:
            return analysis_outputs(analyze_example(res, name))

        def on_search(text: str | None, kind: str) -> tuple[Any, ...]:
            return search_outputs(search_text(res, text, kind))

        analyze_btn.click(on_analyze, [xray_in, ecg_in], outputs, api_name="analyze")
        example_btn.click(on_example, [example_in], outputs, api_name="analyze_example")
        search_btn.click(
            on_search, [query, query_kind], [error, query_results, query_table], api_name="search"
        )
        query.submit(
            on_search,
            [query, query_kind],
            [error, query_results, query_table],
            api_visibility="private",
        )
        _ = notice
    return app


def theme() -> Any:
    """A theme with system fonts only (the default one fetches web fonts; the demo is offline)."""
    import gradio as gr

    return gr.themes.Default(
        font=("ui-sans-serif", "system-ui", "sans-serif"),
        font_mono=("ui-monospace", "monospace"),
    )


def parse_auth(
    spec: str | None = None, auth_file: str | Path | None = None
) -> list[tuple[str, str]]:
    """``user:password`` pairs from ``--auth`` and/or an auth file (one pair per line, ``#``
    comments).

    Raises:
        ValueError: a line without ``:`` or an empty user / password.
    """
    lines: list[tuple[str, str]] = []
    if spec:
        lines.append(("--auth", spec))
    if auth_file:
        path = Path(auth_file).expanduser()
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ValueError(f"{path.name}: cannot read the auth file ({exc.strerror})") from None
        lines += [(path.name, ln.strip()) for ln in text.splitlines()]
    out: list[tuple[str, str]] = []
    for where, line in lines:
        if not line or line.startswith("#"):
            continue
        user, sep, password = line.partition(":")
        if not sep or not user.strip() or not password:
            raise ValueError(f"{where}: expected user:password")
        out.append((user.strip(), password))
    return out


def tune_malloc(
    arena_max: int = MALLOC_ARENA_MAX, mmap_threshold: int = MALLOC_MMAP_THRESHOLD
) -> bool:
    """Keep a long-running server's memory from creeping (glibc on Linux; elsewhere a no-op).

    Under parallel requests glibc gives threads their own malloc arenas (up to 8 per core) and
    raises its mmap threshold after each large free, so the multi-MB arrays of every request
    (decoded DICOMs, figure buffers, uploads) end up scattered over fragmented arenas: under 8
    clients the demo's RSS kept growing by ~400 MiB in 3 minutes
    (``benchmarks/bench_demo_load.py``). With at most ``arena_max`` arenas (for threads that get
    one from now on) and a fixed ``mmap_threshold`` (bytes; larger blocks are mapped and given
    back to the system when freed) it stays flat. ``MALLOC_ARENA_MAX`` /
    ``MALLOC_MMAP_THRESHOLD_`` set in the environment win.

    Returns:
        True when the settings were applied.
    """
    if not sys.platform.startswith("linux"):
        return False
    if any(k in os.environ for k in ("MALLOC_ARENA_MAX", "MALLOC_MMAP_THRESHOLD_")):
        return False
    import ctypes

    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # not glibc (e.g. musl)
        return False
    m_mmap_threshold, m_arena_max = -3, -8  # <malloc.h>
    ok = bool(mallopt(m_mmap_threshold, int(mmap_threshold)))
    ok = bool(mallopt(m_arena_max, int(arena_max))) and ok
    if ok:
        log.info("malloc: at most %d arenas, mmap threshold %d bytes", arena_max, mmap_threshold)
    return ok


def launch(
    bundle_dir: str | Path | None = None,
    *,
    resources: DemoResources | None = None,
    host: str = "127.0.0.1",
    port: int = 7860,
    auth: Sequence[tuple[str, str]] | None = None,
    max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB,
    top_k: int = 6,
    device: str = "cpu",
    block: bool = True,
    quiet: bool = False,
) -> Any:
    """Build and serve the demo (share links are always off; glibc's malloc tuned first,
    :func:`tune_malloc`).

    Args:
        bundle_dir: model bundle folder.
        resources: already loaded resources (instead of ``bundle_dir``).
        host: interface to bind (``127.0.0.1``: this machine only).
        port: TCP port.
        auth: ``(user, password)`` pairs for Gradio's login page; None: no login.
        max_upload_mb: upload limit per input (MiB). Gradio itself refuses single files over
            twice this size before they reach the app.
        top_k: similar cases shown.
        device: torch device.
        block: serve until interrupted (False: return once the server runs, e.g. in tests).
        quiet: less console output from Gradio.

    Returns:
        The running ``gr.Blocks`` app (call ``.close()`` to stop it when ``block`` is False).
    """
    tune_malloc()
    app = build_app(
        bundle_dir, resources=resources, max_upload_mb=max_upload_mb, top_k=top_k, device=device
    )
    app.queue(max_size=32)
    hard_limit_mb = max(1, math.ceil(2 * max_upload_mb))
    app.launch(
        server_name=host,
        server_port=port,
        share=False,
        auth=list(auth) if auth else None,
        max_file_size=f"{hard_limit_mb}mb",
        prevent_thread_lock=not block,
        quiet=quiet,
        ssr_mode=False,
        theme=theme(),
        css=_CSS,
        footer_links=["api"],
        show_error=False,
        state_session_capacity=SESSION_CAPACITY,
    )
    return app
