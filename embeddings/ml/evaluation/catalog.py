"""The evaluation's view of a dataset: items, lookbooks and scene photos, by id.

The evaluation needs only ids, image paths, texts, categories, lookbooks and (where a dataset
has them) scene photos with the products they show. ``as_catalog`` reads those from the model
package's dataset objects (``embeddings.ml.data``) by attribute, so this package depends on no
more of their shape than it uses, and tests can build a ``Catalog`` by hand.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class CatalogItem:
    """One product: its id, photo, catalog text and category label."""

    item_id: str
    image_path: str
    text: str
    category: str


@dataclass(frozen=True)
class Scene:
    """A styled photo (a room, an outfit) and the ids of the products shown in it.

    ``lookbook_id`` names the lookbook the scene illustrates (for ikea, the room itself), so
    a split that holds the lookbook out holds its photo out too; None when it has none.
    """

    scene_id: str
    image_path: str
    item_ids: tuple[str, ...]
    lookbook_id: str | None = None


@dataclass
class Catalog:
    """Items, lookbooks (id -> item ids) and scenes of one dataset."""

    name: str
    items: list[CatalogItem]
    lookbooks: dict[str, list[str]] = field(default_factory=dict)
    scenes: list[Scene] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.index = {item.item_id: i for i, item in enumerate(self.items)}
        if len(self.index) != len(self.items):
            raise ValueError(f"{self.name}: duplicate item ids")

    @property
    def item_ids(self) -> list[str]:
        """Item ids in catalog order."""
        return [item.item_id for item in self.items]


def _get(obj: Any, *names: str, default: Any = None) -> Any:
    for name in names:
        if isinstance(obj, Mapping) and name in obj:
            return obj[name]
        if hasattr(obj, name):
            return getattr(obj, name)
    return default


def _lookbook_of(scene_id: str, lookbooks: Mapping[str, Sequence[str]]) -> str | None:
    """The lookbook a scene illustrates: its own id, or "<kind>:<id>" (ikea: "room:<id>")."""
    if scene_id in lookbooks:
        return scene_id
    matches = [lid for lid in lookbooks if lid.partition(":")[2] == scene_id]
    return matches[0] if len(matches) == 1 else None


def _scenes(dataset: Any, lookbooks: Mapping[str, Sequence[str]]) -> list[Scene]:
    raw = _get(dataset, "scenes", "queries", default=None) or []
    scenes = []
    for s in raw:
        if isinstance(s, Scene):
            scenes.append(s)
            continue
        sid = str(_get(s, "scene_id", "query_id", "room", "id"))
        ids = _get(s, "item_ids", "products", default=()) or ()
        scenes.append(
            Scene(
                scene_id=sid,
                image_path=str(_get(s, "image_path")),
                item_ids=tuple(str(i) for i in ids),
                lookbook_id=_get(s, "lookbook_id", default=None) or _lookbook_of(sid, lookbooks),
            )
        )
    return scenes


def as_catalog(dataset: Any, name: str | None = None) -> Catalog:
    """A ``Catalog`` view of a model-package dataset (or a Catalog, returned as is).

    Reads ``items`` (each with item_id, image_path, text, category; paths resolved with
    ``dataset.image_file(item)`` when the dataset has it), ``lookbooks`` (id -> item ids) and
    scene photos from ``scenes`` or ``queries`` (``embeddings.ml.data.LookQuery``). A scene
    belongs to the lookbook named like it (ikea: room "x" -> lookbook "room:x"). Lookbook and
    scene members that are not catalog items are dropped; a missing category becomes "".
    """
    if isinstance(dataset, Catalog):
        return dataset
    raw_items: Sequence[Any] = _get(dataset, "items")
    if raw_items is None:
        raise TypeError("dataset has no items")
    if isinstance(raw_items, Mapping):
        raw_items = list(raw_items.values())
    image_file = getattr(dataset, "image_file", None)  # ItemDataset: paths under image_root
    items = [
        CatalogItem(
            item_id=str(_get(it, "item_id", "id")),
            image_path=str(image_file(it) if callable(image_file) else _get(it, "image_path")),
            text=str(_get(it, "text", default="") or ""),
            category=str(_get(it, "category", default="") or ""),
        )
        for it in raw_items
    ]
    known = {it.item_id for it in items}
    raw_lookbooks: Mapping[Any, Sequence[Any]] = _get(dataset, "lookbooks", default={}) or {}
    lookbooks = {str(k): [str(i) for i in v if str(i) in known] for k, v in raw_lookbooks.items()}
    scenes = [
        Scene(s.scene_id, s.image_path, tuple(i for i in s.item_ids if i in known), s.lookbook_id)
        for s in _scenes(dataset, lookbooks)
    ]
    ds_name = name or str(_get(dataset, "name", default="dataset"))
    return Catalog(name=ds_name, items=items, lookbooks=lookbooks, scenes=scenes)
