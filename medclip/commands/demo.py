"""``medclip demo``: the Gradio app over a model bundle (the main job on a fresh machine).

With no ``--bundle`` it builds the quick-start bundle first (synthetic data in the real formats,
a few minutes of CPU training with progress bars, see :mod:`medclip.quickstart`), reuses it on
later runs, then serves on ``http://127.0.0.1:7860``. ``--bundle PATH`` serves a trained bundle.
Share links are never created. Research use only.

The app lives in the ``apps`` package, which sits above ``medclip`` (DESIGN.md §1): it is looked
up by name at run time, so ``medclip`` itself never imports it.
"""

from __future__ import annotations

import argparse

#: Module providing ``launch(bundle_dir, ...)`` and ``parse_auth(spec, file)``.
APP_MODULE = "apps.demo"
_LOOPBACK = ("127.0.0.1", "localhost", "::1")


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``demo`` sub-command."""
    p = sub.add_parser(
        "demo",
        help="serve the Gradio demo (builds a synthetic quick-start bundle when none is given)",
        description="Zero-shot diagnosis, similar cases and ProtoECGNet explanations in the "
        "browser. Without --bundle, a quick-start bundle is trained on synthetic data on the "
        "first run (a few minutes on a CPU) and reused afterwards. Research use only.",
    )
    p.add_argument("--bundle", default=None, help="model bundle folder to serve")
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=7860, help="TCP port (default 7860)")
    p.add_argument("--auth", default=None, metavar="USER:PASSWORD", help="require a login")
    p.add_argument(
        "--auth-file",
        default=None,
        metavar="FILE",
        help="file with one USER:PASSWORD per line (keeps passwords out of the shell history)",
    )
    p.add_argument(
        "--max-upload-mb",
        type=float,
        default=50.0,
        help="largest upload per input in MB (default 50)",
    )
    p.add_argument("--top-k", type=int, default=6, help="similar cases shown (default 6)")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument(
        "--quickstart-preset",
        default="small",
        choices=("tiny", "small", "base"),
        help="preset of the quick-start bundle (default small; tiny: seconds, for tests)",
    )
    p.add_argument(
        "--quickstart-home",
        default=None,
        metavar="DIR",
        help="where the quick-start lives (default $MEDCLIP_HOME or ~/.cache/medclip/quickstart)",
    )
    p.add_argument(
        "--build-only", action="store_true", help="build the quick-start bundle, then exit"
    )
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Build or find the bundle, then serve it until interrupted."""
    import importlib
    from pathlib import Path

    from medclip.errors import MedclipError

    if not 0 < args.port < 65536:
        raise MedclipError(f"--port {args.port}: must be in 1..65535")
    if not args.max_upload_mb > 0:
        raise MedclipError("--max-upload-mb: must be positive")
    if args.top_k < 1:
        raise MedclipError("--top-k: must be >= 1")
    app = importlib.import_module(APP_MODULE)
    auth = app.parse_auth(args.auth, args.auth_file)
    if args.host not in _LOOPBACK and not auth:
        print(
            f"warning: serving on {args.host} without --auth: anyone who can reach this "
            "machine can use the demo"
        )
    if args.bundle:
        bundle = Path(args.bundle).expanduser()
        if not (bundle / "config.json").is_file():
            raise MedclipError(f"{bundle}: not a model bundle (no config.json)")
    else:
        from medclip.quickstart import QuickstartOptions, build_quickstart, quickstart_home

        home = quickstart_home(args.quickstart_home)
        print(
            f"No --bundle given: using the quick-start bundle ({args.quickstart_preset} preset) "
            f"in {home}. It is trained on SYNTHETIC data on the first run (a few minutes on a "
            "CPU) and reused afterwards."
        )
        result = build_quickstart(
            home,
            QuickstartOptions(preset=args.quickstart_preset),
            progress=not args.no_progress,
        )
        if result.built:
            print(f"quick-start built in {result.seconds:.0f} s: {', '.join(result.built)}")
        else:
            print("quick-start reused (nothing to build)")
        bundle = result.bundle
    print(f"bundle: {bundle}")
    if args.build_only:
        return 0
    print(f"serving on http://{args.host}:{args.port} (Ctrl+C to stop). Research use only.")
    app.launch(
        bundle,
        host=args.host,
        port=args.port,
        auth=auth or None,
        max_upload_mb=args.max_upload_mb,
        top_k=args.top_k,
        device=args.device,
        quiet=True,
    )
    return 0
