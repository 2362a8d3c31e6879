"""English queries for Korean dishes: does the query lexicon help?

Each query names a dish in English; its targets are the kfood recipes whose title
contains all the given Korean substrings. Ranks are over every recipe row of a
kfood snapshot built with the model, with and without lexicon expansion, as the
API's /search reads a text query.

    python scripts/english_queries.py --index-dir var/index-food-v1 --model food-v1

The queries were written from general knowledge of Korean dishes, not tuned: the
lexicon was not edited after seeing these results (it has "bean sprouts" but not
"bean sprout", so one query gets a poor gloss).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from index.layout import read_current
from index.snapshot import Snapshot
from models.encoders import l2_normalize
from models.lexicon import load_lexicon
from models.registry import load_encoder

QUERIES: list[tuple[str, list[str]]] = [
    ("kimchi stew", ["김치찌개"]),
    ("spicy pork stew", ["돼지고기", "찌개"]),
    ("soybean paste stew", ["된장찌개"]),
    ("bibimbap", ["비빔밥"]),
    ("bulgogi", ["불고기"]),
    ("japchae", ["잡채"]),
    ("fried chicken", ["닭", "튀김"]),
    ("kimbap", ["김밥"]),
    ("braised mackerel", ["고등어조림"]),
    ("spicy rice cakes", ["떡볶이"]),
    ("dumplings", ["만두"]),
    ("cold noodles", ["냉면"]),
    ("potato pancake", ["감자전"]),
    ("bean sprout soup", ["콩나물국"]),
    ("grilled pork belly", ["삼겹살"]),
    ("tofu stew", ["두부", "찌개"]),
    ("pumpkin porridge", ["호박죽"]),
    ("beef soup", ["쇠고기", "국"]),
    ("seafood pancake", ["해물파전"]),
]


def ranks(queries: np.ndarray, recipes: np.ndarray, targets: list[np.ndarray]) -> np.ndarray:
    similarity = queries @ recipes.T
    best = np.array([similarity[i, t].max() for i, t in enumerate(targets)])
    return np.array(
        [int((np.delete(similarity[i], t) >= best[i]).sum()) + 1 for i, t in enumerate(targets)]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index-dir", type=Path, default=Path("var/index-food-v1"))
    parser.add_argument("--model", default="food-v1")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    encoder = load_encoder(args.model, device="cpu")
    snapshot = Snapshot.open(
        args.index_dir / str(read_current(args.index_dir)), encoder.fingerprint
    )
    rows = [r for r in range(snapshot.manifest.n_vectors)]
    kinds = snapshot.catalog.kinds_of_rows(np.asarray(rows))
    recipe_rows = np.asarray([r for r, k in zip(rows, kinds, strict=True) if k == "recipe"])
    ids = snapshot.catalog.item_ids_of_rows(recipe_rows)
    titles = [snapshot.get_item(i).metadata["title"] for i in ids]  # type: ignore[union-attr]
    recipes = snapshot.vectors[recipe_rows]
    targets = [
        np.asarray([j for j, t in enumerate(titles) if all(s in t for s in subs)])
        for _, subs in QUERIES
    ]
    texts = [q for q, _ in QUERIES]
    lexicon = load_lexicon("en-ko-food")
    plain = encoder.encode_texts(texts)
    glosses = [lexicon.gloss(q) for q in texts]
    expanded = plain.copy()
    glossed = [i for i, g in enumerate(glosses) if g]
    expanded[glossed] = l2_normalize(
        plain[glossed] + encoder.encode_texts([glosses[i] for i in glossed])
    )
    result = {}
    for name, vectors in (("plain", plain), ("lexicon", expanded)):
        r = ranks(vectors, recipes, targets)
        result[name] = {f"R@{k}": float((r <= k).mean()) for k in (1, 5, 10)}
        result[name]["ranks"] = dict(zip(texts, r.tolist(), strict=True))
    print(json.dumps({k: {m: v for m, v in d.items() if m != "ranks"} for k, d in result.items()}))
    for q, g in zip(texts, glosses, strict=True):
        plain_rank, lexicon_rank = result["plain"]["ranks"][q], result["lexicon"]["ranks"][q]
        print(f"{q:<20} {g or '-':<16} plain {plain_rank:>4}  lexicon {lexicon_rank:>4}")
    if args.json:
        args.json.write_text(json.dumps(result, ensure_ascii=False, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
