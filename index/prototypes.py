"""Per-class prototype vectors of a snapshot (few-shot from members, zero-shot from text).

Files in the snapshot directory::

    prototypes.npy    float32 (n_classes, dim), L2-normalised, one row per class
    row_classes.npy   int32 (n_vectors,), the class of each vector row's item (-1: none)
    classes.json      class field, K, seed, text weight; per class its name, member
                      count, support size, zero-shot flag and description

Which class an item is in: its ``label`` (cuisine for kfood, label for food101) or,
when a class field is named at index time, that metadata field's scalar value.

Which rows feed a prototype: each member item contributes one support vector, the
mean of its *image* rows when it has any, else of all its rows. Images are what a
class "looks like" and what /tag compares an upload against; items without a photo
(texts, recipes only) still count. K support items are drawn per class with a seed
(:func:`models.prototype_math.support_indices`; all members by default) and the
prototype is their normalised mean.

Zero-shot: a class with no members (named only in the extra zero-shot classes given
at index time) gets the embedded class name (plus description) as its prototype; a
class with members mixes in its embedded name when ``text_weight`` > 0:
``normalise((1 - w) * shot + w * text)``.

The table is built by every (re-)index from the finished catalog and vectors, so it
always describes the snapshot it sits in. Snapshots written before prototypes
existed load with an empty table.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from index.catalog import Catalog
from index.filters import FilterError, json_path
from index.layout import CorruptSnapshotError, atomic_write_text
from models.encoders.base import Encoder, l2_normalize
from models.prototype_math import check_text_weight, class_text, mix_with_text, support_indices

PROTOTYPES_FILE = "prototypes.npy"
ROW_CLASSES_FILE = "row_classes.npy"
CLASSES_FILE = "classes.json"
_CHUNK_ROWS = 65_536
MAX_ZERO_SHOT_CLASSES = 10_000


class PrototypeOptionsError(ValueError):
    """Prototype options (K, weight, zero-shot classes) that cannot be used."""


@dataclass(frozen=True)
class PrototypeOptions:
    """How a build makes its prototype table; defaults: labels, all members, no text."""

    class_field: str | None = None  # metadata field naming the class; None: the item label
    shots: int | None = None  # K support items per class; None: all members
    seed: int = 0
    text_weight: float = 0.0  # weight of the embedded class name for classes with members
    zero_shot_classes: Mapping[str, str | None] = field(default_factory=dict)  # name -> text

    def __post_init__(self) -> None:
        if self.class_field is not None:
            try:
                json_path(self.class_field)
            except FilterError as exc:
                raise PrototypeOptionsError(f"class field: {exc}") from exc
        if self.shots is not None and self.shots < 1:
            raise PrototypeOptionsError(f"prototype shots K must be positive, got {self.shots}")
        try:
            check_text_weight(self.text_weight)
        except ValueError as exc:
            raise PrototypeOptionsError(str(exc)) from exc
        if len(self.zero_shot_classes) > MAX_ZERO_SHOT_CLASSES:
            raise PrototypeOptionsError(f"at most {MAX_ZERO_SHOT_CLASSES} zero-shot classes")
        if any(not name.strip() for name in self.zero_shot_classes):
            raise PrototypeOptionsError("zero-shot class names must not be empty")

    def to_dict(self) -> dict[str, Any]:
        values = asdict(self)
        values["zero_shot_classes"] = dict(self.zero_shot_classes)
        return values

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> PrototypeOptions:
        return cls(**values)


def read_zero_shot_classes(path: Path | str) -> dict[str, str | None]:
    """Extra class names from a file: a JSON object ``{name: description}``, a JSON
    list of names, or text with one ``name`` or ``name<TAB>description`` per line."""
    text = Path(path).read_text(encoding="utf-8")
    if Path(path).suffix == ".json":
        return _zero_shot_from_json(json.loads(text), str(path))
    classes: dict[str, str | None] = {}
    for line in text.splitlines():
        name, _, description = line.partition("\t")
        if name.strip():
            classes[name.strip()] = description.strip() or None
    return classes


def _zero_shot_from_json(data: Any, where: str) -> dict[str, str | None]:
    if isinstance(data, list) and all(isinstance(name, str) for name in data):
        return {name.strip(): None for name in data if name.strip()}
    if isinstance(data, dict) and all(v is None or isinstance(v, str) for v in data.values()):
        return {str(k).strip(): v for k, v in data.items()}
    raise PrototypeOptionsError(
        f"{where}: expected a list of class names or an object {{name: description}}"
    )


@dataclass(frozen=True)
class ClassInfo:
    name: str
    members: int  # items of the class in the catalog
    support: int  # items whose vectors make the prototype (K, or all members)
    zero_shot: bool  # True: the prototype is the embedded class name alone
    description: str | None = None


@dataclass(frozen=True)
class ClassMatch:
    info: ClassInfo
    score: float  # cosine similarity of the query and the prototype


class PrototypeTable:
    """The classes of one snapshot, their prototypes and each row's class."""

    def __init__(
        self,
        classes: Sequence[ClassInfo],
        vectors: np.ndarray,
        row_classes: np.ndarray,
        options: PrototypeOptions | None = None,
    ) -> None:
        self.classes = tuple(classes)
        self.vectors = np.asarray(vectors, dtype=np.float32)
        self.row_classes = np.asarray(row_classes, dtype=np.int32)
        self.options = options or PrototypeOptions()
        self._position = {info.name: i for i, info in enumerate(self.classes)}

    @classmethod
    def empty(cls, dim: int, n_rows: int) -> PrototypeTable:
        return cls((), np.zeros((0, dim), np.float32), np.full(n_rows, -1, np.int32))

    def __len__(self) -> int:
        return len(self.classes)

    @property
    def n_zero_shot(self) -> int:
        return sum(info.zero_shot for info in self.classes)

    def get(self, name: str) -> ClassInfo | None:
        position = self._position.get(name)
        return None if position is None else self.classes[position]

    def vector_of(self, name: str) -> np.ndarray | None:
        """The (dim,) prototype of a class, or None for an unknown class."""
        position = self._position.get(name)
        return None if position is None else self.vectors[position]

    def scores(self, query: np.ndarray) -> np.ndarray:
        """(n_classes,) cosine similarities of a unit (dim,) query to every prototype."""
        return self.vectors @ np.asarray(query, dtype=np.float32).ravel()

    def top(self, query: np.ndarray, n: int) -> list[ClassMatch]:
        """The n best classes for a unit query, best first."""
        if n < 1 or not self.classes:
            return []
        scores = self.scores(query)
        order = np.argsort(-scores, kind="stable")[:n]
        return [ClassMatch(self.classes[i], float(scores[i])) for i in order]

    def class_name_of_row(self, row: int) -> str | None:
        position = int(self.row_classes[row])
        return self.classes[position].name if position >= 0 else None

    # ------------------------------------------------------------------ files

    def save(self, directory: Path) -> None:
        _save_npy(directory / PROTOTYPES_FILE, self.vectors)
        _save_npy(directory / ROW_CLASSES_FILE, self.row_classes)
        payload = {
            "options": self.options.to_dict(),
            "classes": [asdict(info) for info in self.classes],
        }
        text = json.dumps(payload, ensure_ascii=False, indent=1)
        atomic_write_text(directory / CLASSES_FILE, text + "\n")

    @classmethod
    def load(cls, directory: Path, n_rows: int, dim: int) -> PrototypeTable:
        """Read a snapshot's table (empty when it predates prototypes); shapes checked."""
        if not (directory / CLASSES_FILE).exists():
            return cls.empty(dim, n_rows)
        try:
            payload = json.loads((directory / CLASSES_FILE).read_text(encoding="utf-8"))
            classes = [ClassInfo(**info) for info in payload["classes"]]
            options = PrototypeOptions.from_dict(payload["options"])
            vectors = np.load(directory / PROTOTYPES_FILE)
            row_classes = np.load(directory / ROW_CLASSES_FILE)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CorruptSnapshotError(f"prototypes in {directory} cannot be read: {exc}") from exc
        if vectors.shape != (len(classes), dim) or row_classes.shape != (n_rows,):
            raise CorruptSnapshotError(
                f"prototypes in {directory} are {vectors.shape} / rows {row_classes.shape}, "
                f"expected {(len(classes), dim)} / {(n_rows,)}"
            )
        if row_classes.size and int(row_classes.max(initial=-1)) >= len(classes):
            raise CorruptSnapshotError(f"{directory / ROW_CLASSES_FILE} names unknown classes")
        return cls(classes, vectors, row_classes, options)


def _save_npy(path: Path, array: np.ndarray) -> None:
    """np.save to a temp file beside ``path``, fsync, then os.replace."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
    try:
        with open(tmp, "wb") as fh:
            np.save(fh, array)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


# --------------------------------------------------------------------------- building


@dataclass(frozen=True)
class _Membership:
    names: list[str]
    item_class: np.ndarray  # class position per items.rowid (-1: none)
    row_classes: np.ndarray  # class position per vector row


def _membership(catalog: Catalog, options: PrototypeOptions) -> _Membership:
    item_of_row = catalog.item_of_rows()
    by_item = catalog.item_classes(options.class_field)
    names = sorted(set(by_item.values()) | set(options.zero_shot_classes))
    position = {name: i for i, name in enumerate(names)}
    size = max(int(item_of_row.max(initial=0)), max(by_item, default=0)) + 1
    item_class = np.full(size, -1, dtype=np.int32)
    for rowid, name in by_item.items():
        item_class[rowid] = position[name]
    return _Membership(names, item_class, item_class[item_of_row])


def _row_weights(
    catalog: Catalog, membership: _Membership, options: PrototypeOptions
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(weight per row, members per class, support size per class).

    A support item's chosen rows (its image rows, else all rows) each weigh
    1 / their count, so every support item adds its mean row once.
    """
    item_of_row = catalog.item_of_rows()
    is_image = catalog.rows_of_kind("image")
    has_image = np.zeros(membership.item_class.size, dtype=bool)
    has_image[item_of_row[is_image]] = True
    chosen = is_image | ~has_image[item_of_row]
    n_chosen = np.bincount(item_of_row[chosen], minlength=membership.item_class.size)
    in_support, members, support = _draw_support(membership, options)
    weights = np.where(
        chosen & in_support[item_of_row], 1.0 / np.maximum(n_chosen[item_of_row], 1), 0.0
    )
    return weights.astype(np.float32), members, support


def _draw_support(
    membership: _Membership, options: PrototypeOptions
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Items drawn as support (mask by rowid), member and support counts per class."""
    n_classes = len(membership.names)
    classed = np.flatnonzero(membership.item_class >= 0)  # rowids, ascending = catalog order
    codes = membership.item_class[classed]
    order = np.argsort(codes, kind="stable")
    starts = np.searchsorted(codes[order], np.arange(n_classes + 1))
    in_support = np.zeros(membership.item_class.size, dtype=bool)
    members = np.diff(starts)
    support = np.zeros(n_classes, dtype=np.int64)
    for c, name in enumerate(membership.names):
        items = classed[order[starts[c] : starts[c + 1]]]
        drawn = items[support_indices(items.size, options.shots, options.seed, name)]
        in_support[drawn] = True
        support[c] = drawn.size
    return in_support, members, support


def _weighted_sums(
    vectors: np.ndarray, row_classes: np.ndarray, weights: np.ndarray, n_classes: int
) -> np.ndarray:
    sums = np.zeros((n_classes, vectors.shape[1]), dtype=np.float64)
    for start in range(0, vectors.shape[0], _CHUNK_ROWS):
        stop = start + _CHUNK_ROWS
        picked = np.flatnonzero(weights[start:stop]) + start
        if picked.size:
            chunk = np.asarray(vectors[picked], dtype=np.float64) * weights[picked, None]
            np.add.at(sums, row_classes[picked], chunk)
    return sums.astype(np.float32)


def _with_text(
    shot: np.ndarray,
    names: list[str],
    zero_shot: np.ndarray,
    options: PrototypeOptions,
    encoder: Encoder,
) -> np.ndarray:
    """Zero-shot classes take their embedded name; others mix it in by ``text_weight``."""
    wanted = np.flatnonzero(zero_shot | (options.text_weight > 0))
    if wanted.size == 0:
        return shot
    descriptions = options.zero_shot_classes
    texts = [class_text(names[c], descriptions.get(names[c])) for c in wanted]
    text = l2_normalize(encoder.encode_texts(texts))
    mixed = mix_with_text(shot[wanted], text, options.text_weight)
    prototypes = shot.copy()
    prototypes[wanted] = np.where(zero_shot[wanted][:, None], text, mixed)
    return prototypes


def build_prototype_table(
    catalog: Catalog, vectors: np.ndarray, encoder: Encoder, options: PrototypeOptions
) -> PrototypeTable:
    """The prototype table of a finished catalog and its (n_vectors, dim) vectors."""
    membership = _membership(catalog, options)
    weights, members, support = _row_weights(catalog, membership, options)
    shot = l2_normalize(_weighted_sums(vectors, membership.row_classes, weights, len(members)))
    zero_shot = members == 0
    prototypes = _with_text(shot, membership.names, zero_shot, options, encoder)
    descriptions = options.zero_shot_classes
    classes = [
        ClassInfo(
            name, int(members[c]), int(support[c]), bool(zero_shot[c]), descriptions.get(name)
        )
        for c, name in enumerate(membership.names)
    ]
    return PrototypeTable(classes, prototypes, membership.row_classes, options)
