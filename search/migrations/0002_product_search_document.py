"""Full-text search over products: a generated tsvector column on catalog_product + GIN.

Product belongs to the catalog app; the search app owns how it is searched, so the column
is added here by SQL and is unknown to the Django model (the ORM never selects or writes
it; Postgres keeps it current on every insert and update). A stored column rather than an
expression index because ranking (`ts_rank_cd`) reads the document of every match: stored,
that is a read; as an expression it would re-parse every matching description per query.
Title and brand weigh more (A) than the description (B).
"""

from django.db import migrations

DOCUMENT = (
    "setweight(to_tsvector('english'::regconfig, coalesce(title, '')), 'A') || "
    "setweight(to_tsvector('english'::regconfig, coalesce(brand, '')), 'A') || "
    "setweight(to_tsvector('english'::regconfig, coalesce(description, '')), 'B')"
)


class Migration(migrations.Migration):
    dependencies = [
        ("catalog", "0001_initial"),
        ("search", "0001_initial"),
    ]

    operations = [
        migrations.RunSQL(
            sql=[
                f"ALTER TABLE catalog_product ADD COLUMN IF NOT EXISTS search_document tsvector GENERATED ALWAYS AS ({DOCUMENT}) STORED",
                "CREATE INDEX IF NOT EXISTS search_product_document_gin ON catalog_product USING gin (search_document)",
            ],
            reverse_sql=[
                "DROP INDEX IF EXISTS search_product_document_gin",
                "ALTER TABLE catalog_product DROP COLUMN IF EXISTS search_document",
            ],
        ),
    ]
