"""A data migration without a reverse (VARIANT=irreversible): Django cannot unapply it,
so a rollback past it must be refused before anything changes."""

from django.db import migrations


def forwards(apps, schema_editor):
    pass


class Migration(migrations.Migration):
    dependencies = [
        ("notes", "0001_initial"),
    ]

    operations = [
        migrations.RunPython(forwards),
    ]
