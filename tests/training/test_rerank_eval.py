"""``mmsearch eval --rerank sgraf``: the vector search and the re-ranked one side by side,
on a tiny trained bundle carrying a random-init SGRAF."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

from models.bundle import export_bundle, load_bundle, write_sgraf
from models.datasets import open_dataset
from models.rerank import rerankers_of
from models.sgraf import Sgraf, SgrafConfig
from service.cli import main
from tests.bundles import save_tiny_base, train_args
from tests.training.colour_flickr import write_colour_flickr
from training.rerank_eval import reranked_similarity
from training.rerank_features import captioned_vectors

COLOURS = (
    *("red", "green", "navy", "yellow", "white", "purple", "orange", "black", "pink"),
    *("teal", "olive", "maroon", "gray", "cyan", "brown", "gold"),
)


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny trained bundle without a re-ranker, and a copy with a random-init SGRAF."""
    root = tmp_path_factory.mktemp("rerank-eval")
    plain = root / "plain"
    assert main(train_args(save_tiny_base(root), plain, "--epochs", "3")) == 0
    reranked = export_bundle(plain, root / "reranked", half=False)
    torch.manual_seed(0)
    write_sgraf(reranked, Sgraf(SgrafConfig(dim=load_bundle(reranked).dim, sim_dim=8, steps=2)))
    return plain, reranked


@pytest.fixture(scope="module")
def flickr_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Sixteen one-colour photos with two captions each, in the flickr format."""
    return write_colour_flickr(tmp_path_factory.mktemp("flickr16"), COLOURS)


def run_eval(tmp_path: Path, model: Path, dataset: str, data_dir: Path, *extra: str) -> dict:
    out = tmp_path / f"{dataset}-{len(extra)}.json"
    argv = ["eval", "--model", str(model), "--dataset", dataset, "--data-dir", str(data_dir)]
    assert main([*argv, "--device", "cpu", "--json", str(out), *extra]) == 0
    return json.loads(out.read_text())


def test_the_top_rows_take_the_rerankers_order_and_the_rest_keep_theirs() -> None:
    similarity = np.array([[0.9, 0.8, 0.7, 0.1, 0.75]])
    # The re-ranker prefers the vector search's second, then third, then first.
    scores = {0: 0.1, 1: 0.9, 4: 0.5}
    out = reranked_similarity(similarity, 3, lambda row, head: np.array([scores[j] for j in head]))
    assert list(np.argsort(-out[0], kind="stable")) == [1, 4, 0, 2, 3]


def test_flickr_variants_come_side_by_side_and_only_the_top_moves(
    bundles: tuple[Path, Path], flickr_dir: Path, tmp_path: Path
) -> None:
    plain, reranked = bundles
    alone = run_eval(tmp_path, plain, "flickr", flickr_dir)
    both = run_eval(
        tmp_path, reranked, "flickr", flickr_dir, "--rerank", "sgraf", "--rerank-top", "2"
    )
    single, rerank = both["variants"]["single"], both["variants"]["single+rerank"]
    # Same vectors: the single variant is the plain evaluation.
    for key in ("image_to_text", "text_to_image", "rsum"):
        assert single[key] == pytest.approx(alone[key])
    assert both["rerank"] == {"model": "sgraf", "top": 2}
    # Re-ranking the top 2 cannot move a positive into or out of the top 5 or 10.
    for direction in ("image_to_text", "text_to_image"):
        for k in ("R@5", "R@10"):
            assert rerank[direction][k] == single[direction][k]
    # R@1 text -> image is whether the re-ranker's best of the vector top 2 is the caption's photo.
    encoder = load_bundle(reranked)
    vectors = captioned_vectors(encoder, list(open_dataset(flickr_dir, "flickr")))
    sgraf = rerankers_of(encoder)["sgraf"]
    hits = []
    for caption, owner in enumerate(vectors.owner):
        head = np.argsort(-(vectors.images @ vectors.texts[caption]), kind="stable")[:2]
        scores = sgraf.score(vectors.caption(caption), [vectors.photo(int(j)) for j in head])
        hits.append(head[int(np.argmax(scores))] == owner)
    assert rerank["text_to_image"]["R@1"] == pytest.approx(np.mean(hits))


def test_reranking_only_the_first_changes_nothing_on_kfood(
    bundles: tuple[Path, Path], kfood_sample: Path, tmp_path: Path
) -> None:
    result = run_eval(
        tmp_path, bundles[1], "kfood", kfood_sample, "--rerank", "sgraf", "--rerank-top", "1"
    )
    assert result["n"] == 12
    assert result["variants"]["single+rerank"] == result["variants"]["single"]


@pytest.mark.parametrize(
    ("model", "extra", "message"),
    [
        ("plain", ["--rerank", "sgraf"], "carries no trained 'sgraf' re-ranker"),
        ("reranked", ["--rerank", "colbert"], "unknown --rerank"),
        ("reranked", ["--rerank", "sgraf", "--rerank-top", "0"], "--rerank-top must be in"),
        ("reranked", ["--similarity", "set"], "carries no trained DivE set heads"),
        ("reranked", ["--similarity", "sets"], "--similarity must be 'single' or 'set'"),
        ("plain", ["--split", "val-report", "--dataset", "kfood"], "applies to --dataset flickr"),
    ],
)
def test_variants_that_cannot_be_measured_are_bad_input(
    model: str,
    extra: list[str],
    message: str,
    bundles: tuple[Path, Path],
    flickr_dir: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = bundles[0] if model == "plain" else bundles[1]
    argv = ["eval", "--model", str(path), "--dataset", "flickr", "--data-dir", str(flickr_dir)]
    capsys.readouterr()
    assert main([*argv, *extra]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err


def test_train_rerank_writes_a_float16_sgraf_into_a_copy_of_the_bundle(
    bundles: tuple[Path, Path], flickr_dir: Path, tmp_path: Path
) -> None:
    plain = bundles[0]
    out, report_path = tmp_path / "with-sgraf", tmp_path / "report.json"
    argv = ["train-rerank", "--model", str(plain), "--flickr-dir", str(flickr_dir)]
    options = ["--negatives", "2", "--epochs", "2", "--tune-fraction", "0.4", "--sim-dim", "8"]
    assert main([*argv, *options, "--out", str(out), "--json", str(report_path)]) == 0
    report = json.loads(report_path.read_text())
    assert [h["epoch"] for h in report["history"]] == [0, 1, 2]
    assert report["split"] == {"val_fraction": 0.2, "seed": 0}
    # Fitting, tuning and the bundle's validation split (the report) share no photo.
    assert report["fit_photos"] + report["tune_photos"] + report["val_photos"] == len(COLOURS)
    assert set(report["validation"]["flickr"]) == {"single", "single+rerank"}
    trained = load_bundle(out)
    assert trained.fingerprint == load_bundle(plain).fingerprint  # vectors unchanged
    assert "sgraf" in rerankers_of(trained)
    with safe_open(str(out / "sgraf.safetensors"), "pt") as weights:
        assert {weights.get_tensor(k).dtype for k in weights.keys()} == {torch.float16}  # noqa: SIM118
    # An existing directory other than the bundle is refused before any training.
    assert main([*argv, *options, "--out", str(flickr_dir)]) == 2
