"""Full-text over the whole product document (`catalog.document`), typo tolerance.

- `unaccent` and `pg_trgm` (both ship with PostgreSQL's contrib, the embedded server has
  them): accents are folded in the `vitrine` text search configuration, and trigram
  similarity matches a misspelt word ("trowsers") to the catalog's vocabulary.
- `search_document` is regenerated from the product document: title, brand, the category
  path, every attribute value and the description, each with its weight. It indexed title,
  brand and description only, so a colour or pattern stored as an attribute never matched.

The expression is frozen here as migrations must be; `tests/search/test_product_document.py`
checks that it is still `catalog.document.search_document_sql()`.
"""

from django.db import migrations

DOCUMENT = (
    "setweight(to_tsvector('vitrine'::regconfig, coalesce(title, '')), 'A') || "
    "setweight(to_tsvector('vitrine'::regconfig, coalesce(brand, '')), 'B') || "
    "setweight(to_tsvector('vitrine'::regconfig, coalesce(category, '')), 'A') || "
    "setweight(to_tsvector('vitrine'::regconfig, coalesce(attributes, '{}'::jsonb)), 'B') || "
    "setweight(to_tsvector('vitrine'::regconfig, coalesce(description, '')), 'C')"
)
OLD_DOCUMENT = (
    "setweight(to_tsvector('english'::regconfig, coalesce(title, '')), 'A') || "
    "setweight(to_tsvector('english'::regconfig, coalesce(brand, '')), 'A') || "
    "setweight(to_tsvector('english'::regconfig, coalesce(description, '')), 'B')"
)


class Migration(migrations.Migration):
    dependencies = [("search", "0004_coengagement")]

    operations = [
        migrations.RunSQL(
            sql=[
                "CREATE EXTENSION IF NOT EXISTS unaccent",
                "CREATE EXTENSION IF NOT EXISTS pg_trgm",
                "DROP TEXT SEARCH CONFIGURATION IF EXISTS vitrine",
                "CREATE TEXT SEARCH CONFIGURATION vitrine (COPY = english)",
                "ALTER TEXT SEARCH CONFIGURATION vitrine ALTER MAPPING FOR "
                "hword, hword_part, word WITH unaccent, english_stem",
                "DROP INDEX IF EXISTS search_product_document_gin",
                "ALTER TABLE catalog_product DROP COLUMN IF EXISTS search_document",
                f"ALTER TABLE catalog_product ADD COLUMN search_document tsvector "
                f"GENERATED ALWAYS AS ({DOCUMENT}) STORED",
                "CREATE INDEX search_product_document_gin ON catalog_product "
                "USING gin (search_document)",
            ],
            reverse_sql=[
                "DROP INDEX IF EXISTS search_product_document_gin",
                "ALTER TABLE catalog_product DROP COLUMN IF EXISTS search_document",
                f"ALTER TABLE catalog_product ADD COLUMN search_document tsvector "
                f"GENERATED ALWAYS AS ({OLD_DOCUMENT}) STORED",
                "CREATE INDEX search_product_document_gin ON catalog_product "
                "USING gin (search_document)",
                "DROP TEXT SEARCH CONFIGURATION IF EXISTS vitrine",
            ],
        ),
    ]
