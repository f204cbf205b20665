"""A migration that always fails, for the deploy tool's tests (VARIANT=bad-migration).

It first creates a table, then runs SQL that errors. Migrations run in one
transaction on PostgreSQL (and SQLite), so the table is rolled back with it:
after `migrate` exits non-zero, `notes_broken_probe` must not exist.
"""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("notes", "0001_initial"),
    ]

    operations = [
        migrations.RunSQL(
            "CREATE TABLE notes_broken_probe (id integer PRIMARY KEY)",
            reverse_sql="DROP TABLE notes_broken_probe",
        ),
        # Fails on every backend (unlike SELECT 1/0, which SQLite answers with NULL).
        migrations.RunSQL("SELECT no_such_column FROM notes_broken_probe"),
    ]
