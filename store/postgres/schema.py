"""The declared schema, as numbered migrations applied in order, in one transaction.

The same tables as SQLite's, typed for PostgreSQL: BIGINT identities for `seq` and effect ids,
BYTEA for the raw body, TEXT for the JSON columns (read back byte for byte, key order kept, so
the records are the same as SQLite's) and for the ISO dates, which are compared as strings.
Every compared or ordered text column is `COLLATE "C"`: byte order, as SQLite's BINARY, whatever
the database's locale (an ICU or glibc collation would order ids and dates differently).
"""

from __future__ import annotations

MIGRATIONS: tuple[tuple[int, str], ...] = (
    (
        1,
        """
        CREATE TABLE events (
            seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            message_id TEXT COLLATE "C" NOT NULL UNIQUE,
            event_id TEXT COLLATE "C",
            event_type TEXT COLLATE "C" NOT NULL,
            body_format TEXT NOT NULL,
            source TEXT NOT NULL,
            company_id TEXT COLLATE "C",
            connection_id TEXT COLLATE "C",
            generated_date TEXT COLLATE "C" NOT NULL,
            received_at TEXT COLLATE "C" NOT NULL,
            fields TEXT NOT NULL,
            body BYTEA NOT NULL,
            headers TEXT NOT NULL,
            deliveries INTEGER NOT NULL DEFAULT 1,
            last_delivered_at TEXT COLLATE "C" NOT NULL,
            duplicate_of BIGINT REFERENCES events(seq),
            processed_at TEXT COLLATE "C",
            fold_order BIGINT,
            outcome TEXT
        );
        CREATE UNIQUE INDEX events_event_id ON events(event_id)
            WHERE event_id IS NOT NULL AND duplicate_of IS NULL;
        CREATE INDEX events_pending ON events(company_id, generated_date, seq)
            WHERE processed_at IS NULL;
        CREATE INDEX events_company ON events(company_id, seq);
        CREATE INDEX events_fold_order ON events(fold_order) WHERE fold_order IS NOT NULL;

        CREATE TABLE companies (
            company_id TEXT COLLATE "C" PRIMARY KEY,
            state TEXT COLLATE "C" NOT NULL,
            data TEXT NOT NULL,
            updated_at TEXT COLLATE "C" NOT NULL,
            checked_at TEXT COLLATE "C"
        );
        CREATE INDEX companies_state ON companies(state, company_id);

        CREATE TABLE effects (
            id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            company_id TEXT COLLATE "C" NOT NULL,
            kind TEXT COLLATE "C" NOT NULL,
            connection_id TEXT COLLATE "C",
            idempotency_key TEXT COLLATE "C" NOT NULL UNIQUE,
            caused_by BIGINT REFERENCES events(seq),
            status TEXT COLLATE "C" NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt_at TEXT COLLATE "C" NOT NULL,
            last_error TEXT,
            result TEXT,
            claimed_by TEXT COLLATE "C",
            claim_expires_at TEXT COLLATE "C",
            created_at TEXT COLLATE "C" NOT NULL,
            updated_at TEXT COLLATE "C" NOT NULL
        );
        CREATE UNIQUE INDEX effects_open ON effects(company_id, kind)
            WHERE status = 'pending';
        CREATE INDEX effects_due ON effects(status, next_attempt_at);
        CREATE INDEX effects_company ON effects(company_id, id);
        CREATE INDEX effects_caused_by ON effects(caused_by) WHERE caused_by IS NOT NULL;

        CREATE TABLE heartbeat (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            at TEXT NOT NULL
        );
        """,
    ),
    (
        2,
        """
        CREATE TABLE expense_options (
            company_id TEXT COLLATE "C" PRIMARY KEY,
            fetched_at TEXT COLLATE "C" NOT NULL,
            data TEXT NOT NULL
        );
        """,
    ),
    (
        3,
        """
        CREATE TABLE expense_syncs (
            key TEXT COLLATE "C" PRIMARY KEY,
            company_id TEXT COLLATE "C" NOT NULL,
            sync_id TEXT COLLATE "C" NOT NULL,
            at TEXT COLLATE "C" NOT NULL,
            outcome TEXT COLLATE "C",
            data TEXT NOT NULL,
            updated_at TEXT COLLATE "C" NOT NULL
        );
        CREATE INDEX expense_syncs_company ON expense_syncs(company_id, at, sync_id);
        """,
    ),
    (
        6,
        """
        CREATE TABLE company_state_counts (
            state TEXT COLLATE "C" NOT NULL,
            shard INTEGER NOT NULL,
            companies BIGINT NOT NULL,
            PRIMARY KEY (state, shard)
        );
        INSERT INTO company_state_counts (state, shard, companies)
            SELECT state, 0, COUNT(*) FROM companies GROUP BY state;
        CREATE FUNCTION count_company_states() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF TG_OP IN ('UPDATE', 'DELETE') THEN
                INSERT INTO company_state_counts AS counted (state, shard, companies)
                    VALUES (OLD.state, pg_backend_pid(), -1)
                    ON CONFLICT (state, shard)
                    DO UPDATE SET companies = counted.companies - 1;
            END IF;
            IF TG_OP IN ('INSERT', 'UPDATE') THEN
                INSERT INTO company_state_counts AS counted (state, shard, companies)
                    VALUES (NEW.state, pg_backend_pid(), 1)
                    ON CONFLICT (state, shard)
                    DO UPDATE SET companies = counted.companies + 1;
            END IF;
            RETURN NULL;
        END
        $$;
        CREATE TRIGGER companies_counted AFTER INSERT OR DELETE ON companies
            FOR EACH ROW EXECUTE FUNCTION count_company_states();
        CREATE TRIGGER companies_counted_update AFTER UPDATE OF state ON companies
            FOR EACH ROW WHEN (OLD.state IS DISTINCT FROM NEW.state)
            EXECUTE FUNCTION count_company_states();
        CREATE INDEX companies_changed ON companies(updated_at, company_id);
        CREATE INDEX companies_state_changed ON companies(state, updated_at, company_id);
        CREATE INDEX companies_name ON companies(
            (lower((CASE WHEN strpos(data, '\\u0000') = 0 THEN data::json END)
                   ->> 'name') COLLATE "C"),
            company_id
        );
        CREATE INDEX companies_sync_failing ON companies(
            (((CASE WHEN strpos(data, '\\u0000') = 0 THEN data::json END)
              -> 'syncs' -> 0 ->> 'at') COLLATE "C"),
            company_id
        ) WHERE ((CASE WHEN strpos(data, '\\u0000') = 0 THEN data::json END)
                 -> 'syncs' -> 0 ->> 'outcome') = 'failed';
        CREATE INDEX companies_sync_quiet ON companies(
            state,
            (coalesce((CASE WHEN strpos(data, '\\u0000') = 0 THEN data::json END)
                      -> 'syncs' -> 0 ->> 'at',
                      (CASE WHEN strpos(data, '\\u0000') = 0 THEN data::json END)
                      -> 'configuration' ->> 'checked_at') COLLATE "C"),
            company_id
        ) WHERE state = 'configured';
        CREATE INDEX effects_failed ON effects(status, updated_at, id) WHERE status = 'failed';
        """,
    ),
    (
        7,
        """
        CREATE TABLE rate_limit_pause (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            paused_until TEXT COLLATE "C" NOT NULL,
            since TEXT COLLATE "C" NOT NULL,
            reason TEXT NOT NULL,
            notice_at TEXT COLLATE "C",
            updated_at TEXT COLLATE "C" NOT NULL
        );
        CREATE TABLE sync_checks (
            company_id TEXT COLLATE "C" PRIMARY KEY,
            checked_at TEXT COLLATE "C" NOT NULL
        );
        CREATE INDEX events_rate_limit ON events(generated_date, seq)
            WHERE event_type IN ('client.rateLimit.reached', 'client.rateLimit.reset');
        """,
    ),
    (
        8,
        """
        CREATE TABLE codat_calls (
            id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
            company_id TEXT COLLATE "C" NOT NULL,
            at TEXT COLLATE "C" NOT NULL,
            operation TEXT NOT NULL,
            status TEXT NOT NULL,
            duration_ms DOUBLE PRECISION NOT NULL,
            correlation_id TEXT,
            error TEXT
        );
        CREATE INDEX codat_calls_company ON codat_calls(company_id, id);
        """,
    ),
    (
        9,
        """
        ALTER TABLE effects ADD COLUMN requeued_at TEXT COLLATE "C";
        """,
    ),
)
# The schema this code reads: a reader refuses a database an older version left behind.
LATEST_VERSION = max(version for version, _ in MIGRATIONS)
