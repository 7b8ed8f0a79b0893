"""Photo search's "no good match" by what a photo shows: the catalog's class profile and the
thresholds on a photo's class score and energy (`search.calibration.image_class_fit`)."""

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
        migrations.AddField(
            model_name="searchcalibration",
            name="image_energy_threshold",
            field=models.FloatField(blank=True, null=True),
        ),
    ]
