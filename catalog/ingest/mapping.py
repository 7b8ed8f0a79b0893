"""Column mapping: from a retailer's own layout to Google Merchant Center field names.

A mapping is JSON (a preset under ``presets/`` or a file the operator passes)::

    {
      "feed": "articles.csv",              # file to read when the source is a folder
      "format": "csv",                     # csv | tsv | jsonl | json | xml (else: guessed)
      "fields": {                          # GMC field <- spec
        "id": "article_id",                # a column name
        "title": {"template": "{name} {type}"},
        "brand": {"value": "H&M"},         # a constant
        "image_link": {"template": "images/{article_id}.jpg"}
      },
      "attributes": {"department": "department_name"},
      "extra_columns": "attributes",       # or "ignore": unmapped columns
      "lookbooks": {"file": "rooms.json", "fields": {"key": "room", "skus": "products"}}
    }

A spec is a column name, or an object with one of ``column``/``template``/``value`` and
optionally ``default``, ``regex`` (keep group 1) and ``humanize`` (``a-b_c`` -> ``A b c``).
Templates substitute ``{column}`` only; no attribute or index access, so a mapping sent
through the API cannot reach into Python objects the way ``str.format`` would allow.
Fields the mapping does not name still pick up columns that already use GMC names or a
common alias (``sku``, ``name``, ``image_url``...).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from catalog.ingest.rows import KNOWN_FIELDS

PRESETS_DIR = Path(__file__).with_name("presets")
_PRESET_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,40}$")
_PLACEHOLDER = re.compile(r"\{([^{}]{1,100})\}")

FORMATS = ("csv", "tsv", "jsonl", "json", "xml")

# Normalised column name -> GMC field. GMC names map to themselves (see normalise_key).
ALIASES: dict[str, str] = {
    "sku": "id",
    "item_id": "id",
    "product_id": "id",
    "offer_id": "id",
    "name": "title",
    "product_name": "title",
    "url": "link",
    "product_url": "link",
    "image": "image_link",
    "image_url": "image_link",
    "imageurl": "image_link",
    "picture": "image_link",
    "photo": "image_link",
    "file": "image_link",
    "filename": "image_link",
    "additional_images": "additional_image_link",
    "additional_image_links": "additional_image_link",
    "stock": "availability",
    "in_stock": "availability",
    "category": "product_type",
    "colour": "color",
    "lookbook": "lookbooks",
    "board": "lookbooks",
    "boards": "lookbooks",
}

LOOKBOOK_FIELDS = frozenset({"key", "title", "skus", "image"})
LOOKBOOK_ALIASES: dict[str, str] = {
    "name": "key",
    "id": "key",
    "slug": "key",
    "lookbook": "key",
    "products": "skus",
    "items": "skus",
    "image_link": "image",
    "photo": "image",
}


class MappingError(ValueError):
    """The mapping itself is wrong (not a row problem): reported once, import refused."""


def normalise_key(key: str) -> str:
    """``"G:Image Link"`` -> ``"image_link"``: how GMC headers vary between exports."""
    text = key.strip().lstrip("\ufeff").lower()
    if text.startswith("g:"):
        text = text[2:]
    return re.sub(r"[\s\-]+", "_", text)


def humanize(text: str) -> str:
    words = re.sub(r"[_\-]+", " ", text).split()
    return " ".join(words).capitalize()


@dataclass(frozen=True)
class FieldSpec:
    column: str | None = None
    template: str | None = None
    value: str | None = None
    default: str | None = None
    regex: str | None = None
    humanize: bool = False

    @classmethod
    def parse(cls, raw: Any, *, where: str) -> FieldSpec:
        if isinstance(raw, str):
            return cls(column=raw)
        if not isinstance(raw, dict):
            raise MappingError(f"{where}: expected a column name or an object")
        unknown = set(raw) - {"column", "template", "value", "default", "regex", "humanize"}
        if unknown:
            raise MappingError(f"{where}: unknown keys {sorted(unknown)}")
        sources = [k for k in ("column", "template", "value") if raw.get(k) is not None]
        if len(sources) != 1:
            raise MappingError(f"{where}: give exactly one of column, template, value")
        for key in ("column", "template", "value", "default", "regex"):
            if raw.get(key) is not None and not isinstance(raw[key], str):
                raise MappingError(f"{where}.{key}: must be a string")
        if raw.get("regex"):
            try:
                re.compile(raw["regex"])
            except re.error as exc:
                raise MappingError(f"{where}.regex: {exc}") from exc
        return cls(
            column=raw.get("column"),
            template=raw.get("template"),
            value=raw.get("value"),
            default=raw.get("default"),
            regex=raw.get("regex"),
            humanize=bool(raw.get("humanize", False)),
        )

    def extract(self, record: dict[str, Any], lookup: dict[str, str]) -> Any:
        """The value for one record; ``lookup`` maps normalised names to real columns."""
        result: Any
        if self.value is not None:
            result = self.value
        elif self.template is not None:
            missing = False

            def substitute(match: re.Match[str]) -> str:
                nonlocal missing
                value = _get(record, lookup, match[1])
                if value is None or value == "":
                    missing = True
                    return ""
                return str(value)

            result = _PLACEHOLDER.sub(substitute, self.template)
            if missing:
                result = None
        else:
            assert self.column is not None
            result = _get(record, lookup, self.column)
        if (result is None or result == "") and self.default is not None:
            result = self.default
        if isinstance(result, str):
            if self.regex:
                found = re.search(self.regex, result)
                result = (found.group(1) if found and found.groups() else found and found[0]) or ""
            if self.humanize:
                result = humanize(result)
        return result


def _get(record: dict[str, Any], lookup: dict[str, str], column: str) -> Any:
    if column in record:
        return record[column]
    real = lookup.get(normalise_key(column))
    return record.get(real) if real is not None else None


@dataclass(frozen=True)
class LookbookMapping:
    file: str | None = None
    format: str | None = None
    fields: dict[str, FieldSpec] = field(default_factory=dict)
    attributes: dict[str, FieldSpec] = field(default_factory=dict)


@dataclass(frozen=True)
class ColumnMapping:
    name: str = "gmc"
    feed: str | None = None
    format: str | None = None
    fields: dict[str, FieldSpec] = field(default_factory=dict)
    attributes: dict[str, FieldSpec] = field(default_factory=dict)
    extra_columns: str = "attributes"
    default_currency: str = ""
    lookbooks: LookbookMapping | None = None

    @classmethod
    def from_dict(cls, raw: Any, *, name: str = "custom") -> ColumnMapping:
        if not isinstance(raw, dict):
            raise MappingError("a mapping must be a JSON object")
        allowed = {
            "name",
            "description",
            "feed",
            "format",
            "fields",
            "attributes",
            "extra_columns",
            "default_currency",
            "lookbooks",
        }
        unknown = set(raw) - allowed
        if unknown:
            raise MappingError(f"unknown mapping keys {sorted(unknown)}")
        fmt = raw.get("format")
        if fmt is not None and fmt not in FORMATS:
            raise MappingError(f"format must be one of {', '.join(FORMATS)}")
        fields: dict[str, FieldSpec] = {}
        for target, spec in (raw.get("fields") or {}).items():
            key = ALIASES.get(target, target)
            if key not in KNOWN_FIELDS:
                known = ", ".join(sorted(KNOWN_FIELDS))
                raise MappingError(
                    f"fields.{target}: not a feed field (use one of {known}, "
                    "or put it under attributes)"
                )
            fields[key] = FieldSpec.parse(spec, where=f"fields.{target}")
        attributes = {
            str(k): FieldSpec.parse(v, where=f"attributes.{k}")
            for k, v in (raw.get("attributes") or {}).items()
        }
        extra = raw.get("extra_columns", "attributes")
        if extra not in ("attributes", "ignore"):
            raise MappingError("extra_columns must be 'attributes' or 'ignore'")
        lookbooks = None
        if raw.get("lookbooks") is not None:
            lb = raw["lookbooks"]
            if not isinstance(lb, dict):
                raise MappingError("lookbooks must be an object")
            lb_fields: dict[str, FieldSpec] = {}
            for target, spec in (lb.get("fields") or {}).items():
                key = LOOKBOOK_ALIASES.get(target, target)
                if key not in LOOKBOOK_FIELDS:
                    raise MappingError(f"lookbooks.fields.{target}: use key, title, skus, image")
                lb_fields[key] = FieldSpec.parse(spec, where=f"lookbooks.fields.{target}")
            lookbooks = LookbookMapping(
                file=lb.get("file"),
                format=lb.get("format"),
                fields=lb_fields,
                attributes={
                    str(k): FieldSpec.parse(v, where=f"lookbooks.attributes.{k}")
                    for k, v in (lb.get("attributes") or {}).items()
                },
            )
        return cls(
            name=str(raw.get("name") or name),
            feed=raw.get("feed"),
            format=fmt,
            fields=fields,
            attributes=attributes,
            extra_columns=extra,
            default_currency=str(raw.get("default_currency") or "").upper(),
            lookbooks=lookbooks,
        )

    @classmethod
    def from_json(cls, text: str, *, name: str = "custom") -> ColumnMapping:
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            raise MappingError(f"mapping is not valid JSON: {exc}") from exc
        return cls.from_dict(raw, name=name)

    def apply(self, record: dict[str, Any]) -> dict[str, Any]:
        """Rename one raw record to GMC field names plus an ``attributes`` dict."""
        lookup = {normalise_key(k): k for k in record}
        out: dict[str, Any] = {}
        used: set[str] = set()
        for column in record:
            target = _default_target(column)
            if target is not None and target not in self.fields and target not in out:
                out[target] = record[column]
                used.add(column)
        for target, spec in self.fields.items():
            out[target] = spec.extract(record, lookup)
            if spec.column is not None:
                used.add(lookup.get(normalise_key(spec.column), spec.column))
        attributes: dict[str, Any] = {}
        if self.extra_columns == "attributes":
            for column, value in record.items():
                if column not in used and not isinstance(value, (dict, list)):
                    attributes[normalise_key(column)] = value
        for name, spec in self.attributes.items():
            attributes[name] = spec.extract(record, lookup)
        out["attributes"] = attributes
        return out

    def apply_lookbook(self, record: dict[str, Any]) -> dict[str, Any]:
        lookup = {normalise_key(k): k for k in record}
        mapping = self.lookbooks or LookbookMapping()
        out: dict[str, Any] = {}
        for column in record:
            target = LOOKBOOK_ALIASES.get(normalise_key(column), normalise_key(column))
            if target in LOOKBOOK_FIELDS and target not in mapping.fields:
                out.setdefault(target, record[column])
        for target, spec in mapping.fields.items():
            out[target] = spec.extract(record, lookup)
        out["attributes"] = {n: s.extract(record, lookup) for n, s in mapping.attributes.items()}
        return out


def mapping_object_parse(value: Any) -> dict[str, Any]:
    """A column mapping as a person sent it (JSON text, or JSON already parsed), checked as
    far as keeping it with an import job needs; raises MappingError saying what is wrong.

    Every way in (the API, the admin's form, the CLI) asks this one check: a JSON object
    with no NUL character in any key or value, since the job stores it as jsonb, which
    cannot hold one (a 500, not a form error, where a path forgot the check). Whether its
    keys make a valid mapping is ``ColumnMapping.from_dict``'s to say.
    """
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise MappingError(f"The mapping is not valid JSON: {exc}.") from exc
    if not isinstance(value, dict):
        raise MappingError("The mapping must be a JSON object ({…}).")
    if _holds_nul(value):
        raise MappingError("The mapping must not contain NUL characters.")
    return value


def _holds_nul(value: Any) -> bool:
    """True when a NUL character is in any string, key or value, of this JSON value."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_holds_nul(k) or _holds_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_holds_nul(item) for item in value)
    return False


def _default_target(column: str) -> str | None:
    key = normalise_key(column)
    if key in KNOWN_FIELDS:
        return key
    return ALIASES.get(key)


def available_presets() -> list[str]:
    return sorted(p.stem for p in PRESETS_DIR.glob("*.json"))


def load_preset(name: str) -> ColumnMapping:
    if not _PRESET_NAME.match(name) or not (PRESETS_DIR / f"{name}.json").is_file():
        raise MappingError(
            f"unknown preset {name!r}; available: {', '.join(available_presets()) or 'none'}"
        )
    return ColumnMapping.from_json((PRESETS_DIR / f"{name}.json").read_text(), name=name)


DEFAULT_MAPPING = ColumnMapping()
