"""``mmsearch train`` and ``mmsearch eval``: thin wrappers over ``models``."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from models.bundle import check_image_size, check_image_tta
from models.datasets import open_dataset, split_records
from models.encoders.base import Encoder
from models.registry import load_encoder
from models.tower_tuning import SPLIT_STAGES
from models.train import EpochCallback, TrainConfig, TrainResult
from models.train_bundle import TRAIN_DATASETS, BundleRequest, Source, train_bundle
from service.commands import CommandFailedError, CommandInputError

log = logging.getLogger(__name__)

EVAL_DATASETS = ("kfood", "flickr", "food101")


# Datasets whose records carry a class label the tower's top can be tuned on.
LABELLED_DATASETS = ("kfood", "food101")


def pair_sources(datasets: list[str], data_dirs: list[Path]) -> tuple[Source, ...]:
    """``--dataset`` / ``--data-dir`` pairs in order (``synthetic`` needs no dir)."""
    sources: list[Source] = []
    dirs = list(data_dirs)
    for name in datasets:
        if name not in TRAIN_DATASETS:
            raise CommandInputError(
                f"unknown --dataset {name!r}; expected one of {', '.join(TRAIN_DATASETS)}"
            )
        if name == "synthetic":
            sources.append(Source(name, None))
            continue
        if not dirs:
            raise CommandInputError(f"--dataset {name} needs its own --data-dir")
        data_dir = dirs.pop(0)
        if not data_dir.exists():
            raise CommandInputError(f"--data-dir {data_dir} does not exist")
        sources.append(Source(name, data_dir))
    if dirs:
        raise CommandInputError("more --data-dir than --dataset options")
    if not sources:
        raise CommandInputError("name at least one --dataset")
    return tuple(sources)


def run_training(
    request: BundleRequest,
    config: TrainConfig,
    progress: Callable[[int, int | None], None] | None,
    on_epoch: EpochCallback | None,
) -> TrainResult:
    if not 0.0 <= request.val_fraction < 1.0:
        raise CommandInputError("--val-fraction must be in [0, 1)")
    if config.epochs < 1 or config.batch_size < 2:
        raise CommandInputError("--epochs must be at least 1 and --batch-size at least 2")
    if config.infonce_weight < 0 or config.triplet_weight < 0 or config.semantic_weight < 0:
        raise CommandInputError("loss weights cannot be negative")
    if config.infonce_weight == 0 and config.triplet_weight == 0:
        raise CommandInputError("--infonce-weight and --triplet-weight cannot both be 0")
    for flag, check, value in (
        ("--image-tta", check_image_tta, request.image_tta),
        ("--image-size", check_image_size, request.image_size),
    ):
        try:
            check(value)  # the checks bundle.json gets, so the two cannot drift apart
        except ValueError as exc:
            raise CommandInputError(f"{flag}: {exc}") from exc
    if request.image_size is not None and request.base != "offline":
        raise CommandInputError("--image-size works with --base offline only")
    if request.tune_tower is not None and request.base != "offline":
        raise CommandInputError("--tune-tower-epochs works with --base offline only")
    if request.tune_tower is not None and request.tune_tower.lr <= 0:
        raise CommandInputError("--tune-tower-lr must be positive")
    if request.tune_tower is not None and request.tune_tower.mixup < 0:
        raise CommandInputError("--tune-tower-mixup cannot be negative")
    if request.tune_tower is not None and request.tune_tower.split_stage not in SPLIT_STAGES:
        raise CommandInputError(f"--tune-tower-from-stage must be one of {SPLIT_STAGES}")
    if request.tune_tower is not None and not any(
        s.dataset in LABELLED_DATASETS for s in request.sources
    ):
        raise CommandInputError(
            "--tune-tower-epochs needs a labelled dataset (kfood or food101) among --dataset"
        )
    return train_bundle(request, config, progress=progress, on_epoch=on_epoch)


def run_ensemble(members: list[Path], out: Path, device: str) -> Path:
    """``mmsearch ensemble``: copy the member bundles into one ensemble directory."""
    from models.bundle import BundleError
    from models.ensemble import save_ensemble

    for member in members:
        if not member.is_dir():
            raise CommandInputError(f"--member {member} is not a bundle directory")
    try:
        return save_ensemble(out, members, device=device)
    except BundleError as exc:
        raise CommandInputError(str(exc)) from exc
    except OSError as exc:
        raise CommandFailedError(f"cannot copy the members into {out}: {exc}") from exc


def encoder_from_model_option(model: str, device: str) -> Encoder:
    """``offline``, any encoder spec, ``bundle:PATH`` or a bare bundle directory."""
    spec = model
    if not model.startswith(("offline", "openclip:", "bundle:")) and Path(model).is_dir():
        spec = f"bundle:{model}"
    try:
        return load_encoder(spec, device=device)
    except ValueError as exc:
        raise CommandInputError(f"cannot load model {model!r}: {exc}") from exc


def run_evaluation(
    model: str,
    dataset: str,
    data_dir: Path,
    *,
    support_dir: Path | None,
    device: str,
    split: str,
    val_fraction: float,
    seed: int,
    text_weight: float = 0.0,
    progress: Callable[[int, int], None] | None,
) -> dict[str, Any]:
    from models.evaluate import evaluate_records

    if dataset not in EVAL_DATASETS:
        raise CommandInputError(
            f"unknown --dataset {dataset!r}; expected one of {', '.join(EVAL_DATASETS)}"
        )
    for name, path in (("--data-dir", data_dir), ("--support-dir", support_dir)):
        if path is not None and not path.exists():
            raise CommandInputError(f"{name} {path} does not exist")
    if split not in ("all", "val"):
        raise CommandInputError("--split must be 'all' or 'val'")
    if not 0.0 <= text_weight <= 1.0:
        raise CommandInputError(f"--text-weight must be in [0, 1], got {text_weight}")
    if text_weight > 0 and dataset != "food101":
        raise CommandInputError("--text-weight applies to --dataset food101 only")
    encoder = encoder_from_model_option(model, device)
    records = list(open_dataset(data_dir, dataset))
    support = list(open_dataset(support_dir, dataset)) if support_dir else None
    if split == "val":
        # The records a bundle trained with the same fraction and seed never saw;
        # the rest is the support set of the prototype evaluation.
        rest, records = split_records(records, val_fraction, seed)
        support = support if support is not None else rest
    result = evaluate_records(
        encoder, dataset, records, support=support, text_weight=text_weight, progress=progress
    )
    result["model"] = encoder.fingerprint
    if split == "val":
        result["split"] = {"part": "val", "val_fraction": val_fraction, "seed": seed}
    return result


def run_calibration(
    model: Path,
    datasets: list[str],
    data_dirs: list[Path],
    *,
    val_fraction: float,
    seed: int,
    write: bool,
    device: str,
) -> dict[str, Any]:
    """``mmsearch calibrate``: fit and report on the bundle's validation split."""
    from models.bundle import BundleEncoder, write_calibration
    from training.trust import TrustSource, run_trust

    if len(datasets) != len(data_dirs):
        raise CommandInputError("give one --data-dir for each --dataset")
    unknown = sorted(set(datasets) - set(EVAL_DATASETS))
    if unknown:
        raise CommandInputError(f"unknown --dataset {unknown}; expected {', '.join(EVAL_DATASETS)}")
    encoder = encoder_from_model_option(str(model), device)
    if not isinstance(encoder, BundleEncoder):
        raise CommandInputError(f"--model {model} is not a trained bundle directory")
    sources = []
    for dataset, data_dir in zip(datasets, data_dirs, strict=True):
        if not data_dir.exists():
            raise CommandInputError(f"--data-dir {data_dir} does not exist")
        train, val = split_records(open_dataset(data_dir, dataset), val_fraction, seed)
        sources.append(TrustSource(dataset, val, train))
    calibration, report = run_trust(encoder, sources, progress=log.info)
    report["split"] = {"val_fraction": val_fraction, "seed": seed}
    if write:
        summary = {k: v for k, v in report.items() if k != "hubness_correction"}
        write_calibration(model, calibration, summary)
    return report


def run_export(model: Path, out: Path, *, half: bool) -> str:
    """``mmsearch export``: a float16 copy of a bundle; returns its fingerprint."""
    from models.bundle import BundleError, export_bundle, load_bundle

    try:
        export_bundle(model, out, half=half)
        return load_bundle(out).fingerprint
    except BundleError as exc:
        raise CommandInputError(str(exc)) from exc
