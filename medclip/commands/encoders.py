"""``medclip encoders``: list the registered encoder towers and their config fields."""

from __future__ import annotations

import argparse
import dataclasses


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``encoders`` sub-command."""
    p = sub.add_parser("encoders", help="list registered encoder towers and their config keys")
    p.add_argument("pattern", nargs="?", default="*", help="shell-style filter, e.g. 'ecg_*'")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Print each encoder name with its config fields and defaults."""
    from encoders.registry import get_config_class, list_encoders

    for name in list_encoders(args.pattern):
        cls = get_config_class(name)
        fields = ", ".join(f.name for f in dataclasses.fields(cls))
        print(f"{name}: {cls.__name__}({fields})")
    return 0
