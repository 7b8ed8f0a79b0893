"""The words of the catalog's documents, for "no good match" (`search.models.CatalogWord`).

A trigram index lets a misspelt query word find its catalog word, as for the vocabulary
(the results version's triggers come with search/0010).
"""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("search", "0008_results_version"),
    ]

    operations = [
        migrations.CreateModel(
            name="CatalogWord",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("lexeme", models.CharField(max_length=200, unique=True)),
                ("product_count", models.PositiveIntegerField(default=0)),
            ],
            options={
                "ordering": ["lexeme"],
            },
        ),
        migrations.RunSQL(
            "CREATE INDEX search_catalogword_lexeme_trgm ON search_catalogword "
            "USING gin (lexeme gin_trgm_ops)",
            "DROP INDEX IF EXISTS search_catalogword_lexeme_trgm",
        ),
    ]
