"""medclip's user-facing apps: the Gradio demo (:mod:`apps.demo`) over :mod:`medclip`.

``apps`` imports only ``medclip`` (DESIGN.md §1). Modules: :mod:`apps.demo` (``build_app``,
``launch``), :mod:`apps.handlers` (the demo's logic as plain functions), :mod:`apps.uploads`
(upload checks), :mod:`apps.figures` (pictures as arrays), :mod:`apps.loadtest` (parallel
clients against a running demo). Research use only.
"""
