"""A release that adds a NOT NULL column and fills it (VARIANT=add-column), for the
schema-aware rollback's tests.

The column gets a database default, so the previous release, which does not know it,
still inserts visits while this one is rolled out and after it is rolled back (Django
5.0+ says db_default=''; this app runs on Django 3.2, hence the SQL). The data migration
has a reverse (nothing to undo): a rollback unapplies both, in reverse order.
"""

from django.db import migrations, models


def mark_existing(apps, schema_editor):
    apps.get_model("notes", "Visit").objects.update(agent="before 0002")


class Migration(migrations.Migration):
    dependencies = [
        ("notes", "0001_initial"),
    ]

    operations = [
        migrations.RunSQL(
            "ALTER TABLE notes_visit ADD COLUMN agent varchar(200) NOT NULL DEFAULT ''",
            reverse_sql="ALTER TABLE notes_visit DROP COLUMN agent",
            state_operations=[
                migrations.AddField("visit", "agent", models.CharField(max_length=200, default="")),
            ],
        ),
        migrations.RunPython(mark_existing, reverse_code=migrations.RunPython.noop),
    ]
