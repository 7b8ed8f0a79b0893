"""The results version advances once per transaction at commit, not once per row written.

search/0008's commit trigger was a deferred trigger per row: importing 10,000 products
queued 10,000 trigger events and advanced the sequence 10,000 times at commit (imports ran
16% slower with it). A constraint trigger's WHEN is evaluated when the row is written, not
deferred; here it is true for the first row a transaction writes only (a transaction-local
setting remembers it), so one event is queued and the version advances once, after every
write. A rolled-back savepoint reverts the setting with the event it queued. The statement
triggers stay as they were. `search_catalogword` (search/0009) joins the watched tables.
"""

from importlib import import_module

from django.db import migrations

results_version = import_module("search.migrations.0008_results_version")

TABLES = (*results_version.TABLES, "search_catalogword")

FIRST_CHANGE = """
CREATE OR REPLACE FUNCTION search_results_version_first_change() RETURNS boolean
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    IF current_setting('vitrine.results_version_queued', true) = 'on' THEN
        RETURN false;
    END IF;
    PERFORM set_config('vitrine.results_version_queued', 'on', true);
    RETURN true;
END
$$;
"""

COMMIT_TRIGGER = """
DROP TRIGGER IF EXISTS search_results_version_commit ON {table};
CREATE CONSTRAINT TRIGGER search_results_version_commit
    AFTER INSERT OR UPDATE OR DELETE ON {table}
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW WHEN (search_results_version_first_change())
    EXECUTE FUNCTION search_results_version_advance();
"""

STATEMENT_TRIGGER = """
CREATE TRIGGER search_results_version_statement
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON {table}
    FOR EACH STATEMENT EXECUTE FUNCTION search_results_version_advance();
"""

PER_ROW_COMMIT_TRIGGER = """
DROP TRIGGER IF EXISTS search_results_version_commit ON {table};
CREATE CONSTRAINT TRIGGER search_results_version_commit
    AFTER INSERT OR UPDATE OR DELETE ON {table}
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION search_results_version_advance();
"""


class Migration(migrations.Migration):
    dependencies = [
        ("search", "0009_catalog_words"),
    ]

    operations = [
        migrations.RunSQL(
            FIRST_CHANGE
            + STATEMENT_TRIGGER.format(table="search_catalogword")
            + "".join(COMMIT_TRIGGER.format(table=table) for table in TABLES),
            "".join(PER_ROW_COMMIT_TRIGGER.format(table=t) for t in results_version.TABLES)
            + results_version.DROP_TRIGGERS.format(table="search_catalogword")
            + "DROP FUNCTION IF EXISTS search_results_version_first_change();",
        )
    ]
