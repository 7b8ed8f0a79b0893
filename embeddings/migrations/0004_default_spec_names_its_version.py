"""Versions registered as the bundled "default" before v2 shipped served v1's weights.

"default" moves with releases. A registry row must keep naming the weights its vectors came
from, so existing rows are renamed "default:v1" (new ones are registered by their explicit
version); the sweeper then registers a newer bundled version beside them
(`embeddings.services.registry.default_model_upgrade`).
"""

from django.db import migrations


def name_v1(apps, schema_editor):  # type: ignore[no-untyped-def]
    EmbeddingModel = apps.get_model("embeddings", "EmbeddingModel")
    EmbeddingModel.objects.filter(spec="default").update(spec="default:v1")


def unname_v1(apps, schema_editor):  # type: ignore[no-untyped-def]
    EmbeddingModel = apps.get_model("embeddings", "EmbeddingModel")
    EmbeddingModel.objects.filter(spec="default:v1").update(spec="default")


class Migration(migrations.Migration):
    dependencies = [
        ("embeddings", "0003_textquerymap"),
    ]

    operations = [migrations.RunPython(name_v1, unname_v1)]
