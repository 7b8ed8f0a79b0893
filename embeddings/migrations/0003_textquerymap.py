import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("embeddings", "0002_embeddingmodel_centroids"),
    ]

    operations = [
        migrations.CreateModel(
            name="TextQueryMap",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("matrix", models.BinaryField()),
                (
                    "pairs",
                    models.PositiveIntegerField(help_text="(text, fused) vector pairs fitted on"),
                ),
                (
                    "fit_cosine",
                    models.FloatField(
                        help_text="Mean cosine between a product's mapped text vector and its fused vector"
                    ),
                ),
                ("fitted_at", models.DateTimeField()),
                (
                    "model",
                    models.OneToOneField(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="text_query_map",
                        to="embeddings.embeddingmodel",
                    ),
                ),
            ],
        ),
    ]
