from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("embeddings", "0001_registry_and_vectors")]

    operations = [
        migrations.AddField(
            model_name="embeddingmodel",
            name="centroids",
            field=models.JSONField(blank=True, default=dict, help_text="Mean vector per kind"),
        ),
    ]
