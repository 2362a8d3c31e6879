"""``mmsearch train``, ``eval``, ``ensemble`` and ``bench``: thin wrappers over ``training``.

The ``training`` package is imported inside the functions below, and only there:
it is the one place the service reaches into training, evaluation and benchmarks,
and only when one of these commands runs, so ``mmsearch serve`` never imports it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from models.datasets import open_dataset, split_records
from models.encoders.base import Encoder
from models.registry import load_encoder
from models.rerank import RERANKERS, Reranker, rerankers_of
from models.set_encoding import SetEncoder
from models.types import ProgressCallback
from service.commands import CommandFailedError, CommandInputError
from service.schemas import DEFAULT_RERANK_TOP, MAX_RERANK_TOP

if TYPE_CHECKING:
    from models.bundle import BundleEncoder
    from training.errors import ConfigError
    from training.train import EpochCallback, TrainConfig, TrainResult
    from training.train_bundle import BundleRequest, Source
    from training.train_sgraf import RerankData

log = logging.getLogger(__name__)

EVAL_DATASETS = ("kfood", "flickr", "food101")
# val-report: the half of flickr's validation split that train-set and
# train-rerank --flickr-from val-half never fit nor tune on.
EVAL_SPLITS = ("all", "val", "val-report")

# How the CLI names the fields of the training configurations, where it does not
# simply spell them as flags (batch_size -> --batch-size).
REQUEST_FLAGS = {"sources": "--dataset", "out_dir": "--out", "tune_tower": "--tune-tower-epochs"}
TUNE_FLAGS = {"split_stage": "--tune-tower-from-stage"}


def _flag(field: str, renamed: dict[str, str], prefix: str = "--") -> str:
    return renamed.get(field, prefix + field.replace("_", "-"))


def _input_error(
    exc: ConfigError, renamed: dict[str, str], prefix: str = "--"
) -> CommandInputError:
    """The configuration's own message, with its fields named as the CLI's flags."""
    return CommandInputError(exc.render(lambda field: _flag(field, renamed, prefix)))


def pair_sources(datasets: list[str], data_dirs: list[Path]) -> tuple[Source, ...]:
    """``--dataset`` / ``--data-dir`` pairs in order (``synthetic`` needs no dir)."""
    from training.train_bundle import TRAIN_DATASETS, Source  # see the module docstring

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


def training_configs(
    sources: tuple[Source, ...],
    tune_tower: dict[str, Any] | None,
    request: dict[str, Any],
    config: dict[str, Any],
) -> tuple[BundleRequest, TrainConfig]:
    """The bundle request and training config the options make; invalid ones are bad input.

    ``tune_tower``, ``request`` and ``config`` are the fields of
    :class:`~training.tower_tuning.TuneConfig` (None: no tuning),
    :class:`~training.train_bundle.BundleRequest` and :class:`~training.train.TrainConfig`.
    """
    from training.errors import ConfigError  # see the module docstring
    from training.tower_tuning import TuneConfig
    from training.train import TrainConfig
    from training.train_bundle import BundleRequest

    try:
        tune = TuneConfig(**tune_tower) if tune_tower is not None else None
    except ConfigError as exc:
        raise _input_error(exc, TUNE_FLAGS, prefix="--tune-tower-") from exc
    try:
        bundle_request = BundleRequest(sources=sources, tune_tower=tune, **request)
    except ConfigError as exc:
        raise _input_error(exc, REQUEST_FLAGS) from exc
    try:
        return bundle_request, TrainConfig(**config)
    except ConfigError as exc:
        raise _input_error(exc, {}) from exc


def run_training(
    request: BundleRequest,
    config: TrainConfig,
    progress: ProgressCallback | None,
    on_epoch: EpochCallback | None,
) -> TrainResult:
    from training.train_bundle import train_bundle  # see the module docstring

    return train_bundle(request, config, progress=progress, on_epoch=on_epoch)


def run_synthetic_bench(
    seeds: int,
    *,
    ks: Sequence[int],
    metrics: Sequence[str],
    sample_budget: int | None,
    additive_share: float | None,
    progress: bool,
) -> tuple[dict[str, Any], str]:
    """``mmsearch bench synthetic``: the figures and their table."""
    from training.bench_synthetic import (  # see the module docstring
        format_synthetic_table,
        run_synthetic_benchmark,
    )

    try:
        result = run_synthetic_benchmark(
            seeds,
            ks=tuple(ks),
            metrics=tuple(metrics),
            sample_budget=sample_budget,
            additive_share=additive_share,
            progress=progress,
        )
    except ValueError as exc:
        raise CommandInputError(f"bench synthetic: {exc}") from exc
    return result, format_synthetic_table(result)


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
    rerank: str | None = None,
    rerank_top: int = DEFAULT_RERANK_TOP,
    similarity: str = "single",
    cache_dir: Path | None = None,
    progress: ProgressCallback | None,
) -> dict[str, Any]:
    from training.evaluate import evaluate_records  # see the module docstring
    from training.rerank_eval import evaluate_with_rerank
    from training.set_eval import evaluate_sets
    from training.train_sgraf import val_halves

    if dataset not in EVAL_DATASETS:
        raise CommandInputError(
            f"unknown --dataset {dataset!r}; expected one of {', '.join(EVAL_DATASETS)}"
        )
    for name, path in (("--data-dir", data_dir), ("--support-dir", support_dir)):
        if path is not None and not path.exists():
            raise CommandInputError(f"{name} {path} does not exist")
    if split not in EVAL_SPLITS:
        raise CommandInputError(f"--split must be one of {', '.join(EVAL_SPLITS)}")
    if split == "val-report" and dataset != "flickr":
        raise CommandInputError("--split val-report applies to --dataset flickr only")
    if not 0.0 <= text_weight <= 1.0:
        raise CommandInputError(f"--text-weight must be in [0, 1], got {text_weight}")
    if text_weight > 0 and dataset != "food101":
        raise CommandInputError("--text-weight applies to --dataset food101 only")
    _check_variants(dataset, rerank, rerank_top, similarity)
    encoder = encoder_from_model_option(model, device)
    reranker = _reranker_of(encoder, rerank, model)
    sets = _sets_of(encoder, similarity, model)
    records = list(open_dataset(data_dir, dataset))
    support = list(open_dataset(support_dir, dataset)) if support_dir else None
    if split == "val":
        # The records a bundle trained with the same fraction and seed never saw;
        # the rest is the support set of the prototype evaluation.
        rest, records = split_records(records, val_fraction, seed)
        support = support if support is not None else rest
    elif split == "val-report":  # what train-set / train-rerank --flickr-from val-half report on
        records = val_halves(records, val_fraction, seed)[1]
    if sets is not None:
        result = evaluate_sets(
            encoder,
            sets,
            dataset,
            records,
            reranker=reranker,
            top=rerank_top,
            cache_dir=cache_dir,
            progress=progress,
        )
    elif reranker is not None:
        result = evaluate_with_rerank(
            encoder, reranker, dataset, records, top=rerank_top, progress=progress
        )
    else:
        result = evaluate_records(
            encoder, dataset, records, support=support, text_weight=text_weight, progress=progress
        )
    result["model"] = encoder.fingerprint
    if split != "all":
        result["split"] = {"part": split, "val_fraction": val_fraction, "seed": seed}
    return result


def _check_variants(dataset: str, rerank: str | None, top: int, similarity: str) -> None:
    if similarity not in ("single", "set"):
        raise CommandInputError(f"--similarity must be 'single' or 'set', got {similarity!r}")
    if similarity == "set" and dataset not in ("kfood", "flickr"):
        raise CommandInputError("--similarity set applies to --dataset kfood and flickr only")
    if rerank is None:
        return
    if rerank not in RERANKERS:
        raise CommandInputError(f"unknown --rerank {rerank!r}; expected {', '.join(RERANKERS)}")
    if dataset not in ("kfood", "flickr"):
        raise CommandInputError("--rerank applies to --dataset kfood and flickr only")
    if not 1 <= top <= MAX_RERANK_TOP:
        raise CommandInputError(f"--rerank-top must be in [1, {MAX_RERANK_TOP}], got {top}")


def _sets_of(encoder: Encoder, similarity: str, model: str) -> SetEncoder | None:
    if similarity != "set":
        return None
    sets = getattr(encoder, "sets", None)
    if sets is None or not (sets.has("image") and sets.has("text")):
        raise CommandInputError(
            f"--model {model} carries no trained DivE set heads (image and text); "
            "mmsearch train-set writes them"
        )
    return sets


def _reranker_of(encoder: Encoder, rerank: str | None, model: str) -> Reranker | None:
    if rerank is None:
        return None
    found = rerankers_of(encoder).get(rerank)
    if found is None:
        raise CommandInputError(f"--model {model} carries no trained {rerank!r} re-ranker")
    return found


def run_rerank_training(
    model: Path,
    flickr_dir: Path,
    kfood_dir: Path | None,
    *,
    out: Path | None,
    config: dict[str, Any],
    val_fraction: float,
    split_seed: int,
    cache_dir: Path | None,
    device: str,
    flickr_from: str = "train",
) -> dict[str, Any]:
    """``mmsearch train-rerank``: SGRAF on the bundle's training split (its validation split
    left out, as the bundle's own training did), written into ``out`` as float16."""
    from models.bundle import write_sgraf
    from training.errors import ConfigError
    from training.train_sgraf import RerankTrainConfig, train_reranker

    try:
        train_config = RerankTrainConfig(**config)
    except ConfigError as exc:
        raise _input_error(exc, {"budget_seconds": "--budget-minutes"}) from exc
    encoder = _bundle_for_training(model, flickr_dir, kfood_dir, out, device)
    data = _paired_data(flickr_dir, kfood_dir, val_fraction, split_seed, cache_dir, flickr_from)
    try:
        result, report = train_reranker(encoder, data, train_config)
    except ValueError as exc:  # too few records to train or tune on
        raise CommandInputError(str(exc)) from exc
    report["model"] = encoder.fingerprint
    report["split"] = {"val_fraction": val_fraction, "seed": split_seed}
    if out is not None:
        _bundle_copy(encoder.path, out)
        write_sgraf(out, result.model, half=True)
        report["out"] = str(out)
    return report


def _bundle_copy(source: Path, out: Path) -> None:
    """``out`` as a copy of the bundle (nothing to do when it is the bundle itself)."""
    import shutil

    if out.exists():  # the bundle itself: checked before training
        return
    try:
        shutil.copytree(source, out)
    except OSError as exc:
        raise CommandFailedError(f"cannot copy the bundle into {out}: {exc}") from exc


def run_set_training(
    model: Path,
    flickr_dir: Path,
    kfood_dir: Path | None,
    *,
    out: Path | None,
    config: dict[str, Any],
    val_fraction: float,
    split_seed: int,
    cache_dir: Path | None,
    device: str,
    flickr_from: str = "val-half",
    on_epoch: Any = None,
) -> dict[str, Any]:
    """``mmsearch train-set``: DivE set heads for a frozen bundle, chosen and reported as
    :mod:`training.train_set` says, written into ``out`` as float16."""
    from models.bundle import write_set_heads
    from training.errors import ConfigError
    from training.train_set import SetTrainConfig, train_set_heads

    try:
        train_config = SetTrainConfig(**config)
    except ConfigError as exc:
        raise _input_error(
            exc,
            {
                "budget_seconds": "--budget-minutes",
                "slots": "--slots",
                "diversity_weights": "--diversity-weight",
            },
        ) from exc
    encoder = _bundle_for_training(model, flickr_dir, kfood_dir, out, device)
    data = _paired_data(flickr_dir, kfood_dir, val_fraction, split_seed, cache_dir, flickr_from)
    try:
        heads, report = train_set_heads(encoder, data, train_config, on_epoch)
    except ValueError as exc:  # too few records to fit, tune or report on
        raise CommandInputError(str(exc)) from exc
    report["model"] = encoder.fingerprint
    report["split"] = {"val_fraction": val_fraction, "seed": split_seed}
    if out is not None:
        _bundle_copy(encoder.path, out)
        write_set_heads(out, heads, half=True)
        report["out"] = str(out)
    return report


def _bundle_for_training(
    model: Path, flickr_dir: Path, kfood_dir: Path | None, out: Path | None, device: str
) -> BundleEncoder:
    """The frozen bundle to train beside; bad paths are bad input, before any work."""
    from models.bundle import BundleEncoder

    for name, path in (("--flickr-dir", flickr_dir), ("--kfood-dir", kfood_dir)):
        if path is not None and not path.exists():
            raise CommandInputError(f"{name} {path} does not exist")
    encoder = encoder_from_model_option(str(model), device)
    if not isinstance(encoder, BundleEncoder):
        raise CommandInputError(f"--model {model} is not a trained bundle directory")
    if out is not None and out.exists() and out.resolve() != encoder.path.resolve():
        raise CommandInputError(f"--out {out} exists and is not the --model bundle")
    return encoder


def _paired_data(
    flickr_dir: Path,
    kfood_dir: Path | None,
    val_fraction: float,
    split_seed: int,
    cache_dir: Path | None,
    flickr_from: str,
) -> RerankData:
    """The flickr (and kfood) records that train-rerank and train-set fit, tune and report
    on; a bad split choice is bad input."""
    from training.errors import ConfigError
    from training.train_sgraf import RerankData

    try:
        return RerankData(
            flickr=list(open_dataset(flickr_dir, "flickr")),
            kfood=list(open_dataset(kfood_dir, "kfood")) if kfood_dir is not None else (),
            val_fraction=val_fraction,
            split_seed=split_seed,
            cache_dir=cache_dir,
            flickr_from=flickr_from,
        )
    except ConfigError as exc:
        raise _input_error(exc, {}) from exc


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
