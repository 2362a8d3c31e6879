"""Item id <-> vector rows <-> metadata, in one embedded SQLite file.

Schema::

    items(id TEXT PRIMARY KEY, label TEXT, metadata TEXT /* JSON object */,
          content_hash TEXT /* sha256 of the inputs that were encoded */)
    vectors(row INTEGER PRIMARY KEY, item_id TEXT, kind TEXT)
    images(item_id TEXT PRIMARY KEY, path TEXT)  /* the photo file indexed for an item */

``images`` lets the service show an item's photo: it only ever serves the paths
written here at index time. Snapshots built before the table existed have no
images (:meth:`Catalog.image_path` returns None).
``items.content_hash`` (see :mod:`index.reuse`) lets the next re-index copy an
unchanged item's vectors instead of encoding it again; catalogs written before
the column existed have none (:attr:`Catalog.has_content_hashes` is False).
``vectors.row`` is the FAISS id and the row of ``vectors.npy``. A snapshot's
catalog is written once by :class:`CatalogWriter` and then only read, through a
read-only connection shared by the request threads behind a lock (SQLite
connections are not safe for concurrent use; the queries are index lookups, so
the lock is held for microseconds).

Restricting a search (:meth:`Catalog.allowed_rows`) is done in memory where it
can be: each row's kind and item are loaded once per snapshot (5 bytes a row),
metadata filters run as parameterised SQL over the items table only (see
:mod:`index.filters`) and their results are cached, as a snapshot never changes.
Describing search results (:meth:`Catalog.describe_rows`) is in memory too: the
item ids are loaded once with the row table, so a search queries SQLite only for
the metadata of the k items it returns.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from index.filters import FilterError, compile_filters, json_path

__all__ = [
    "Catalog",
    "CatalogWriter",
    "DuplicateItemError",
    "FilterError",
    "Item",
    "compile_filters",
    "recorded_image_paths",
]

_SCHEMA = """
CREATE TABLE items (
    id TEXT PRIMARY KEY, label TEXT, metadata TEXT NOT NULL, content_hash TEXT
);
CREATE TABLE vectors (row INTEGER PRIMARY KEY, item_id TEXT NOT NULL, kind TEXT NOT NULL);
CREATE TABLE images (item_id TEXT PRIMARY KEY, path TEXT NOT NULL);
"""
_INDEXES = """
CREATE INDEX vectors_by_item ON vectors(item_id, kind);
CREATE INDEX vectors_by_kind ON vectors(kind);
"""
_SQL_CHUNK = 500  # bound parameters per IN (...) query, well under SQLite's limit
_FETCH_CHUNK = 65_536
_FILTER_CACHE_SIZE = 32
# Items described for search results, kept parsed: a search's k items were two SQL
# queries and k JSON parses (about 70 us of a 0.5 ms HNSW search at 100k); popular
# items come back in result after result. A read catalog never changes, so no expiry.
_DESCRIBED_CACHE_SIZE = 4096


class DuplicateItemError(ValueError):
    """The same item id was written twice into one catalog."""


@dataclass(frozen=True)
class Item:
    id: str
    label: str | None
    metadata: dict[str, Any] = field(default_factory=dict)
    kinds: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ItemSummary:
    """What a search result shows of an item. Shared between results: read, never mutate."""

    label: str | None
    metadata: dict[str, Any]


# --------------------------------------------------------------------------- reader


def recorded_image_paths(path: Path | str) -> list[str]:
    """Every photo path a catalog file records (none before the images table existed),
    read without loading the catalog's row tables."""
    uri = Path(path).resolve().as_uri() + "?mode=ro"
    with contextlib.closing(sqlite3.connect(uri, uri=True)) as db:
        has_images = db.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'images'"
        ).fetchone()
        return [p for (p,) in db.execute("SELECT path FROM images")] if has_images else []


def _chunks(values: list[Any]) -> Iterable[list[Any]]:
    for start in range(0, len(values), _SQL_CHUNK):
        yield values[start : start + _SQL_CHUNK]


def _marks(n: int) -> str:
    return ",".join("?" * n)


class Catalog:
    """Read side of a snapshot's catalog; safe to share between threads."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._db = connection
        self._lock = threading.Lock()
        self.n_vectors = self._query_one("SELECT COUNT(*) FROM vectors")
        self.n_items = self._query_one("SELECT COUNT(*) FROM items")
        self._kind_codes = {
            kind: code
            for code, (kind,) in enumerate(self._query("SELECT DISTINCT kind FROM vectors"))
        }
        self._item_of_row, self._kind_of_row = self._load_row_table()
        self._kind_names = np.array(list(self._kind_codes), dtype=object)
        self._id_of_item = self._load_item_ids()
        self._filter_cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._described: OrderedDict[str, ItemSummary] = OrderedDict()
        self._has_images = bool(
            self._query("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'images'")
        )
        self.has_content_hashes = bool(
            self._query("SELECT 1 FROM pragma_table_info('items') WHERE name = 'content_hash'")
        )

    @classmethod
    def open(cls, path: Path | str) -> Catalog:
        """Open read-only; FileNotFoundError when the file does not exist."""
        path = Path(path).resolve()
        if not path.is_file():
            raise FileNotFoundError(f"catalog not found: {path}")
        uri = path.as_uri() + "?mode=ro"
        return cls(sqlite3.connect(uri, uri=True, check_same_thread=False))

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._db.execute(sql, params).fetchall()

    def _query_one(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self._query(sql, params)[0][0]

    def _load_row_table(self) -> tuple[np.ndarray, np.ndarray]:
        """items.rowid and kind code of every vector row, checking rows are 0..n-1."""
        if len(self._kind_codes) > 255:
            raise ValueError(f"catalog has {len(self._kind_codes)} kinds, at most 255 supported")
        item_of_row = np.full(self.n_vectors, -1, dtype=np.int64)
        kind_of_row = np.zeros(self.n_vectors, dtype=np.uint8)
        sql = "SELECT v.row, i.rowid, v.kind FROM vectors v JOIN items i ON i.id = v.item_id"
        seen = 0
        with self._lock:
            cursor = self._db.execute(sql)
            while batch := cursor.fetchmany(_FETCH_CHUNK):
                rows, items, kinds = zip(*batch, strict=True)
                if max(rows) >= self.n_vectors or min(rows) < 0:
                    raise ValueError("catalog vector rows are not numbered 0..n-1")
                item_of_row[list(rows)] = items
                kind_of_row[list(rows)] = [self._kind_codes[k] for k in kinds]
                seen += len(batch)
        if seen != self.n_vectors or (item_of_row < 0).any():
            raise ValueError("catalog has vector rows whose item is missing")
        return item_of_row, kind_of_row

    def _load_item_ids(self) -> np.ndarray:
        """Item id by items.rowid (None where no item has that rowid)."""
        ids = np.full(int(self._item_of_row.max(initial=0)) + 1, None, dtype=object)
        with self._lock:
            cursor = self._db.execute("SELECT rowid, id FROM items")
            while batch := cursor.fetchmany(_FETCH_CHUNK):
                rowids, item_ids = zip(*batch, strict=True)
                known = [i for i, rowid in enumerate(rowids) if rowid < ids.size]
                ids[[rowids[i] for i in known]] = [item_ids[i] for i in known]
        return ids

    def kind_counts(self) -> dict[str, int]:
        rows = self._query("SELECT kind, COUNT(*) FROM vectors GROUP BY kind ORDER BY kind")
        return {kind: count for kind, count in rows}

    def get_item(self, item_id: str) -> Item | None:
        return self.get_items([item_id]).get(item_id)

    def get_items(self, item_ids: Sequence[str]) -> dict[str, Item]:
        """Items by id; unknown ids are absent from the result."""
        unique = list(dict.fromkeys(item_ids))
        kinds: dict[str, list[str]] = {}
        found: dict[str, tuple[str | None, str]] = {}
        for chunk in _chunks(unique):
            sql = f"SELECT id, label, metadata FROM items WHERE id IN ({_marks(len(chunk))})"
            found.update({i: (label, meta) for i, label, meta in self._query(sql, chunk)})
            sql = (
                f"SELECT DISTINCT item_id, kind FROM vectors "
                f"WHERE item_id IN ({_marks(len(chunk))}) ORDER BY kind"
            )
            for item_id, kind in self._query(sql, chunk):
                kinds.setdefault(item_id, []).append(kind)
        return {
            i: Item(i, label, json.loads(meta), kinds.get(i, []))
            for i, (label, meta) in found.items()
        }

    def describe_items(self, item_ids: Sequence[str]) -> dict[str, ItemSummary]:
        """Label and metadata by id, from a cache of recent ones (one SQL query for the
        rest); unknown ids are absent. Search results need no more than this."""
        unique = list(dict.fromkeys(item_ids))
        with self._lock:
            found = {i: self._described[i] for i in unique if i in self._described}
            for item_id in found:
                self._described.move_to_end(item_id)
        missing = [i for i in unique if i not in found]
        loaded: dict[str, ItemSummary] = {}
        for chunk in _chunks(missing):
            sql = f"SELECT id, label, metadata FROM items WHERE id IN ({_marks(len(chunk))})"
            for item_id, label, meta in self._query(sql, chunk):
                loaded[item_id] = ItemSummary(label, json.loads(meta))
        if loaded:
            with self._lock:
                self._described.update(loaded)
                while len(self._described) > _DESCRIBED_CACHE_SIZE:
                    self._described.popitem(last=False)
        return found | loaded

    def image_path(self, item_id: str) -> Path | None:
        """The photo file recorded for this item at index time; None if it has none."""
        if not self._has_images:
            return None
        found = self._query("SELECT path FROM images WHERE item_id = ?", [item_id])
        return Path(found[0][0]) if found else None

    def content_hashes(self, item_ids: Sequence[str]) -> dict[str, str | None]:
        """Content hash of each known item among ``item_ids`` (None: not recorded)."""
        column = "content_hash" if self.has_content_hashes else "NULL"
        found: dict[str, str | None] = {}
        for chunk in _chunks(list(dict.fromkeys(item_ids))):
            sql = f"SELECT id, {column} FROM items WHERE id IN ({_marks(len(chunk))})"
            found.update(dict(self._query(sql, chunk)))
        return found

    def rows_of_items(self, item_ids: Sequence[str]) -> dict[str, list[tuple[int, str]]]:
        """(row, kind) of each item's vector rows, in row order; items without rows absent."""
        rows: dict[str, list[tuple[int, str]]] = {}
        for chunk in _chunks(list(dict.fromkeys(item_ids))):
            sql = (
                f"SELECT item_id, row, kind FROM vectors "
                f"WHERE item_id IN ({_marks(len(chunk))}) ORDER BY row"
            )
            for item_id, row, kind in self._query(sql, chunk):
                rows.setdefault(item_id, []).append((int(row), kind))
        return rows

    def rows_of_item(self, item_id: str, kinds: Sequence[str] | None = None) -> np.ndarray:
        sql = "SELECT row FROM vectors WHERE item_id = ?"
        params: list[Any] = [item_id]
        if kinds is not None:
            sql += f" AND kind IN ({_marks(len(kinds))})"
            params += list(kinds)
        return np.array([r for (r,) in self._query(sql + " ORDER BY row", params)], np.int64)

    def describe_rows(self, rows: Iterable[int] | np.ndarray) -> list[tuple[str, str]]:
        """(item_id, kind) per row, in the order given; KeyError for unknown rows.

        From the tables loaded at open: the hot path of every search, so no SQL.
        """
        wanted = np.asarray(rows, dtype=np.int64).ravel()
        unknown = wanted[(wanted < 0) | (wanted >= self.n_vectors)]
        if unknown.size:
            raise KeyError(f"unknown vector rows: {unknown[:10].tolist()}")
        item_ids = self._id_of_item[self._item_of_row[wanted]].tolist()
        kinds = self._kind_names[self._kind_of_row[wanted]].tolist()
        return list(zip(item_ids, kinds, strict=True))

    def item_ids_of_rows(self, rows: Iterable[int] | np.ndarray) -> list[str]:
        return [item_id for item_id, _ in self.describe_rows(rows)]

    def kinds_of_rows(self, rows: Iterable[int] | np.ndarray) -> list[str]:
        return [kind for _, kind in self.describe_rows(rows)]

    def allowed_rows(
        self, kinds: Sequence[str] | None = None, filters: Mapping[str, Any] | None = None
    ) -> np.ndarray | None:
        """Sorted rows passing both restrictions; None when nothing is restricted.

        FilterError for malformed filters (raised before any query runs).
        """
        if isinstance(kinds, str):
            raise FilterError("kinds must be a list of kind names, not a string")
        if kinds is None and not filters:
            return None
        allowed = np.ones(self.n_vectors, dtype=bool)
        if kinds is not None:
            codes = [self._kind_codes[kind] for kind in kinds if kind in self._kind_codes]
            allowed &= np.isin(self._kind_of_row, codes)
        if filters:
            allowed &= self._items_matching(filters)[self._item_of_row]
        return np.flatnonzero(allowed)

    def item_of_rows(self) -> np.ndarray:
        """items.rowid of every vector row (read-only; index = row)."""
        view = self._item_of_row.view()
        view.flags.writeable = False
        return view

    def rows_of_kind(self, kind: str) -> np.ndarray:
        """Boolean mask over all rows: True where the row has this kind."""
        code = self._kind_codes.get(kind)
        if code is None:
            return np.zeros(self.n_vectors, dtype=bool)
        return self._kind_of_row == code

    def item_classes(self, class_field: str | None = None) -> dict[int, str]:
        """Class name of each item by items.rowid: its label, or a metadata field's value.

        Items whose value is missing, empty, a list or an object have no class.
        FilterError for a malformed field name.
        """
        if class_field is None:
            sql, params = "SELECT rowid, label, 'text' FROM items", []
        else:
            path = json_path(class_field)
            sql = "SELECT rowid, json_extract(metadata, ?), json_type(metadata, ?) FROM items"
            params = [path, path]
        classes = {}
        for rowid, value, json_type in self._query(sql, params):
            name = _class_name(value, json_type)
            if name is not None:
                classes[int(rowid)] = name
        return classes

    def _items_matching(self, filters: Mapping[str, Any]) -> np.ndarray:
        """Boolean table indexed by items.rowid; cached per distinct filter."""
        where, params = compile_filters(filters)
        key = json.dumps([where, params], ensure_ascii=False)
        with self._lock:
            cached = self._filter_cache.get(key)
            if cached is not None:
                self._filter_cache.move_to_end(key)
                return cached
            cursor = self._db.execute(f"SELECT rowid FROM items i WHERE {where}", params)
            matched = np.fromiter((rowid for (rowid,) in cursor), dtype=np.int64)
        table = np.zeros(int(self._item_of_row.max(initial=0)) + 1, dtype=bool)
        table[matched[matched < table.size]] = True
        with self._lock:
            self._filter_cache[key] = table
            while len(self._filter_cache) > _FILTER_CACHE_SIZE:
                self._filter_cache.popitem(last=False)
        return table


def _class_name(value: Any, json_type: str | None) -> str | None:
    """A scalar metadata value as a class name; None for null, lists, objects, blanks."""
    if value is None:
        return None
    match json_type:
        case "true" | "false":
            return json_type
        case "text" | "integer" | "real":
            name = str(value).strip()
            return name or None
    return None


# --------------------------------------------------------------------------- writer


class CatalogWriter:
    """Bulk writer for a new catalog file; one transaction per batch.

    Durability settings are relaxed (no journal sync) because a catalog is only
    written inside a staging directory that a crash discards anyway;
    :meth:`finish` builds the indexes and syncs the file once.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        if self.path.exists():
            raise FileExistsError(f"catalog already exists: {self.path}")
        self._db = sqlite3.connect(self.path)
        self._db.execute("PRAGMA journal_mode = MEMORY")
        self._db.execute("PRAGMA synchronous = OFF")
        self._db.executescript(_SCHEMA)

    def add_batch(
        self,
        items: Sequence[tuple[str, str | None, Mapping[str, Any]]],
        vectors: Sequence[tuple[int, str, str]],
        images: Sequence[tuple[str, Path | str]] = (),
        content_hashes: Mapping[str, str] | None = None,
    ) -> None:
        """Insert (id, label, metadata) items, (row, item_id, kind) rows and
        (item_id, image file) paths atomically; ``content_hashes`` by item id."""
        hashes = content_hashes or {}
        encoded = [(i, label, _metadata_json(i, meta), hashes.get(i)) for i, label, meta in items]
        paths = [(item_id, str(path)) for item_id, path in images]
        try:
            with self._db:
                self._db.executemany("INSERT INTO items VALUES (?, ?, ?, ?)", encoded)
                self._db.executemany("INSERT INTO vectors VALUES (?, ?, ?)", vectors)
                self._db.executemany("INSERT INTO images VALUES (?, ?)", paths)
        except sqlite3.IntegrityError as exc:
            raise DuplicateItemError(f"duplicate item id or row in batch: {exc}") from exc

    def copy_from(self, other: Path | str, leave_out: Iterable[str]) -> np.ndarray:
        """Copy every item of the catalog file ``other`` except ``leave_out``, with its
        rows renumbered from 0 in their old order; returns the old row of each new row.

        Must come before :meth:`add_batch` (rows start at 0). The copy runs inside
        SQLite (``ATTACH``), so a large catalog never passes through Python row by row.
        """
        if self._db.execute("SELECT 1 FROM vectors LIMIT 1").fetchone():
            raise ValueError("copy_from must come before any add_batch")
        self._db.execute("ATTACH DATABASE ? AS other", [str(other)])
        try:
            self._db.execute("CREATE TEMP TABLE left_out (id TEXT PRIMARY KEY)")
            self._db.executemany(
                "INSERT OR IGNORE INTO left_out VALUES (?)", [(i,) for i in leave_out]
            )
            kept = "item_id NOT IN (SELECT id FROM left_out)"
            with self._db:
                self._db.execute(
                    "INSERT INTO items SELECT id, label, metadata, content_hash FROM other.items "
                    "WHERE id NOT IN (SELECT id FROM left_out) ORDER BY rowid"
                )
                self._db.execute(
                    "INSERT INTO vectors SELECT ROW_NUMBER() OVER (ORDER BY row) - 1, item_id, "
                    f"kind FROM other.vectors WHERE {kept}"
                )
                self._db.execute(f"INSERT INTO images SELECT * FROM other.images WHERE {kept}")
            old_rows = self._db.execute(f"SELECT row FROM other.vectors WHERE {kept} ORDER BY row")
            rows = np.fromiter((row for (row,) in old_rows), dtype=np.int64)
            self._db.execute("DROP TABLE left_out")
        finally:
            self._db.execute("DETACH DATABASE other")
        return rows

    def finish(self) -> None:
        self._db.executescript(_INDEXES + "ANALYZE;")
        self._db.commit()
        self._db.close()
        with open(self.path, "rb") as fh:
            os.fsync(fh.fileno())

    def abort(self) -> None:
        self._db.close()


def _metadata_json(item_id: str, metadata: Mapping[str, Any]) -> str:
    if not isinstance(metadata, Mapping):
        raise ValueError(f"metadata of item {item_id!r} must be a mapping")
    try:
        return json.dumps(dict(metadata), ensure_ascii=False, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"metadata of item {item_id!r} is not plain JSON: {exc}") from exc
