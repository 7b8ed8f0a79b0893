from django.db import migrations, models

#: `embeddings.ml.regions.windows_recipe` of the windows every cover had until this field:
#: crops, at the scales of then. Written out, not imported: the code's default moves on.
CROPS_RECIPE = "crops;scales=0.3,0.5,0.75;step=0.75;max=64"


class Migration(migrations.Migration):
    dependencies = [
        ("looks", "0002_cover_windows"),
    ]

    operations = [
        migrations.AddField(
            model_name="lookbookcovervector",
            name="windows_recipe",
            field=models.CharField(default=CROPS_RECIPE, max_length=120),
            preserve_default=False,
        ),
    ]
