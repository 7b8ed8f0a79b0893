"""Fixed, saved evaluation splits: cold items, held-out lookbooks, warm items.

- Cold items are held out of training entirely: no image-text pair, no lookbook membership.
  They stand for products added to the catalog after the model was trained.
- Held-out lookbooks are removed from the graph used for neighbour alignment; the queries of
  lookbook completion, fill-in-the-blank and shop-the-look come from them only, so the model
  never saw the relations it is asked about.
- Warm items are everything else (seen in training).

A split is a JSON file written once and passed to both training and evaluation; the same seed
and dataset always give the same file.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path
from typing import Literal

import numpy as np

from embeddings.ml.evaluation.catalog import Catalog

Cell = Literal["cold", "warm"]
CELLS: tuple[Cell, Cell] = ("cold", "warm")
SPLIT_VERSION = 1
# H&M product codes held out of any fine-tune that the relevance bench scores: a held-out
# article's photo must find a colour variant (same code) it was never trained on.
HM_HELDOUT_CODE_FRACTION = 0.30
HM_HELDOUT_CODE_SEED = 13


@dataclass(frozen=True)
class Split:
    """Which items are cold and which lookbooks are held out, for one dataset and seed.

    ``fingerprint`` hashes the dataset's item and lookbook ids, so applying a split to a
    different dataset fails loudly instead of silently leaking.
    """

    dataset: str
    seed: int
    cold_fraction: float
    heldout_lookbook_fraction: float
    cold_items: tuple[str, ...]
    heldout_lookbooks: tuple[str, ...]
    n_items: int
    n_lookbooks: int
    fingerprint: str
    version: int = SPLIT_VERSION

    def cell(self, item_id: str) -> Cell:
        """'cold' if the item was held out of training, else 'warm'."""
        return "cold" if item_id in self._cold else "warm"

    @cached_property
    def _cold(self) -> frozenset[str]:
        return frozenset(self.cold_items)

    def training_item_ids(self, item_ids: Iterable[str]) -> list[str]:
        """The items training may see: all but the cold ones, in the given order."""
        return [i for i in item_ids if i not in self._cold]

    def training_lookbooks(
        self, lookbooks: Mapping[str, Sequence[str]], min_size: int = 2
    ) -> dict[str, list[str]]:
        """The graph training may see: held-out lookbooks dropped, cold items removed.

        Lookbooks left with fewer than ``min_size`` items carry no pair and are dropped.
        """
        held = set(self.heldout_lookbooks)
        out: dict[str, list[str]] = {}
        for lid, members in lookbooks.items():
            if lid in held:
                continue
            kept = [i for i in members if i not in self._cold]
            if len(kept) >= min_size:
                out[lid] = kept
        return out

    def check(self, catalog: Catalog) -> None:
        """Raise ValueError unless this split was made for ``catalog``."""
        fp = dataset_fingerprint(catalog)
        if fp != self.fingerprint:
            raise ValueError(
                f"split was made for dataset {self.dataset!r} with fingerprint "
                f"{self.fingerprint}, not for {catalog.name!r} ({fp})"
            )

    def to_dict(self) -> dict[str, object]:
        """Plain-JSON form (sorted lists)."""
        d = asdict(self)
        d["cold_items"] = list(self.cold_items)
        d["heldout_lookbooks"] = list(self.heldout_lookbooks)
        return d

    def save(self, path: str | Path) -> Path:
        """Write the split as JSON to ``path``; returns the path."""
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(self.to_dict(), indent=1, sort_keys=True) + "\n")
        return p

    @classmethod
    def load(cls, path: str | Path) -> Split:
        """Read a split written by ``save``."""
        d = json.loads(Path(path).read_text())
        if d.get("version") != SPLIT_VERSION:
            raise ValueError(f"unsupported split version {d.get('version')!r}")
        d["cold_items"] = tuple(d["cold_items"])
        d["heldout_lookbooks"] = tuple(d["heldout_lookbooks"])
        return cls(**d)


def dataset_fingerprint(catalog: Catalog) -> str:
    """A short hash of the sorted item ids and lookbook ids (16 hex digits)."""
    h = hashlib.sha256()
    for item_id in sorted(catalog.item_ids):
        h.update(item_id.encode() + b"\0")
    h.update(b"\1")
    for lid in sorted(catalog.lookbooks):
        h.update(lid.encode() + b"\0")
    return h.hexdigest()[:16]


def _choose(ids: Sequence[str], fraction: float, rng: np.random.Generator) -> list[str]:
    n = round(fraction * len(ids))
    if n == 0:
        return []
    picked = rng.choice(len(ids), size=n, replace=False)
    return [ids[i] for i in picked]


def make_split(
    catalog: Catalog,
    seed: int = 0,
    *,
    cold_fraction: float = 0.2,
    heldout_lookbook_fraction: float = 0.25,
    min_lookbook_size: int = 2,
    max_lookbook_size: int = 50,
    lookbook_prefix: str = "",
) -> Split:
    """Draw a split deterministically from ``seed``.

    Cold items are drawn as ``cold_fraction`` of the items in some lookbook plus the same
    fraction of the items in none (stratified, so the lookbook tasks get cold queries in
    proportion). Held-out lookbooks are ``heldout_lookbook_fraction`` of the eligible
    lookbooks: ids starting with ``lookbook_prefix`` (hm: "product:", so the huge
    "section:" groups stay in the graph) and ``min_lookbook_size``..``max_lookbook_size``
    members (leave-one-out over a 1,000-item group asks for one arbitrary member).
    Returns the ``Split``; save it with ``.save(path)``.
    """
    if not 0.0 <= cold_fraction < 1.0 or not 0.0 <= heldout_lookbook_fraction < 1.0:
        raise ValueError("fractions must lie in [0, 1)")
    rng = np.random.default_rng(seed)
    in_lookbook = {i for members in catalog.lookbooks.values() for i in members}
    ids = sorted(catalog.item_ids)
    linked = [i for i in ids if i in in_lookbook]
    unlinked = [i for i in ids if i not in in_lookbook]
    cold = _choose(linked, cold_fraction, rng) + _choose(unlinked, cold_fraction, rng)
    eligible = sorted(
        lid
        for lid, members in catalog.lookbooks.items()
        if lid.startswith(lookbook_prefix)
        and min_lookbook_size <= len(members) <= max_lookbook_size
    )
    held = _choose(eligible, heldout_lookbook_fraction, rng)
    return Split(
        dataset=catalog.name,
        seed=seed,
        cold_fraction=cold_fraction,
        heldout_lookbook_fraction=heldout_lookbook_fraction,
        cold_items=tuple(sorted(cold)),
        heldout_lookbooks=tuple(sorted(held)),
        n_items=len(ids),
        n_lookbooks=len(catalog.lookbooks),
        fingerprint=dataset_fingerprint(catalog),
    )


def hm_heldout_codes(
    codes: Iterable[str],
    fraction: float = HM_HELDOUT_CODE_FRACTION,
    seed: int = HM_HELDOUT_CODE_SEED,
) -> set[str]:
    """The H&M product codes held out (``bench/relevance.py``'s queries; a fine-tune that
    is scored there trains on the other codes only): a seeded ``fraction`` of the distinct
    codes."""
    ordered = sorted(set(codes))
    random.Random(seed).shuffle(ordered)  # noqa: S311 - a reproducible split, not a secret
    return set(ordered[: int(fraction * len(ordered))])
