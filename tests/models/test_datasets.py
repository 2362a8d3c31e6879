"""Dataset readers on the real sample data and on small hand-made files."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from models.datasets import (
    FORMATS,
    DatasetError,
    open_dataset,
    parse_cooking_minutes,
    split_records,
)
from models.types import CatalogRecord, Recipe


def test_kfood(shared_data: Path) -> None:
    ds = open_dataset(shared_data / "kfood", "kfood")
    assert len(ds) == 430
    records = list(ds)
    assert len(records) == 430 and len({r.id for r in records}) == 430
    first = records[0]
    assert first.id == "kfood-1"
    assert first.recipe is not None and first.recipe.title == "나물비빔밥"
    assert first.recipe.ingredients[:3] == ("쌀", "안심", "콩나물")
    assert first.recipe.instructions[0].startswith("양지머리로")
    assert first.label == "한식"
    assert first.image_path == (shared_data / "kfood" / "images" / "kfood-1.jpg").absolute()
    assert first.image_path.is_absolute() and first.image_path.is_file()
    meta = first.metadata
    assert meta["cooking_time"] == "60분" and meta["cooking_minutes"] == 60
    assert meta["image"] == "images/kfood-1.jpg"
    assert meta["ingredients"] == list(first.recipe.ingredients)
    assert meta["amounts"][:3] == ["4컵", "200g", "20g"]
    assert meta["instructions"] == list(first.recipe.instructions)
    assert all(len(r.metadata["amounts"]) == len(r.metadata["ingredients"]) for r in records)
    assert {"title", "summary", "cuisine", "level"} <= set(meta)
    assert Counter(r.label for r in records) == {
        "한식": 304,
        "양식": 45,
        "기타": 37,
        "중식": 24,
        "일식": 20,
    }
    assert all(isinstance(r.metadata["cooking_minutes"], int) for r in records)


def test_kfood_sample_fixture(kfood_sample: Path) -> None:
    records = list(open_dataset(kfood_sample, "kfood"))
    assert len(records) == 12 and all(r.image_path and r.image_path.is_file() for r in records)


def test_food101(shared_data: Path) -> None:
    ds = open_dataset(shared_data / "food101-10", "food101")
    assert len(ds) == 3750
    assert ds.classes[0] == "apple_pie" and len(ds.classes) == 10  # type: ignore[attr-defined]
    records = list(ds)
    counts = Counter(r.label for r in records)
    assert len(counts) == 10 and set(counts.values()) == {375}
    first = records[0]
    assert first.id == "apple_pie/1005649"
    assert first.metadata == {"label": "apple_pie"}
    assert (
        first.image_path is not None
        and first.image_path.is_absolute()
        and first.image_path.is_file()
    )
    assert len({r.id for r in records}) == 3750


def test_flickr(shared_data: Path) -> None:
    ds = open_dataset(shared_data / "flickr8k", "flickr")
    assert len(ds) == 3006
    records = list(ds)
    assert len(records) == 3006
    assert sum(len(r.texts) for r in records) == 7468
    assert all(1 <= len(r.texts) <= 3 for r in records)
    first = records[0]
    assert first.id == "1001773457_577c3a7d70"
    assert first.texts[0] == "A black dog and a spotted dog are fighting"
    assert first.metadata == {"captions": list(first.texts)}
    assert first.image_path is not None and first.image_path.is_file()


def test_iteration_is_lazy(shared_data: Path) -> None:
    it = iter(open_dataset(shared_data / "flickr8k", "flickr"))
    assert isinstance(next(it), CatalogRecord)
    it = iter(open_dataset(shared_data / "kfood", "kfood"))
    assert next(it).id == "kfood-1"


def test_errors_say_what_was_expected(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist"):
        open_dataset(tmp_path / "missing", "kfood")
    with pytest.raises(DatasetError, match=r"recipes\.jsonl"):
        open_dataset(tmp_path, "kfood")
    with pytest.raises(DatasetError, match=r"labels\.tsv"):
        open_dataset(tmp_path, "food101")
    with pytest.raises(DatasetError, match=r"captions\.tsv"):
        open_dataset(tmp_path, "flickr")
    with pytest.raises(DatasetError, match=r"items\.jsonl"):
        open_dataset(tmp_path, "jsonl")
    with pytest.raises(
        DatasetError, match="unknown dataset format 'coco'.*kfood, food101, flickr, jsonl"
    ):
        open_dataset(tmp_path, "coco")
    assert FORMATS == ("kfood", "food101", "flickr", "jsonl")


def test_food101_bad_rows(tmp_path: Path) -> None:
    (tmp_path / "classes.txt").write_text("pizza\n")
    (tmp_path / "labels.tsv").write_text("img\tlabel\nimages/a.jpg\tpizza\n")
    with pytest.raises(DatasetError, match="header"):
        list(open_dataset(tmp_path, "food101"))
    (tmp_path / "labels.tsv").write_text("image\tlabel\nimages/a.jpg\tpizza\nimages/b.jpg\tsushi\n")
    ds = open_dataset(tmp_path, "food101")
    assert len(ds) == 2
    with pytest.raises(DatasetError, match="line 3.*'sushi'"):
        list(ds)
    (tmp_path / "labels.tsv").write_text("image\tlabel\nimages/a.jpg\n")
    with pytest.raises(DatasetError, match="line 2"):
        list(open_dataset(tmp_path, "food101"))


def _write_jsonl(path: Path, lines: list[object]) -> Path:
    path.write_text(
        "\n".join(
            line if isinstance(line, str) else json.dumps(line, ensure_ascii=False)
            for line in lines
        )
        + "\n",
        encoding="utf-8",
    )
    return path


GOOD_ITEMS: list[object] = [
    {
        "id": "a",
        "image": "img/a.jpg",
        "text": "a red bowl",
        "label": "bowl",
        "metadata": {"price": 3},
    },
    {"id": 7, "texts": ["one", "two"]},
    "",
    {
        "id": "r",
        "recipe": {
            "title": "김치찌개",
            "ingredients": ["김치", "두부"],
            "instructions": ["끓인다"],
        },
        "text": "stew",
        "texts": ["jjigae"],
    },
]


def test_jsonl_folder_and_file(tmp_path: Path) -> None:
    _write_jsonl(tmp_path / "items.jsonl", GOOD_ITEMS)
    ds = open_dataset(tmp_path, "jsonl")
    assert len(ds) == 3
    a, seven, r = list(ds)
    assert a.image_path == (tmp_path / "img" / "a.jpg").absolute()
    assert a.texts == ("a red bowl",) and a.label == "bowl" and a.metadata == {"price": 3}
    assert seven.id == "7" and seven.texts == ("one", "two") and seven.image_path is None
    assert r.recipe == Recipe("김치찌개", ("김치", "두부"), ("끓인다",))
    assert r.texts == ("stew", "jjigae")
    other = _write_jsonl(tmp_path / "other.jsonl", GOOD_ITEMS[:1])
    assert [x.id for x in open_dataset(other, "jsonl")] == ["a"]
    with pytest.raises(DatasetError, match="jsonl"):
        open_dataset(tmp_path / "items.jsonl", "kfood")


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("{not json", "line 2: invalid JSON"),
        ("[1, 2]", "line 2: expected a JSON object"),
        ({"image": "x.jpg"}, "line 2: 'id' is required"),
        ({"id": "b"}, "line 2: item has no"),
        ({"id": "b", "text": 3}, "line 2: 'text' must be a string"),
        ({"id": "b", "texts": "one"}, "line 2: 'texts' must be a list of strings"),
        ({"id": "b", "recipe": {"ingredients": []}}, "line 2: 'recipe' must be an object"),
        ({"id": "b", "text": "t", "caption": "x"}, "line 2: unknown keys \\['caption'\\]"),
        ({"id": "b", "text": "t", "metadata": [1]}, "line 2: 'metadata' must be a JSON object"),
        ({"id": "a", "text": "dup"}, "line 2: id 'a' is repeated"),
    ],
)
def test_jsonl_bad_line(tmp_path: Path, bad: object, message: str) -> None:
    _write_jsonl(tmp_path / "items.jsonl", [GOOD_ITEMS[0], bad, GOOD_ITEMS[1]])
    ds = open_dataset(tmp_path, "jsonl")
    it = iter(ds)
    assert next(it).id == "a"  # lines before the bad one are still read
    with pytest.raises(DatasetError, match=message):
        next(it)


def test_kfood_display_metadata(tmp_path: Path) -> None:
    """Amounts stay aligned with the names, a missing or blank one becomes None."""
    recipe = {
        "id": "k1",
        "title": "김치찌개",
        "ingredients": [
            {"name": "김치", "amount": "200g"},
            {"name": "소금"},
            {"name": "물", "amount": " "},
            {"name": "두부", "amount": 1},
        ],
        "instructions": ["김치를 볶는다.", "물을 붓고 끓인다."],
        "image": "i.jpg",
    }
    _write_jsonl(tmp_path / "recipes.jsonl", [recipe])
    (meta,) = [r.metadata for r in open_dataset(tmp_path, "kfood")]
    assert meta["ingredients"] == ["김치", "소금", "물", "두부"]
    assert meta["amounts"] == ["200g", None, None, "1"]
    assert meta["instructions"] == ["김치를 볶는다.", "물을 붓고 끓인다."]


def test_kfood_bad_line(tmp_path: Path) -> None:
    good = {
        "id": "k1",
        "title": "t",
        "ingredients": [{"name": "x"}],
        "instructions": ["s"],
        "image": "i.jpg",
    }
    _write_jsonl(tmp_path / "recipes.jsonl", [good, {"id": "k2", "title": "t"}])
    with pytest.raises(DatasetError, match="line 2: missing key 'ingredients'"):
        list(open_dataset(tmp_path, "kfood"))


@pytest.mark.parametrize(
    ("text", "minutes"),
    [
        ("60분", 60),
        ("1시간 30분", 90),
        ("2시간 이상", 120),
        ("90분 이내", 90),
        ("45", 45),
        ("1 hour 15 min", 75),
        ("", None),
        ("반나절", None),
        (None, None),
        (30, 30),
    ],
)
def test_cooking_minutes(text: object, minutes: int | None) -> None:
    assert parse_cooking_minutes(text) == minutes


def test_split_records_deterministic() -> None:
    records = [CatalogRecord(id=f"item-{i}") for i in range(1000)]
    train, val = split_records(records, 0.2, seed=3)
    assert len(train) + len(val) == 1000 and 150 < len(val) < 250
    assert split_records(records, 0.2, seed=3) == (train, val)
    assert split_records(records, 0.2, seed=4)[1] != val
    # adding records never moves existing ones
    _, val_more = split_records([*records, CatalogRecord(id="new")], 0.2, seed=3)
    assert {r.id for r in val} <= {r.id for r in val_more}
    assert split_records(records, 0.0)[1] == [] and split_records(records, 1.0)[0] == []
    with pytest.raises(ValueError):
        split_records(records, 1.5)


@pytest.mark.parametrize("image", ["../outside.jpg", "img/../../outside.jpg", "/etc/passwd"])
def test_jsonl_image_paths_may_not_leave_the_dataset(tmp_path: Path, image: str) -> None:
    root = tmp_path / "dataset"
    root.mkdir()
    _write_jsonl(root / "items.jsonl", [{"id": "x", "image": image, "text": "a bowl"}])
    with pytest.raises(DatasetError, match="leaves the dataset folder"):
        list(open_dataset(root, "jsonl"))
