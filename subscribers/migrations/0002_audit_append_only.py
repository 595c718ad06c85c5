"""Make the audit trail append-only in PostgreSQL itself: UPDATE and DELETE raise (TRUNCATE, used by test flushes, does not).

On SQLite the model refuses updates and deletes; a trigger there would also block the test runner's flush.
"""

from django.db import migrations

PG_UP = """
CREATE OR REPLACE FUNCTION subscribers_auditevent_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'audit events are append-only';
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER subscribers_auditevent_no_update BEFORE UPDATE OR DELETE ON subscribers_auditevent
    FOR EACH ROW EXECUTE FUNCTION subscribers_auditevent_append_only();
"""
PG_DOWN = """
DROP TRIGGER IF EXISTS subscribers_auditevent_no_update ON subscribers_auditevent;
DROP FUNCTION IF EXISTS subscribers_auditevent_append_only();
"""


def _run(statements_by_vendor):
    def run(apps, schema_editor):
        statements = statements_by_vendor.get(schema_editor.connection.vendor, [])
        for sql in [statements] if isinstance(statements, str) else statements:
            schema_editor.execute(sql)

    return run


class Migration(migrations.Migration):
    dependencies = [("subscribers", "0001_initial")]

    operations = [
        migrations.RunPython(
            _run({"postgresql": PG_UP}),
            _run({"postgresql": PG_DOWN}),
        ),
    ]
