"""Catalog: writer, reader lookups and metadata filters on a real SQLite file."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest

from index.catalog import Catalog, CatalogWriter, DuplicateItemError, FilterError
from index.filters import MAX_ANY_OF

ITEMS = [
    ("a", "stew", {"cuisine": "한식", "minutes": 30, "vegan": False, "time": "60분"}),
    ("b", "pasta", {"cuisine": "양식", "minutes": 15, "vegan": True, "time": "20분"}),
    ("c", "tofu", {"cuisine": "중식", "minutes": 45.5, "vegan": True, "src": {"site": "x"}}),
    ("d", "rice", {"cuisine": "한식", "minutes": "long", "vegan": 1}),
]
# rows: a has image+text, b image, c text+recipe, d text
ROWS = [(0, "a", "image"), (1, "a", "text"), (2, "b", "image"), (3, "c", "text"),
        (4, "c", "recipe"), (5, "d", "text")]  # fmt: skip


@pytest.fixture()
def catalog(tmp_path: Path) -> Catalog:
    writer = CatalogWriter(tmp_path / "catalog.sqlite")
    writer.add_batch(ITEMS[:2], ROWS[:3])
    writer.add_batch(ITEMS[2:], ROWS[3:])
    writer.finish()
    opened = Catalog.open(tmp_path / "catalog.sqlite")
    yield opened
    opened.close()


def items_of(catalog: Catalog, kinds=None, filters=None) -> list[str]:
    rows = catalog.allowed_rows(kinds, filters)
    assert rows is not None
    return sorted(set(catalog.item_ids_of_rows(rows)))


def test_lookups(catalog: Catalog):
    assert (catalog.n_items, catalog.n_vectors) == (4, 6)
    item = catalog.get_item("c")
    assert item is not None and item.label == "tofu" and item.kinds == ["recipe", "text"]
    assert item.metadata["src"] == {"site": "x"}
    assert catalog.get_item("zzz") is None
    assert catalog.rows_of_item("a").tolist() == [0, 1]
    assert catalog.rows_of_item("a", kinds=["text"]).tolist() == [1]
    assert catalog.item_ids_of_rows(np.array([5, 0, 4])) == ["d", "a", "c"]
    assert catalog.kinds_of_rows([4, 2]) == ["recipe", "image"]
    assert catalog.kind_counts() == {"image": 2, "recipe": 1, "text": 3}
    with pytest.raises(KeyError):
        catalog.item_ids_of_rows([99])
    with pytest.raises(KeyError):
        catalog.describe_rows([-1])


def test_described_items_equal_get_items_from_cache_and_from_sql(
    catalog: Catalog, monkeypatch: pytest.MonkeyPatch
):
    """describe_items gives get_items' label and metadata; a second call asks no SQL."""
    first = catalog.describe_items(["c", "zzz", "a", "c"])
    full = catalog.get_items(["a", "c"])

    assert sorted(first) == ["a", "c"]  # unknown ids absent, duplicates once
    assert {i: (d.label, d.metadata) for i, d in first.items()} == {
        i: (item.label, item.metadata) for i, item in full.items()
    }

    def no_sql(*args: object) -> None:
        raise AssertionError("cached items must not reach SQLite")

    monkeypatch.setattr(catalog, "_query", no_sql)
    again = catalog.describe_items(["a", "c"])
    assert again == {"a": first["a"], "c": first["c"]}


def test_row_descriptions_from_memory_equal_the_sql_lookup(tmp_path: Path):
    """describe_rows answers from tables loaded at open: the same as asking SQLite."""
    rng = np.random.default_rng(0)
    kinds = ("image", "text", "recipe")
    owners = rng.integers(0, 300, 1000)
    items = [(f"item-{i}", None, {}) for i in sorted(set(owners.tolist()))]
    rows = [(row, f"item-{owner}", kinds[row % 3]) for row, owner in enumerate(owners)]
    writer = CatalogWriter(tmp_path / "big.sqlite")
    for start in range(0, len(items), 97):  # several batches: rowids keep counting
        writer.add_batch(items[start : start + 97], [])
    writer.add_batch([], rows)
    writer.finish()
    wanted = rng.permutation(len(rows))[:400].tolist() + [7, 7]  # shuffled, repeated

    with sqlite3.connect(tmp_path / "big.sqlite") as db:
        by_row = {r: (i, k) for r, i, k in db.execute("SELECT row, item_id, kind FROM vectors")}
    opened = Catalog.open(tmp_path / "big.sqlite")
    try:
        assert opened.describe_rows(np.array(wanted)) == [by_row[r] for r in wanted]
        assert opened.describe_rows([]) == []
    finally:
        opened.close()


def test_image_paths(tmp_path: Path):
    writer = CatalogWriter(tmp_path / "c.sqlite")
    writer.add_batch(ITEMS[:2], ROWS[:3], [("a", tmp_path / "a.jpg")])
    writer.finish()
    catalog = Catalog.open(tmp_path / "c.sqlite")
    assert catalog.image_path("a") == tmp_path / "a.jpg"
    assert catalog.image_path("b") is None  # an item without a photo
    assert catalog.image_path("zzz") is None
    catalog.close()


def test_catalogs_without_an_images_table_have_no_images(tmp_path: Path):
    """Snapshots written before the images table existed still open."""
    writer = CatalogWriter(tmp_path / "old.sqlite")
    writer.add_batch(ITEMS[:1], ROWS[:2])
    writer._db.execute("DROP TABLE images")
    writer.finish()
    catalog = Catalog.open(tmp_path / "old.sqlite")
    assert catalog.get_item("a") is not None and catalog.image_path("a") is None
    catalog.close()


def test_no_restriction_means_none(catalog: Catalog):
    assert catalog.allowed_rows(None, None) is None
    assert catalog.allowed_rows(None, {}) is None


def test_kinds_restriction(catalog: Catalog):
    assert catalog.allowed_rows(["text"], None).tolist() == [1, 3, 5]
    assert catalog.allowed_rows(["image", "recipe"], None).tolist() == [0, 2, 4]
    assert catalog.allowed_rows(["video"], None).tolist() == []


def test_equality_filters(catalog: Catalog):
    assert items_of(catalog, filters={"cuisine": "한식"}) == ["a", "d"]
    assert items_of(catalog, filters={"minutes": 15}) == ["b"]
    assert items_of(catalog, filters={"vegan": True}) == ["b", "c"]  # JSON 1 is not true
    assert items_of(catalog, filters={"src.site": "x"}) == ["c"]
    assert items_of(catalog, ["text"], {"cuisine": "한식"}) == ["a", "d"]
    assert catalog.allowed_rows(["image"], {"cuisine": "한식"}).tolist() == [0]
    assert items_of(catalog, filters={"cuisine": "없음"}) == []


def test_any_of_filter(catalog: Catalog):
    assert items_of(catalog, filters={"cuisine": ["양식", "중식"]}) == ["b", "c"]
    assert items_of(catalog, filters={"cuisine": ["한식"], "vegan": [True]}) == []
    assert items_of(catalog, filters={"vegan": [False, "x", True]}) == ["a", "b", "c"]


def test_any_of_filter_takes_the_longest_list_allowed(catalog: Catalog):
    # A chain of ~1000 ORs once made SQLite refuse: "Expression tree is too large".
    many = [f"없음-{i}" for i in range(MAX_ANY_OF - 2)] + ["양식", "중식"]
    assert items_of(catalog, filters={"cuisine": many}) == ["b", "c"]
    with pytest.raises(FilterError, match="more than 1000"):
        catalog.allowed_rows(None, {"cuisine": [*many, "한식"]})


def test_range_filters_are_type_aware(catalog: Catalog):
    assert items_of(catalog, filters={"minutes": {"gte": 15, "lte": 40}}) == ["a", "b"]
    assert items_of(catalog, filters={"minutes": {"gt": 30}}) == ["c"]  # "long" is no number
    assert items_of(catalog, filters={"time": {"gte": "30분"}}) == ["a"]
    assert items_of(catalog, filters={"time": {"gte": 0}}) == []  # strings never match numbers


@pytest.mark.parametrize(
    "filters",
    [
        {"cuisine'); DROP TABLE items; --": "x"},
        {"a b": 1},
        {"1abc": 1},
        {"": 1},
        {"$.cuisine": 1},
        {"cuisine": None},
        {"cuisine": []},
        {"cuisine": [["nested"]]},
        {"minutes": {"between": [1, 2]}},
        {"minutes": {}},
        {"minutes": {"gte": 1, "lte": "9"}},
        {"minutes": {"gte": float("nan")}},
        {"minutes": {"gte": True}},
        ["cuisine"],
    ],
)
def test_malformed_filters_raise_filter_error(catalog: Catalog, filters):
    with pytest.raises(FilterError):
        catalog.allowed_rows(None, filters)
    assert catalog.n_items == 4 and catalog.get_item("a") is not None  # nothing was executed


def test_kinds_must_be_a_list(catalog: Catalog):
    with pytest.raises(FilterError, match="list"):
        catalog.allowed_rows("text", None)


def test_open_is_read_only_and_never_creates(tmp_path: Path, catalog: Catalog):
    with pytest.raises(FileNotFoundError):
        Catalog.open(tmp_path / "missing.sqlite")
    assert not (tmp_path / "missing.sqlite").exists()
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        catalog._db.execute("DELETE FROM items")


def test_duplicate_item_ids_are_refused(tmp_path: Path):
    writer = CatalogWriter(tmp_path / "c.sqlite")
    writer.add_batch(ITEMS[:1], ROWS[:1])
    with pytest.raises(DuplicateItemError):
        writer.add_batch(ITEMS[:1], [])
    writer.abort()
    with pytest.raises(FileExistsError):
        CatalogWriter(tmp_path / "c.sqlite")


def test_metadata_must_be_plain_json(tmp_path: Path):
    writer = CatalogWriter(tmp_path / "c.sqlite")
    with pytest.raises(ValueError, match="item 'x'"):
        writer.add_batch([("x", None, {"when": object()})], [])
    writer.abort()


def test_repeated_filters_are_answered_consistently(catalog: Catalog):
    """Filter results are cached per snapshot; distinct filters must not collide."""
    first = [items_of(catalog, filters={"cuisine": c}) for c in ("한식", "양식", "한식")]
    assert first == [["a", "d"], ["b"], ["a", "d"]]
    assert items_of(catalog, filters={"minutes": 15}) == ["b"]
    assert items_of(catalog, filters={"minutes": "15"}) != ["b"]  # a string is not a number


def test_rows_must_be_numbered_from_zero(tmp_path: Path):
    writer = CatalogWriter(tmp_path / "gap.sqlite")
    writer.add_batch(ITEMS[:1], [(0, "a", "image"), (5, "a", "text")])
    writer.finish()
    with pytest.raises(ValueError, match="0..n-1"):
        Catalog.open(tmp_path / "gap.sqlite")
