"""A version of everything a search's answer depends on, for the results cache.

`search_results_version` is a sequence that triggers advance whenever a table a search
reads changes: products, their vectors, the text query maps, the vocabulary and synonyms,
and the calibrations. Reading it is one cheap statement (`search.result_cache`). A sequence
rather than a counter row: advancing it takes no lock, so parallel import and embedding
transactions never wait on each other for it (a row would serialise them, and could
deadlock two chunks that touch the same product).

Two triggers per table. One per statement, so a change is seen at once by the transaction
that made it and advances the version even in autocommit. One deferred to commit, because a
sequence is not transactional: a search that reads the new value while the writing
transaction is still open sees the old rows and caches them under it; the advance at commit
retires that entry. TRUNCATE advances it too.
"""

from django.db import migrations

TABLES = (
    "catalog_product",
    "embeddings_productembedding",
    "embeddings_textquerymap",
    "search_vocabularyterm",
    "search_synonym",
    "search_searchcalibration",
)

FUNCTION = """
CREATE SEQUENCE IF NOT EXISTS search_results_version;
CREATE OR REPLACE FUNCTION search_results_version_advance() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM nextval('search_results_version');
    RETURN NULL;
END
$$;
"""

TRIGGERS = """
CREATE TRIGGER search_results_version_statement
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON {table}
    FOR EACH STATEMENT EXECUTE FUNCTION search_results_version_advance();
CREATE CONSTRAINT TRIGGER search_results_version_commit
    AFTER INSERT OR UPDATE OR DELETE ON {table}
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION search_results_version_advance();
"""

DROP_TRIGGERS = """
DROP TRIGGER IF EXISTS search_results_version_statement ON {table};
DROP TRIGGER IF EXISTS search_results_version_commit ON {table};
"""


class Migration(migrations.Migration):
    dependencies = [
        ("search", "0007_seed_synonyms_trigram_index"),
        ("catalog", "0005_import_job_idempotency_key"),
        ("embeddings", "0003_textquerymap"),
    ]

    operations = [
        migrations.RunSQL(
            FUNCTION + "".join(TRIGGERS.format(table=table) for table in TABLES),
            "".join(DROP_TRIGGERS.format(table=table) for table in TABLES)
            + "DROP FUNCTION IF EXISTS search_results_version_advance();"
            + "DROP SEQUENCE IF EXISTS search_results_version;",
        )
    ]
