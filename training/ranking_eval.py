"""Measure ``item`` against ``hybrid`` ranking (:mod:`index.ranking`) on a dataset.

Every image row of the catalog is a query, searched through a real snapshot:

- against the other kinds of rows when the catalog has any (kfood: photo -> recipe,
  flickr: photo -> caption): ``recall@K`` = the query's own item is among the top K;
- against the other images otherwise (food101: photo -> photos, the query's own
  item left out), where there is no paired item and only class precision counts.

``class_precision@K`` = the share of the top K whose class is the query's class
(queries whose item has a class only). Caveat: the prototypes are built from the
whole catalog, so a query's own image is one of its class's members; with tens
of members or more per class its pull is small.

Usage (the trained models decide which mode becomes the default)::

    python -m training.ranking_eval --model MODEL --format kfood --data-dir DIR \\
        [--class-weight 0.3 --class-weight 0.5] [--max-queries 500] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from index.build import build_snapshot
from index.prototypes import PrototypeOptions
from index.ranking import Ranking
from index.snapshot import Snapshot, load_current
from models.datasets import open_dataset, split_records
from models.encoders.base import Encoder
from models.registry import load_encoder
from models.types import CatalogRecord

DEFAULT_KS = (1, 5, 10)
DEFAULT_WEIGHTS = (0.1, 0.3, 0.5)


def _query_rows(snapshot: Snapshot, max_queries: int | None, seed: int) -> np.ndarray:
    rows = np.flatnonzero(snapshot.catalog.rows_of_kind("image"))
    if max_queries is not None and rows.size > max_queries:
        rows = np.sort(np.random.default_rng(seed).choice(rows, max_queries, replace=False))
    return rows


def _target_kinds(snapshot: Snapshot) -> list[str]:
    others = sorted(kind for kind in snapshot.manifest.kinds if kind != "image")
    return others or ["image"]


def _score_mode(
    snapshot: Snapshot, rows: np.ndarray, ranking: Ranking, kinds: list[str], ks: Sequence[int]
) -> dict[str, float]:
    paired = kinds != ["image"]
    recall = dict.fromkeys(ks, 0.0)
    precision = dict.fromkeys(ks, 0.0)
    with_class = 0
    for row in rows:
        item_id = snapshot.catalog.item_ids_of_rows([row])[0]
        query_class = snapshot.prototypes.class_name_of_row(int(row))
        exclude = () if paired else (item_id,)
        query = np.asarray(snapshot.vectors[row])
        matches = snapshot.search(query, max(ks), kinds, exclude_ids=exclude, ranking=ranking)
        with_class += query_class is not None
        for k in ks:
            top = matches[:k]
            recall[k] += any(m.item_id == item_id for m in top)
            if query_class is not None and top:
                precision[k] += sum(m.class_name == query_class for m in top) / len(top)
    figures: dict[str, float] = {}
    for k in ks:
        if paired:
            figures[f"recall@{k}"] = recall[k] / max(len(rows), 1)
        if with_class:
            figures[f"class_precision@{k}"] = precision[k] / with_class
    return figures


def compare_snapshot_rankings(
    snapshot: Snapshot,
    *,
    weights: Sequence[float] = DEFAULT_WEIGHTS,
    ks: Sequence[int] = DEFAULT_KS,
    max_queries: int | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Recall@K / class precision@K of ``item`` and ``hybrid`` (each weight) on a snapshot."""
    rows = _query_rows(snapshot, max_queries, seed)
    kinds = _target_kinds(snapshot)
    modes = {"item": _score_mode(snapshot, rows, Ranking("item"), kinds, ks)}
    for weight in weights:
        ranking = Ranking("hybrid", weight)
        modes[f"hybrid@{weight:g}"] = _score_mode(snapshot, rows, ranking, kinds, ks)
    return {
        "n_queries": int(rows.size),
        "target_kinds": kinds,
        "n_classes": len(snapshot.prototypes),
        "modes": modes,
    }


def compare_rankings(
    encoder: Encoder,
    records: Iterable[CatalogRecord],
    *,
    prototypes: PrototypeOptions | None = None,
    weights: Sequence[float] = DEFAULT_WEIGHTS,
    ks: Sequence[int] = DEFAULT_KS,
    max_queries: int | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Index ``records`` into a temporary snapshot and compare the ranking modes on it."""
    with tempfile.TemporaryDirectory(prefix="mmsearch-ranking-") as tmp:
        build_snapshot(records, encoder, Path(tmp), prototypes=prototypes)
        snapshot = load_current(Path(tmp), encoder.fingerprint)
        try:
            return compare_snapshot_rankings(
                snapshot, weights=weights, ks=ks, max_queries=max_queries, seed=seed
            )
        finally:
            snapshot.close()


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m training.ranking_eval", description=__doc__)
    parser.add_argument("--model", default="offline", help="encoder spec (see models.registry)")
    parser.add_argument("--format", required=True, help="dataset format: kfood, food101, ...")
    parser.add_argument("--data-dir", required=True, type=Path)
    parser.add_argument("--class-field", default=None, help="metadata field naming classes")
    parser.add_argument("--class-weight", type=float, action="append", dest="weights")
    parser.add_argument("--max-queries", type=int, default=None)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", type=Path, default=None, help="also write the result here")
    parser.add_argument(
        "--split",
        choices=("all", "val"),
        default="all",
        help="val: only the records a bundle trained with --val-fraction/--seed held out",
    )
    parser.add_argument("--val-fraction", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    encoder = load_encoder(args.model, device=args.device)
    records: Iterable[CatalogRecord] = open_dataset(args.data_dir, args.format)
    if args.split == "val":
        records = split_records(records, args.val_fraction, args.seed)[1]
    result = compare_rankings(
        encoder,
        records,
        prototypes=PrototypeOptions(class_field=args.class_field),
        weights=args.weights or DEFAULT_WEIGHTS,
        max_queries=args.max_queries,
    )
    result.update(
        dataset=args.format, model=args.model, data_dir=str(args.data_dir), split=args.split
    )
    text = json.dumps(result, ensure_ascii=False, indent=2)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n", encoding="utf-8")
    sys.stdout.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
