"""Make issued invoices immutable in PostgreSQL itself: UPDATE and DELETE of an issued invoice raise, and so does any
INSERT, UPDATE or DELETE of a line of an issued invoice (TRUNCATE, used by test flushes, does not).

An invoice is built inside one transaction with issued_at empty and marked issued last, so that step is allowed.
On SQLite the models refuse the same changes; a trigger there would also block the test runner's flush.
"""

from django.db import migrations

PG_UP = """
CREATE OR REPLACE FUNCTION billing_invoice_immutable() RETURNS trigger AS $$
BEGIN
    IF OLD.issued_at IS NOT NULL THEN
        RAISE EXCEPTION USING MESSAGE = 'invoice ' || OLD.number || ' is issued and never changes; issue a credit note instead';
    END IF;
    IF TG_OP = 'DELETE' THEN
        RETURN OLD;
    END IF;
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER billing_invoice_immutable BEFORE UPDATE OR DELETE ON billing_invoice
    FOR EACH ROW EXECUTE FUNCTION billing_invoice_immutable();

CREATE OR REPLACE FUNCTION billing_invoiceline_immutable() RETURNS trigger AS $$
DECLARE
    target_invoice bigint;
BEGIN
    IF TG_OP = 'DELETE' THEN
        target_invoice := OLD.invoice_id;
    ELSE
        target_invoice := NEW.invoice_id;
    END IF;
    IF TG_OP = 'UPDATE' OR EXISTS (SELECT 1 FROM billing_invoice WHERE id = target_invoice AND issued_at IS NOT NULL) THEN
        RAISE EXCEPTION 'lines of an issued invoice never change; issue a credit note instead';
    END IF;
    IF TG_OP = 'DELETE' THEN
        RETURN OLD;
    END IF;
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER billing_invoiceline_immutable BEFORE INSERT OR UPDATE OR DELETE ON billing_invoiceline
    FOR EACH ROW EXECUTE FUNCTION billing_invoiceline_immutable();
"""
PG_DOWN = """
DROP TRIGGER IF EXISTS billing_invoiceline_immutable ON billing_invoiceline;
DROP FUNCTION IF EXISTS billing_invoiceline_immutable();
DROP TRIGGER IF EXISTS billing_invoice_immutable ON billing_invoice;
DROP FUNCTION IF EXISTS billing_invoice_immutable();
"""


def _run(statements_by_vendor):
    def run(apps, schema_editor):
        sql = statements_by_vendor.get(schema_editor.connection.vendor)
        if sql:
            schema_editor.execute(sql)

    return run


class Migration(migrations.Migration):
    dependencies = [("billing", "0001_tariffs_invoices_runs")]

    operations = [
        migrations.RunPython(_run({"postgresql": PG_UP}), _run({"postgresql": PG_DOWN})),
    ]
