"""Photo search's "no good match" by what a photo shows: the catalog's class profile and the
threshold on a photo's score against it (`search.calibration.image_class_fit`)."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("search", "0010_results_version_once_per_transaction")]

    operations = [
        migrations.AddField(
            model_name="searchcalibration",
            name="image_class_profile",
            field=models.JSONField(blank=True, default=list),
        ),
        migrations.AddField(
            model_name="searchcalibration",
            name="image_class_threshold",
            field=models.FloatField(blank=True, null=True),
        ),
    ]
