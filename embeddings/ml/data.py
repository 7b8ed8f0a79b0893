"""Catalog items, lookbooks (the item graph) and loaders for the datasets we train on.

A dataset is a list of `Item`s plus lookbooks (`lookbook id -> item ids`): items that a
person put together (a board, a room, one product's colour variants). Training draws
neighbour pairs from lookbooks. No torch here: loaders are cheap to call anywhere.

Loaders take the dataset directory as an argument; nothing here knows where the shared
datasets live.
"""

from __future__ import annotations

import csv
import json
import random
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from embeddings.ml.errors import DatasetError


@dataclass(frozen=True)
class Item:
    item_id: str  # unique within the dataset
    image_path: str  # absolute path, or relative to the dataset's image_root
    text: str  # title / description / attributes, as one string
    category: str | None = None  # label for the optional category head; None = unlabelled


@dataclass(frozen=True)
class LookQuery:
    """A scene photo whose items are known: a shop-the-look query (IKEA rooms)."""

    query_id: str  # e.g. the room name
    image_path: str  # the scene photo
    item_ids: tuple[str, ...]  # catalog items shown in it
    kind: str = ""  # e.g. the room type


@dataclass
class ItemDataset:
    name: str  # short name for model cards ("clothing", "hm", ...)
    items: list[Item]  # catalog items, in a stable order
    lookbooks: dict[str, list[str]] = field(default_factory=dict)  # lookbook id -> item ids
    image_root: Path | None = None  # base for relative Item.image_path
    queries: list[LookQuery] = field(default_factory=list)  # scene queries, never trained on
    licence: str = ""  # what the data may be used for (goes into the model card)

    def __post_init__(self) -> None:
        self._by_id = {it.item_id: it for it in self.items}
        if len(self._by_id) != len(self.items):
            raise DatasetError(f"{self.name}: duplicate item ids")

    def __len__(self) -> int:
        return len(self.items)

    def item(self, item_id: str) -> Item:
        """Return the item with `item_id` (KeyError if absent)."""
        return self._by_id[item_id]

    def image_file(self, item: Item) -> Path:
        """Return the absolute path of an item's image."""
        p = Path(item.image_path)
        return p if p.is_absolute() or self.image_root is None else self.image_root / p

    def item_lookbooks(self) -> dict[str, list[str]]:
        """Return item id -> ids of the lookbooks that contain it (only items in one)."""
        out: dict[str, list[str]] = defaultdict(list)
        for lb, members in self.lookbooks.items():
            for item_id in members:
                out[item_id].append(lb)
        return dict(out)

    def categories(self) -> list[str]:
        """Return the sorted distinct categories (the category head's classes)."""
        return sorted({it.category for it in self.items if it.category is not None})

    def subset(self, item_ids: Iterable[str], name: str | None = None) -> ItemDataset:
        """Return a dataset with only these items; lookbooks shrink to match (size >= 2)."""
        keep = set(item_ids)
        lookbooks = {
            lb: [i for i in members if i in keep] for lb, members in self.lookbooks.items()
        }
        return ItemDataset(
            name=name or self.name,
            items=[it for it in self.items if it.item_id in keep],
            lookbooks={lb: m for lb, m in lookbooks.items() if len(m) >= 2},
            image_root=self.image_root,
            queries=[q for q in self.queries if keep.intersection(q.item_ids)],
            licence=self.licence,
        )

    def split_by_lookbook(
        self, holdout_fraction: float, seed: int, max_lookbook_share: float = 0.05
    ) -> tuple[ItemDataset, ItemDataset]:
        """Return (train, heldout), holding out whole lookbooks so none straddles the split.

        Lookbooks are drawn in a seeded order until `holdout_fraction` of the items is held
        out; lookbooks larger than `max_lookbook_share` of the items stay in training so one
        huge board cannot be the whole test set. Items in a held-out lookbook are held out
        even if they are also in other lookbooks.
        """
        rng = random.Random(seed)  # noqa: S311 - a reproducible split, not a secret
        lbs = sorted(self.lookbooks)
        rng.shuffle(lbs)
        limit = max(2, int(max_lookbook_share * len(self.items)))
        target = int(holdout_fraction * len(self.items))
        held: set[str] = set()
        for lb in lbs:
            if len(held) >= target:
                break
            if len(self.lookbooks[lb]) <= limit:
                held.update(self.lookbooks[lb])
        train_ids = [it.item_id for it in self.items if it.item_id not in held]
        return self.subset(train_ids, self.name), self.subset(held, f"{self.name}-heldout")


# ---- the on-disk format of the framework-free training command ---------------------------
def save_jsonl_dataset(ds: ItemDataset, path: Path) -> Path:
    """Write items.jsonl + lookbooks.json (+ meta.json) into `path`; return it."""
    path.mkdir(parents=True, exist_ok=True)
    with (path / "items.jsonl").open("w") as f:
        for it in ds.items:
            f.write(json.dumps(asdict(it)) + "\n")
    (path / "lookbooks.json").write_text(json.dumps(ds.lookbooks, indent=1))
    meta = {"name": ds.name, "licence": ds.licence, "image_root": str(ds.image_root or "")}
    (path / "meta.json").write_text(json.dumps(meta, indent=1))
    return path


def load_jsonl_dataset(path: Path) -> ItemDataset:
    """Read the format written by `save_jsonl_dataset`.

    `items.jsonl`: one {"item_id", "image_path", "text", "category"} per line;
    `lookbooks.json`: {lookbook_id: [item_id, ...]} (optional); `meta.json`: {"name",
    "licence", "image_root"} (optional; image_root defaults to `path/images`, relative
    roots are relative to `path`).
    """
    items_file = path / "items.jsonl"
    if not items_file.is_file():
        raise DatasetError(f"no items.jsonl in {path}")
    items = []
    for n, line in enumerate(items_file.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            items.append(
                Item(
                    str(row["item_id"]), row["image_path"], row.get("text", ""), row.get("category")
                )
            )
        except (ValueError, KeyError) as exc:
            raise DatasetError(f"{items_file}:{n}: bad item row: {exc}") from exc
    lb_file = path / "lookbooks.json"
    lookbooks = json.loads(lb_file.read_text()) if lb_file.is_file() else {}
    meta_file = path / "meta.json"
    meta = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
    root = Path(meta.get("image_root") or "images")
    return ItemDataset(
        name=meta.get("name", path.name),
        items=items,
        lookbooks={str(k): [str(i) for i in v] for k, v in lookbooks.items()},
        image_root=root if root.is_absolute() else path / root,
        licence=meta.get("licence", ""),
    )


# ---- the three shared datasets ------------------------------------------------------------
def _require(path: Path, *names: str) -> None:
    for name in names:
        if not (path / name).exists():
            raise DatasetError(f"{path / name} not found (is {path} the dataset directory?)")


def _grouped(
    name: str,
    items: list[Item],
    groups: dict[str, list[str]],
    image_root: Path,
    licence: str,
    *,
    queries: list[LookQuery] | None = None,
) -> ItemDataset:
    """A dataset whose lookbooks are its groups of two or more items (one relates nothing)."""
    return ItemDataset(
        name=name,
        items=items,
        lookbooks={k: v for k, v in groups.items() if len(v) >= 2},
        image_root=image_root,
        queries=queries or [],
        licence=licence,
    )


def clothing_text(label: str, kids: bool, colour: str | None = None) -> str:
    """Return the item text for a clothing row: the label (+ kids, + a colour word)."""
    noun = {"Not sure": "clothing item", "Skip": "clothing item", "Other": "clothing item"}.get(
        label, label.lower()
    )
    words = " ".join(w for w in ("kids" if kids else "", colour or "", noun) if w)
    return f"a photo of a {words}"


def load_clothing(path: Path, colour_words: bool = False) -> ItemDataset:
    """Return the clothing set: each sender's photos form a lookbook (a board), CC0.

    With `colour_words`, each item's text also names the garment's colour as read off its
    photo (`embeddings.ml.colour_names`; about 5 ms a photo): the set has no colour text.
    """
    _require(path, "images.csv", "images")
    items, boards = [], defaultdict(list)
    if colour_words:
        from embeddings.ml.colour_names import garment_colour
    with (path / "images.csv").open(newline="") as f:
        for row in csv.DictReader(f):
            kids = row["kids"].strip().lower() == "true"
            colour = (
                garment_colour(path / "images" / f"{row['image']}.jpg") if colour_words else None
            )
            item = Item(
                item_id=row["image"],
                image_path=f"{row['image']}.jpg",
                text=clothing_text(row["label"], kids, colour),
                category=None if row["label"] in ("Skip", "Not sure") else row["label"],
            )
            items.append(item)
            boards[f"sender:{row['sender_id']}"].append(item.item_id)
    return _grouped(
        "clothing", items, boards, path / "images", "CC0 1.0 (public domain dedication)"
    )


def load_hm(path: Path) -> ItemDataset:
    """Return H&M articles; lookbooks = shared product_code and shared section_name.

    Non-commercial use only: for evaluation and experiments, never for shipped weights.
    """
    _require(path, "articles.csv", "images")
    items, groups = [], defaultdict(list)
    with (path / "articles.csv").open(newline="") as f:
        for row in csv.DictReader(f):
            text = (
                f"{row['prod_name']}. {row['product_type_name']}, {row['colour_group_name']}. "
                f"{row['detail_desc']}"
            ).strip()
            item = Item(
                row["article_id"], f"{row['article_id']}.jpg", text, row["product_type_name"]
            )
            items.append(item)
            groups[f"product:{row['product_code']}"].append(item.item_id)
            groups[f"section:{row['section_name']}"].append(item.item_id)
    return _grouped("hm", items, groups, path / "images", "H&M data: non-commercial use only")


def load_ikea(path: Path) -> ItemDataset:
    """Return IKEA products; rooms are lookbooks, room photos are shop-the-look queries.

    Non-commercial use only: for evaluation and experiments, never for shipped weights.
    """
    _require(path, "products.json", "rooms.json", "products")
    products = json.loads((path / "products.json").read_text())
    rooms = json.loads((path / "rooms.json").read_text())
    items = [
        Item(
            item_id=p["id"],
            image_path=str(path / "products" / f"{p['id']}.jpg"),
            text=". ".join(
                s for s in (p["name"], f"{p['type']}, {p['color']}", p["description"]) if s
            ),
            category=p.get("category") or None,
        )
        for p in products
    ]
    known = {it.item_id for it in items}
    lookbooks = {f"room:{r['room']}": [i for i in r["products"] if i in known] for r in rooms}
    queries = [
        LookQuery(
            r["room"],
            str(path / "rooms" / f"{r['room']}.jpg"),
            tuple(i for i in r["products"] if i in known),
            r.get("room_type", ""),
        )
        for r in rooms
    ]
    return _grouped(
        "ikea", items, lookbooks, path, "IKEA images: non-commercial use only", queries=queries
    )


LOADERS = {"clothing": load_clothing, "hm": load_hm, "ikea": load_ikea}


def load_dataset(ref: str) -> ItemDataset:
    """Return a dataset from "clothing:<dir>", "hm:<dir>", "ikea:<dir>" or a JSONL <dir>."""
    name, sep, rest = ref.partition(":")
    if sep and name in LOADERS:
        return LOADERS[name](Path(rest).expanduser())
    return load_jsonl_dataset(Path(ref).expanduser())
