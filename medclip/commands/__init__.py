"""Subcommands of the ``medclip`` CLI.

Each module defines ``register(subparsers)``, which adds one ``argparse`` sub-parser and sets
``func=run`` where ``run(args: argparse.Namespace) -> int`` returns the exit code. Heavy imports
(torch, lightning, gradio) happen inside ``run`` so ``medclip --help`` stays fast.
"""

#: Modules providing subcommands, in ``--help`` order.
COMMAND_MODULES: tuple[str, ...] = (
    "doctor",
    "synth",
    "inspect",
    "cache",
    "fit",
    "export",
    "zeroshot",
    "index",
    "retrieve",
    "evaluate",
    "finetune",
    "proto",
    "demo",
    "encoders",
)
