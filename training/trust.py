"""Can a user trust the scores? Calibration, absent-item behaviour, separation, hubness.

Every figure here comes from validation records a bundle never trained on, grouped
into *directions* (query modality -> row kind) as the service sees them:

- kfood: image->recipe, recipe->image, text->recipe and text->image (the title as a
  typed query);
- flickr: image->text and text->image (captions);
- food101: text->image (the class name as a typed query) and image->image (a photo
  finds photos of its dish).

For each direction the queries are cut in two halves by position: a logistic curve
``P(true | score)`` is fitted on the top-10 candidates of the *fit* half (Platt
scaling) and everything reported is measured on the *report* half, so the
calibration error is not measured on the pairs it was fitted to.

Reported per direction: expected calibration error (ECE, 10 equal-width bins over
the top-10 candidates), the share of queries whose true items were removed from
the catalog that still get a rank-1 match with confidence > 0.5 (a dish the catalog
lacks), the median score of rank-1 true matches against rank-1 false ones, and
hubness: how many distinct candidates fill the top 3 over all queries and the
largest share of queries any single candidate appears in.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from models.calibration import ANY, Calibration, Curve, direction
from models.encoders.base import Encoder
from models.prototype_math import class_text
from models.types import CatalogRecord
from training.evaluate import encode_images, readable_images

TOP = 10  # candidates per query that calibration sees: what a user is shown
BINS = 10
HUB_TOP = 3


@dataclass(frozen=True)
class Direction:
    """One retrieval direction on validation data: every query against every candidate."""

    query_kind: str
    row_kind: str
    dataset: str
    similarity: np.ndarray  # (queries, candidates)
    positive: np.ndarray  # (queries, candidates) bool; every query has a positive
    candidates: np.ndarray  # (candidates, dim) their vectors, for hubness corrections

    @property
    def name(self) -> str:
        return direction(self.query_kind, self.row_kind)


# --------------------------------------------------------------------------- embedding


Progress = Callable[[str], None]


def kfood_directions(encoder: Encoder, records: Sequence[CatalogRecord]) -> list[Direction]:
    kept, images = readable_images([r for r in records if r.recipe is not None])
    photos = encode_images(encoder, images, None)
    recipes = encoder.encode_recipes([r.recipe for r in kept if r.recipe is not None])
    titles = encoder.encode_texts([r.recipe.title for r in kept if r.recipe is not None])
    same = np.eye(len(kept), dtype=bool)
    return [
        Direction("image", "recipe", "kfood", photos @ recipes.T, same, recipes),
        Direction("recipe", "image", "kfood", recipes @ photos.T, same, photos),
        Direction("text", "recipe", "kfood", titles @ recipes.T, same, recipes),
        Direction("text", "image", "kfood", titles @ photos.T, same, photos),
    ]


def flickr_directions(encoder: Encoder, records: Sequence[CatalogRecord]) -> list[Direction]:
    kept, images = readable_images([r for r in records if r.texts])
    photos = encode_images(encoder, images, None)
    captions = [t for r in kept for t in r.texts]
    owner = np.asarray([i for i, r in enumerate(kept) for _ in r.texts])
    texts = encoder.encode_texts(captions)
    positive = owner[:, None] == np.arange(len(kept))[None, :]  # (texts, images)
    return [
        Direction("image", "text", "flickr", photos @ texts.T, positive.T, texts),
        Direction("text", "image", "flickr", texts @ photos.T, positive, photos),
    ]


def food101_directions(encoder: Encoder, records: Sequence[CatalogRecord]) -> list[Direction]:
    kept, images = readable_images([r for r in records if r.label is not None])
    photos = encode_images(encoder, images, None)
    labels = np.asarray([str(r.label) for r in kept])
    classes = sorted(set(labels))
    names = encoder.encode_texts([class_text(c) for c in classes])
    same_class = labels[:, None] == labels[None, :]
    np.fill_diagonal(same_class, False)  # a photo is not its own answer
    photo_sim = photos @ photos.T
    np.fill_diagonal(photo_sim, -np.inf)  # ... nor a candidate at all
    has_peer = same_class.any(axis=1)
    return [
        Direction(
            "text",
            "image",
            "food101",
            names @ photos.T,
            np.asarray(classes)[:, None] == labels,
            photos,
        ),
        Direction("image", "image", "food101", photo_sim[has_peer], same_class[has_peer], photos),
    ]


DIRECTIONS = {
    "kfood": kfood_directions,
    "flickr": flickr_directions,
    "food101": food101_directions,
}


# --------------------------------------------------------------------------- fitting


def select_queries(d: Direction, rows: np.ndarray) -> Direction:
    return Direction(
        d.query_kind, d.row_kind, d.dataset, d.similarity[rows], d.positive[rows], d.candidates
    )


def _ranks_like(scores: np.ndarray) -> np.ndarray:
    """1-based ranks of a (queries, top) block of best-first scores."""
    return np.broadcast_to(np.arange(1, scores.shape[1] + 1), scores.shape)


def top_candidates(d: Direction, top: int = TOP) -> tuple[np.ndarray, np.ndarray]:
    """Scores and labels of each query's ``top`` best candidates, best first."""
    top = min(top, d.similarity.shape[1])
    order = np.argsort(-d.similarity, axis=1, kind="stable")[:, :top]
    scores = np.take_along_axis(d.similarity, order, axis=1)
    labels = np.take_along_axis(d.positive, order, axis=1)
    return scores, labels


def halves(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Even positions fit, odd positions report: deterministic and balanced."""
    index = np.arange(n)
    return index[index % 2 == 0], index[index % 2 == 1]


def fit_curve(
    scores: np.ndarray, labels: np.ndarray, ranks: np.ndarray | None = None, l2: float = 1e-3
) -> Curve:
    """Logistic regression of ``labels`` on ``scores`` and ln(``ranks``) (Newton's method,
    a small ridge). A rank term that comes out positive (a worse rank more confident:
    noise) is dropped and the curve refitted on the score alone. With too few positives
    or negatives to fit, the curve stays flat at their rate instead of inventing a slope.
    """
    x = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels, dtype=np.float64).ravel()
    r = np.ones_like(x) if ranks is None else np.asarray(ranks, dtype=np.float64).ravel()
    keep = np.isfinite(x)
    x, y, r = x[keep], y[keep], r[keep]
    columns = [x, np.ones_like(x)] + ([np.log(np.maximum(r, 1.0))] if ranks is not None else [])
    w = _newton(np.stack(columns, axis=1), y, l2)
    if ranks is not None and w[2] > 0:
        return fit_curve(x, y, None, l2)
    a = float(w[0])
    if a <= 1e-3 or not np.isfinite(w).all():
        rate = float(np.clip(y.mean() if y.size else 0.5, 1e-4, 1 - 1e-4))
        return Curve(1e-3, float(np.log(rate / (1 - rate))))
    return Curve(a, float(w[1]), float(w[2]) if ranks is not None else 0.0)


def _newton(features: np.ndarray, y: np.ndarray, l2: float) -> np.ndarray:
    ridge = l2 * np.eye(features.shape[1])
    ridge[1, 1] = 0.0  # the intercept is not shrunk
    w = np.zeros(features.shape[1])
    w[0] = 1.0
    for _ in range(100):
        p = 1.0 / (1.0 + np.exp(-np.clip(features @ w, -60, 60)))
        gradient = features.T @ (p - y) + ridge @ w
        hessian = (features * (p * (1 - p))[:, None]).T @ features + ridge
        step = np.linalg.solve(hessian + 1e-9 * np.eye(len(w)), gradient)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return w


def expected_calibration_error(
    confidence: np.ndarray, labels: np.ndarray, bins: int = BINS
) -> float:
    """Σ_bins (n_bin / n) · |accuracy_bin − mean confidence_bin|, equal-width bins."""
    conf = np.asarray(confidence, dtype=np.float64).ravel()
    hit = np.asarray(labels, dtype=np.float64).ravel()
    if conf.size == 0:
        return float("nan")
    which = np.minimum((conf * bins).astype(int), bins - 1)
    error = 0.0
    for b in range(bins):
        members = which == b
        if members.any():
            error += members.sum() / conf.size * abs(hit[members].mean() - conf[members].mean())
    return float(error)


def fit_calibration(directions: Sequence[Direction]) -> Calibration:
    """Curves from the fit half of each direction, pooled by row kind and over all.

    Each curve is fitted twice, with the rank term and on the score alone, and the one
    with the lower (calibration error + share of absent-item queries above 0.5) on the
    fit half is kept. The rank term makes rank 1 trustworthy where validation queries
    almost always find their item (a typed title finds its recipe): there it would also
    make a dish the catalog lacks look certain, and the score-only curve wins.
    """
    members: dict[str, list[Direction]] = {}
    for d in directions:
        fit_rows, _ = halves(len(d.similarity))
        for key in (d.name, direction(ANY, d.row_kind), direction(ANY, ANY)):
            members.setdefault(key, []).append(select_queries(d, fit_rows))
    return Calibration({key: _best_curve(parts) for key, parts in members.items()})


def _best_curve(parts: Sequence[Direction]) -> Curve:
    tops = [top_candidates(d) for d in parts]
    scores = np.concatenate([s.ravel() for s, _ in tops])
    labels = np.concatenate([y.ravel() for _, y in tops])
    ranks = np.concatenate([_ranks_like(s).ravel() for s, _ in tops])
    candidates = [fit_curve(scores, labels, ranks), fit_curve(scores, labels)]
    return min(candidates, key=lambda curve: _fit_cost(curve, parts))


def _fit_cost(curve: Curve, parts: Sequence[Direction]) -> float:
    cost = 0.0
    for d in parts:
        scores, labels = top_candidates(d)
        cost += expected_calibration_error(curve(scores, _ranks_like(scores)), labels)
        cost += float((curve(_absent_scores(d), 1) > 0.5).mean())
    return cost / len(parts)


def _absent_scores(d: Direction) -> np.ndarray:
    """Each query's best score once its true items are gone from the catalog."""
    return np.where(d.positive, -np.inf, d.similarity).max(axis=1)


# --------------------------------------------------------------------------- report


def _median(values: np.ndarray) -> float | None:
    return float(np.median(values)) if values.size else None


def hubness(similarity: np.ndarray, top: int = HUB_TOP) -> dict[str, float]:
    """Distinct candidates in all top-``top`` lists, and the largest share of lists one fills."""
    order = np.argsort(-similarity, axis=1, kind="stable")[:, :top]
    counts = np.bincount(order.ravel(), minlength=similarity.shape[1])
    return {
        "distinct_in_top": int((counts > 0).sum()),
        "candidates": int(similarity.shape[1]),
        "queries": int(similarity.shape[0]),
        "max_share": float(counts.max() / similarity.shape[0]),
    }


def recall(d: Direction, ks: Sequence[int] = (1, 10)) -> dict[str, float]:
    best_positive = np.where(d.positive, d.similarity, -np.inf).max(axis=1)
    ranks = ((d.similarity >= best_positive[:, None]) & ~d.positive).sum(axis=1) + 1
    out = {f"R@{k}": float((ranks <= k).mean()) for k in ks}
    out["medR"] = float(np.median(ranks))
    return out


def report_direction(d: Direction, calibration: Calibration) -> dict[str, Any]:
    """Every trust figure of one direction, on its report half."""
    curve = calibration.curve(d.query_kind, d.row_kind)
    _, rows = halves(len(d.similarity))
    held = select_queries(d, rows)
    scores, labels = top_candidates(held)
    confidence = curve(scores, _ranks_like(scores))
    rank1_true = labels[:, 0]
    absent = _absent_scores(held)
    return {
        "dataset": d.dataset,
        "queries_reported": int(len(rows)),
        "candidates": int(d.similarity.shape[1]),
        **recall(held),
        "ece_top10": expected_calibration_error(confidence, labels),
        "ece_rank1": expected_calibration_error(confidence[:, 0], rank1_true),
        "mean_confidence_rank1": float(confidence[:, 0].mean()),
        "accuracy_rank1": float(rank1_true.mean()),
        "absent_rank1_above_0.5": float((curve(absent, 1) > 0.5).mean()),
        "median_score_rank1_true": _median(scores[rank1_true, 0]),
        "median_score_rank1_false": _median(scores[~rank1_true, 0]),
        "hubness_top3": hubness(d.similarity),
    }


def trust_report(directions: Sequence[Direction], calibration: Calibration) -> dict[str, Any]:
    by_name: dict[str, Any] = {}
    for d in directions:
        by_name[f"{d.dataset}:{d.name}"] = report_direction(d, calibration)
    return {
        "protocol": (
            "validation records only; curves fitted on even-positioned queries' top-10 "
            "candidates, every figure measured on the odd-positioned ones"
        ),
        "directions": by_name,
        "calibration": calibration.to_dict(),
    }


# --------------------------------------------------------------------------- hubness correction


def reference_queries(
    encoder: Encoder, dataset: str, records: Sequence[CatalogRecord], limit: int = 400
) -> dict[str, np.ndarray]:
    """Query vectors of *training* records, by modality: the query distribution a
    hubness correction measures each candidate against (never the validation queries)."""
    step = max(1, len(records) // limit)
    sample = list(records)[::step][:limit]
    kept, images = readable_images(sample)
    out = {"image": encode_images(encoder, images, None)}
    texts = [t for r in kept for t in r.texts[:1]]
    if dataset == "kfood":
        texts = [r.recipe.title for r in kept if r.recipe is not None]
    if texts:
        out["text"] = encoder.encode_texts(texts)
    return out


def csls_penalty(candidates: np.ndarray, reference: np.ndarray, k: int = 10) -> np.ndarray:
    """Mean similarity of each candidate to its ``k`` nearest reference queries (r_x in
    CSLS, Conneau et al. 2018): a hub is close to many queries, whatever they ask."""
    similarity = candidates @ reference.T
    k = min(k, reference.shape[0])
    return np.sort(similarity, axis=1)[:, -k:].mean(axis=1)


def corrected(d: Direction, penalty: np.ndarray, beta: float) -> Direction:
    """``s(q, x) - beta * r_x``: with beta = 1 the ranking of CSLS's ``2s - r_x - r_q``."""
    return Direction(
        d.query_kind,
        d.row_kind,
        d.dataset,
        d.similarity - beta * penalty[None, :],
        d.positive,
        d.candidates,
    )


# --------------------------------------------------------------------------- the whole run


@dataclass(frozen=True)
class TrustSource:
    dataset: str
    val: Sequence[CatalogRecord]
    train: Sequence[CatalogRecord]


def embed_directions(
    encoder: Encoder, sources: Sequence[TrustSource], progress: Progress | None = None
) -> tuple[list[Direction], dict[str, list[np.ndarray]]]:
    """Validation directions of every source, and training-query references by modality."""
    directions: list[Direction] = []
    references: dict[str, list[np.ndarray]] = {}
    for source in sources:
        if progress is not None:
            progress(f"{source.dataset}: embedding {len(source.val)} validation records")
        directions += DIRECTIONS[source.dataset](encoder, source.val)
        if progress is not None:
            progress(f"{source.dataset}: embedding training queries for the hubness reference")
        for kind, vectors in reference_queries(encoder, source.dataset, source.train).items():
            references.setdefault(kind, []).append(vectors)
    return directions, references


def hubness_study(
    directions: Sequence[Direction],
    references: dict[str, np.ndarray],
    betas: Sequence[float] = (0.0, 0.25, 0.5, 0.75, 1.0),
) -> dict[str, Any]:
    """Recall and hubness with ``s - beta * r_x`` for each beta, on both query halves:
    choose beta on ``fit``, read its effect on ``report``."""
    out: dict[str, Any] = {}
    for d in directions:
        if d.query_kind not in references:
            continue
        penalty = csls_penalty(d.candidates, references[d.query_kind])
        fit_rows, report_rows = halves(len(d.similarity))
        rows = {}
        for beta in betas:
            c = corrected(d, penalty, beta)
            rows[str(beta)] = {
                "fit": recall(select_queries(c, fit_rows)),
                "report": recall(select_queries(c, report_rows)),
                "hubness_top3": hubness(c.similarity),
            }
        out[f"{d.dataset}:{d.name}"] = rows
    return out


def run_trust(
    encoder: Encoder, sources: Sequence[TrustSource], progress: Progress | None = None
) -> tuple[Calibration, dict[str, Any]]:
    """Fit the confidence curves and measure everything this module reports."""
    directions, references = embed_directions(encoder, sources, progress)
    calibration = fit_calibration(directions)
    report = trust_report(directions, calibration)
    stacked = {kind: np.concatenate(parts) for kind, parts in references.items()}
    report["hubness_correction"] = hubness_study(directions, stacked)
    report["model"] = encoder.fingerprint
    return calibration, report
