"""``medclip cache``: preprocess a dataset once into memory-mapped arrays.

``medclip cache build --dataset synthetic --root DIR [--config PRESET]`` decodes every ECG and
X-ray with the preset's preprocessing (``data.ecg_fs_hz``, ``data.ecg_length``,
``data.image_size``, ``data.image_mean``, ``data.image_std``, overridden by the towers' input
specs exactly as in training) and writes ``OUT/cache-<hash>/``; training uses it when
``data.cache_dir=OUT`` and the settings match.
``medclip cache info`` says whether a matching cache exists.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, cast

DATASETS: tuple[str, ...] = ("synthetic", "mimic", "ptbxl", "chexpert")


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``cache`` sub-command (``build`` and ``info``)."""
    p = sub.add_parser(
        "cache",
        help="preprocess a dataset once into a memory-mapped cache",
        description="Decode and preprocess every ECG and X-ray once into memory-mapped arrays "
        "that training reads instead of WFDB/DICOM files. The cache is keyed by the "
        "preprocessing settings, so a cache built with other settings is never used.",
    )
    actions = p.add_subparsers(dest="cache_action", metavar="ACTION", required=True)
    for name, text in (
        ("build", "build (or refresh) the cache"),
        ("info", "show whether a cache for these settings exists"),
    ):
        a = actions.add_parser(name, help=text, description=text)
        a.add_argument("--dataset", choices=DATASETS, default=None, help="default: data.dataset")
        a.add_argument(
            "--root", type=Path, default=None, help="dataset folder (default: data.root)"
        )
        a.add_argument("--config", default="small", help="preset (tiny/small/base) or YAML path")
        a.add_argument(
            "--out",
            type=Path,
            default=None,
            help="cache folder (default: data.cache_dir, else ROOT/.medclip-cache)",
        )
        a.add_argument(
            "--set",
            dest="overrides",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="config override, e.g. data.image_size=128 (repeatable)",
        )
        if name == "build":
            a.add_argument("--workers", type=int, default=None, help="default: data.num_workers")
            a.add_argument("--ecg-dtype", choices=("float16", "float32"), default="float16")
            a.add_argument("--xray-dtype", choices=("uint8", "float16"), default="uint8")
            a.add_argument("--overwrite", action="store_true", help="rebuild even if up to date")
            a.add_argument("--no-progress", action="store_true", help="hide the progress bar")
        a.set_defaults(func=run)


class _TowerSpecs:
    """Stands in for a model in :func:`medclip.bundle.preprocessing_configs`: only the X-ray and
    ECG towers are built, to read their input specs."""

    def __init__(self, cfg: Any) -> None:
        from encoders.registry import create_encoder

        self._specs = {
            key: create_encoder(tower.name, **tower.kwargs).input_spec
            for key, tower in (("xray", cfg.model.xray), ("ecg", cfg.model.ecg))
        }

    def input_specs(self) -> dict[str, Any]:
        return dict(self._specs)


def _settings(args: argparse.Namespace) -> tuple[Any, str, Path, Path, Any, Any]:
    """Config, dataset, root, cache folder and the preprocessing that training will use."""
    from medclip.bundle import preprocessing_configs
    from medclip.config import load_config
    from medclip.errors import MedclipError

    cfg = load_config(args.config, args.overrides)
    d = cfg.data
    dataset = args.dataset or d.dataset
    root_text = args.root or d.root
    if not root_text:
        raise MedclipError("no dataset folder: pass --root DIR (or set data.root)")
    root = Path(root_text).expanduser()
    out = Path(args.out or d.cache_dir or root / ".medclip-cache").expanduser()
    # The same rule as training: the towers' input specs win, data.* fills the gaps, so the
    # cache key matches what `medclip fit` will look for.
    ecg_cfg, cxr_cfg = preprocessing_configs(cast(Any, _TowerSpecs(cfg)), d)
    return cfg, dataset, root, out, ecg_cfg, cxr_cfg


def _load_kwargs(cfg: Any, dataset: str) -> dict[str, Any]:
    d = cfg.data
    if dataset in ("synthetic", "mimic"):
        kw: dict[str, Any] = {
            "pair_window_days": d.pair_window_days,
            "pairing": d.pairing,
            "uncertainty_policy": d.uncertainty_policy,
        }
        if d.ecg_root:
            kw["ecg_root"] = d.ecg_root
        return kw
    if dataset == "chexpert":
        return {"uncertainty_policy": d.uncertainty_policy}
    return {}


def run(args: argparse.Namespace) -> int:
    """Build or describe the cache; returns the exit code."""
    from datamodules.cache import build_cache, cache_path, open_cache
    from medclip.errors import MedclipError

    cfg, dataset, root, out, ecg_cfg, cxr_cfg = _settings(args)
    if args.cache_action == "info":
        cache = open_cache(out, ecg_cfg, cxr_cfg)
        folder = cache_path(out, ecg_cfg, cxr_cfg)
        if cache is None:
            print(f"no usable cache for these settings at {folder}")
            return 1
        meta = cache.meta
        summary = {
            "path": str(folder),
            "studies": len(cache),
            "present (xray, ecg, text)": [int(v) for v in cache.present.sum(axis=0)],
            "unreadable files": meta.get("n_bad", 0),
            "ecg": f"{meta['ecg_shape']} {meta['ecg_dtype']}",
            "xray": f"{meta['xray_shape']} {meta['xray_dtype']}",
        }
        print(json.dumps(summary, indent=2))
        return 0

    from datamodules.sources import load_studies

    if dataset == "synthetic" and not (root / "synthetic.json").is_file():
        from datamodules.synthetic import generate

        print(f"generating a synthetic dataset ({cfg.data.synth_n} studies) in {root}")
        generate(root, n=cfg.data.synth_n, seed=cfg.data.synth_seed)
    elif not root.exists():
        raise MedclipError(f"{root}: dataset folder not found")
    studies = load_studies(dataset, root, **_load_kwargs(cfg, dataset))
    if not studies:
        raise MedclipError(f"{root}: no studies found for dataset {dataset!r}")
    workers = cfg.data.num_workers if args.workers is None else args.workers
    folder = build_cache(
        studies,
        ecg_cfg,
        cxr_cfg,
        out,
        ecg_dtype=args.ecg_dtype,
        xray_dtype=args.xray_dtype,
        num_workers=workers,
        overwrite=args.overwrite,
        progress=not args.no_progress,
    )
    meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
    print(f"cache: {folder} ({meta['n']} studies, {meta['n_bad']} unreadable files skipped)")
    print(f"training uses it when data.cache_dir={out} and the preprocessing settings match")
    return 0
