"""Dataset readers: folders on disk -> lazily iterated :class:`CatalogRecord` s.

``open_dataset(source, fmt)`` returns a :class:`Dataset`: ``len()`` counts
items without decoding any image, iteration yields records one at a time with
absolute ``image_path`` s (images are not opened here; see
``models.images.load_image``). Anything malformed raises :class:`DatasetError`
(a ``ValueError``) saying what was expected where.

Formats (``FORMATS``):

``kfood``
    ``recipes.jsonl``, one recipe per line: ``id``, ``title``, ``summary``,
    ``cuisine``, ``cooking_time`` ("60분"), ``level``, ``ingredients``
    (``[{name, amount, kind}]``), ``instructions`` ([str]), ``image`` (relative
    path). Record: id, recipe (title, ingredient names, instructions), image,
    label = cuisine, metadata with ``cooking_minutes`` parsed (None if not),
    ``ingredients`` (names, what filters match), ``amounts`` (aligned with
    ``ingredients``: the source ``amount`` string, or None) and ``instructions``,
    for display.
``food101``
    ``labels.tsv`` (header ``image<TAB>label``) and ``classes.txt``. Record id
    ``<label>/<file stem>``, image, label, metadata ``{label}``.
``flickr``
    ``captions.tsv`` (header ``image<TAB>caption``), several lines per image.
    One record per image (first-seen order): id = file stem, texts = its
    captions, metadata ``{captions}``.
``jsonl``
    A generic catalog: ``items.jsonl`` in the folder, or the ``.jsonl`` file
    given directly. One JSON object per line (blank lines are skipped)::

        {"id": "sku-1",                      # required, unique, string (or int)
         "image": "images/sku-1.jpg",        # optional, relative to the file's folder
         "text": "a caption",                # optional
         "texts": ["more", "captions"],      # optional (joined after "text")
         "recipe": {"title": "...",          # optional; title required inside
                    "ingredients": ["..."], "instructions": ["..."]},
         "label": "class name",              # optional
         "metadata": {...}}                  # optional, any JSON object

    Other keys are refused (put them under ``metadata``); every error names
    the line number.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from models.types import CatalogRecord, Recipe

FORMATS = ("kfood", "food101", "flickr", "jsonl")


class DatasetError(ValueError):
    """A dataset folder or file is missing or malformed."""


# -- helpers -----------------------------------------------------------------------------------

_HOURS = re.compile(r"(\d+(?:\.\d+)?)\s*(?:시간|h(?:ours?|rs?)?\b)", re.IGNORECASE)
_MINUTES = re.compile(r"(\d+)\s*(?:분|m(?:in(?:ute)?s?)?\b)", re.IGNORECASE)


def parse_cooking_minutes(value: Any) -> int | None:
    """``"60분"`` -> 60, ``"1시간 30분"`` -> 90, ``"2시간 이상"`` -> 120; None if unparseable."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return int(value) if value >= 0 else None
    if not isinstance(value, str):
        return None
    text = value.strip()
    if text.isdigit():
        return int(text)
    hours = _HOURS.search(text)
    minutes = _MINUTES.search(text)
    if not hours and not minutes:
        return None
    total = 0.0
    if hours:
        total += float(hours.group(1)) * 60
    if minutes:
        total += int(minutes.group(1))
    return int(round(total))


def _absolute(root: Path, relpath: str) -> Path:
    """A record's image path inside its dataset folder; DatasetError when it leaves it
    (``../``, an absolute path): a catalog indexes its own files, nothing else."""
    path = Path(os.path.normpath(root / relpath))
    if not path.is_relative_to(os.path.normpath(root)):
        raise DatasetError(f"image path {relpath!r} leaves the dataset folder {root}")
    return path


def _require_file(path: Path, fmt: str, what: str) -> Path:
    if not path.is_file():
        raise DatasetError(f"{fmt} dataset: expected {what} at {path}, but it does not exist")
    return path


def _read_tsv(path: Path, header: tuple[str, str]) -> Iterator[tuple[int, list[str]]]:
    """(line number, fields) for each data row, after checking the header."""
    with open(path, encoding="utf-8", newline="") as fp:
        reader = csv.reader(fp, delimiter="\t", quoting=csv.QUOTE_NONE)
        first = next(reader, None)
        if first is None or tuple(c.strip() for c in first) != header:
            raise DatasetError(
                f"{path}: line 1 must be the header {'<TAB>'.join(header)!r}, got {first!r}"
            )
        for row in reader:
            if not row or all(not c.strip() for c in row):
                continue
            if len(row) != len(header) or not all(c.strip() for c in row):
                raise DatasetError(
                    f"{path}: line {reader.line_num}: expected {len(header)} non-empty "
                    f"tab-separated fields {header}, got {row!r}"
                )
            yield reader.line_num, [c.strip() for c in row]


def _read_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    with open(path, encoding="utf-8") as fp:
        for lineno, line in enumerate(fp, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DatasetError(f"{path}: line {lineno}: invalid JSON: {exc}") from exc
            if not isinstance(obj, dict):
                raise DatasetError(
                    f"{path}: line {lineno}: expected a JSON object, got {type(obj).__name__}"
                )
            yield lineno, obj


def _count_nonblank_lines(path: Path) -> int:
    with open(path, encoding="utf-8") as fp:
        return sum(1 for line in fp if line.strip())


def _amount(value: Any) -> str | None:
    """An ingredient's amount as shown to people: the source string, None if absent."""
    if isinstance(value, str):
        return value.strip() or None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return None


def _str_list(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise DatasetError(f"{where} must be a list of strings")
    return tuple(value)


# -- datasets ----------------------------------------------------------------------------------


class Dataset:
    """A lazily read catalog: ``len()`` is cheap, iteration yields records."""

    fmt: str = ""

    def __init__(self, root: Path) -> None:
        self.root = root

    def __len__(self) -> int:
        raise NotImplementedError

    def __iter__(self) -> Iterator[CatalogRecord]:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.root)!r})"


class KFoodDataset(Dataset):
    fmt = "kfood"

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.index = _require_file(root / "recipes.jsonl", self.fmt, "recipes.jsonl")

    def __len__(self) -> int:
        return _count_nonblank_lines(self.index)

    def __iter__(self) -> Iterator[CatalogRecord]:
        seen: set[str] = set()
        for lineno, obj in _read_jsonl(self.index):
            where = f"{self.index}: line {lineno}"
            try:
                rid = str(obj["id"])
                title = obj["title"]
                ingredients = obj["ingredients"]
                instructions = obj["instructions"]
                image = obj["image"]
            except KeyError as exc:
                raise DatasetError(f"{where}: missing key {exc.args[0]!r}") from exc
            if not rid or rid in seen:
                raise DatasetError(f"{where}: id {rid!r} is empty or repeated")
            seen.add(rid)
            if not isinstance(title, str) or not isinstance(image, str) or not image:
                raise DatasetError(f"{where}: 'title' and 'image' must be strings")
            if not isinstance(ingredients, list) or not all(
                isinstance(i, dict) and isinstance(i.get("name"), str) for i in ingredients
            ):
                raise DatasetError(f"{where}: 'ingredients' must be a list of {{name, ...}}")
            names = tuple(i["name"] for i in ingredients)
            steps = _str_list(instructions, f"{where}: 'instructions'")
            cooking_time = obj.get("cooking_time")
            yield CatalogRecord(
                id=rid,
                metadata={
                    "title": title,
                    "summary": obj.get("summary"),
                    "cuisine": obj.get("cuisine"),
                    "cooking_time": cooking_time,
                    "cooking_minutes": parse_cooking_minutes(cooking_time),
                    "level": obj.get("level"),
                    "ingredients": list(names),
                    "amounts": [_amount(i.get("amount")) for i in ingredients],
                    "instructions": list(steps),
                    "image": image,
                },
                image_path=_absolute(self.root, image),
                recipe=Recipe(title=title, ingredients=names, instructions=steps),
                label=obj.get("cuisine") or None,
            )


class Food101Dataset(Dataset):
    fmt = "food101"

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.index = _require_file(root / "labels.tsv", self.fmt, "labels.tsv (image<TAB>label)")
        classes_path = _require_file(root / "classes.txt", self.fmt, "classes.txt")
        self.classes = tuple(
            line.strip()
            for line in classes_path.read_text(encoding="utf-8").splitlines()
            if line.strip()
        )
        if not self.classes:
            raise DatasetError(f"{classes_path} lists no classes")

    def __len__(self) -> int:
        return sum(1 for _ in _read_tsv(self.index, ("image", "label")))

    def __iter__(self) -> Iterator[CatalogRecord]:
        known = set(self.classes)
        for lineno, (image, label) in _read_tsv(self.index, ("image", "label")):
            if label not in known:
                raise DatasetError(
                    f"{self.index}: line {lineno}: label {label!r} is not in classes.txt"
                )
            yield CatalogRecord(
                id=f"{label}/{Path(image).stem}",
                metadata={"label": label},
                image_path=_absolute(self.root, image),
                label=label,
            )


class FlickrDataset(Dataset):
    fmt = "flickr"

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.index = _require_file(
            root / "captions.tsv", self.fmt, "captions.tsv (image<TAB>caption)"
        )

    def _grouped(self) -> dict[str, list[str]]:
        groups: dict[str, list[str]] = {}
        for _, (image, caption) in _read_tsv(self.index, ("image", "caption")):
            groups.setdefault(image, []).append(caption)
        return groups

    def __len__(self) -> int:
        return len({image for _, (image, _c) in _read_tsv(self.index, ("image", "caption"))})

    def __iter__(self) -> Iterator[CatalogRecord]:
        for image, captions in self._grouped().items():
            yield CatalogRecord(
                id=Path(image).stem,
                metadata={"captions": list(captions)},
                image_path=_absolute(self.root, image),
                texts=tuple(captions),
            )


_JSONL_KEYS = {"id", "image", "text", "texts", "recipe", "label", "metadata"}


class JsonlDataset(Dataset):
    fmt = "jsonl"

    def __init__(self, source: Path) -> None:
        if source.is_dir():
            index = _require_file(source / "items.jsonl", self.fmt, "items.jsonl")
        elif source.suffix == ".jsonl":
            index = _require_file(source, self.fmt, "a .jsonl file")
        else:
            raise DatasetError(
                "jsonl dataset: expected a folder holding items.jsonl or a .jsonl file, "
                f"got {source}"
            )
        super().__init__(index.parent)
        self.index = index

    def __len__(self) -> int:
        return _count_nonblank_lines(self.index)

    def __iter__(self) -> Iterator[CatalogRecord]:
        seen: set[str] = set()
        for lineno, obj in _read_jsonl(self.index):
            record = self._record(obj, f"{self.index}: line {lineno}")
            if record.id in seen:
                raise DatasetError(f"{self.index}: line {lineno}: id {record.id!r} is repeated")
            seen.add(record.id)
            yield record

    def _record(self, obj: dict[str, Any], where: str) -> CatalogRecord:
        unknown = sorted(set(obj) - _JSONL_KEYS)
        if unknown:
            raise DatasetError(
                f"{where}: unknown keys {unknown}; allowed: {sorted(_JSONL_KEYS)} "
                "(put extra fields under 'metadata')"
            )
        rid = obj.get("id")
        if isinstance(rid, int) and not isinstance(rid, bool):
            rid = str(rid)
        if not isinstance(rid, str) or not rid.strip():
            raise DatasetError(f"{where}: 'id' is required and must be a non-empty string")
        image = obj.get("image")
        if image is not None and (not isinstance(image, str) or not image):
            raise DatasetError(f"{where}: 'image' must be a non-empty relative path string")
        texts: list[str] = []
        if obj.get("text") is not None:
            if not isinstance(obj["text"], str):
                raise DatasetError(f"{where}: 'text' must be a string")
            texts.append(obj["text"])
        if obj.get("texts") is not None:
            texts.extend(_str_list(obj["texts"], f"{where}: 'texts'"))
        recipe = None
        if obj.get("recipe") is not None:
            raw = obj["recipe"]
            if not isinstance(raw, dict) or not isinstance(raw.get("title"), str):
                raise DatasetError(f"{where}: 'recipe' must be an object with a string 'title'")
            extra = sorted(set(raw) - {"title", "ingredients", "instructions"})
            if extra:
                raise DatasetError(f"{where}: 'recipe' has unknown keys {extra}")
            recipe = Recipe(
                title=raw["title"],
                ingredients=_str_list(raw.get("ingredients", []), f"{where}: 'recipe.ingredients'"),
                instructions=_str_list(
                    raw.get("instructions", []), f"{where}: 'recipe.instructions'"
                ),
            )
        label = obj.get("label")
        if label is not None and not isinstance(label, str):
            raise DatasetError(f"{where}: 'label' must be a string")
        metadata = obj.get("metadata", {})
        if metadata is None:
            metadata = {}
        if not isinstance(metadata, dict):
            raise DatasetError(f"{where}: 'metadata' must be a JSON object")
        if image is None and not texts and recipe is None:
            raise DatasetError(f"{where}: item has no 'image', 'text(s)' or 'recipe' to index")
        return CatalogRecord(
            id=rid,
            metadata=dict(metadata),
            image_path=_absolute(self.root, image) if image else None,
            texts=tuple(texts),
            recipe=recipe,
            label=label or None,
        )


def open_dataset(source: Path | str, fmt: str) -> Dataset:
    """Open the dataset at ``source`` in format ``fmt`` (one of ``FORMATS``)."""
    source = Path(source).expanduser().absolute()
    if fmt not in FORMATS:
        raise DatasetError(f"unknown dataset format {fmt!r}; expected one of {', '.join(FORMATS)}")
    if not source.exists():
        raise DatasetError(f"{fmt} dataset: {source} does not exist")
    if fmt != "jsonl" and not source.is_dir():
        raise DatasetError(f"{fmt} dataset: expected a folder at {source}, got a file")
    match fmt:
        case "kfood":
            return KFoodDataset(source)
        case "food101":
            return Food101Dataset(source)
        case "flickr":
            return FlickrDataset(source)
        case _:
            return JsonlDataset(source)


def _unit_hash(record_id: str, seed: int) -> float:
    digest = hashlib.sha256(f"{seed}:{record_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_records(
    records: Iterable[CatalogRecord], val_fraction: float, seed: int = 0
) -> tuple[list[CatalogRecord], list[CatalogRecord]]:
    """Deterministic train/validation split by a hash of (seed, id).

    A record's side depends only on its id and the seed, so adding records
    never moves existing ones between sides.
    """
    if not 0.0 <= val_fraction <= 1.0:
        raise ValueError(f"val_fraction must be in [0, 1], got {val_fraction}")
    train: list[CatalogRecord] = []
    val: list[CatalogRecord] = []
    for record in records:
        (val if _unit_hash(record.id, seed) < val_fraction else train).append(record)
    return train, val
