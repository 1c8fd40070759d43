"""The declared schema, as numbered migrations applied in order, each in one transaction."""

from __future__ import annotations

MIGRATIONS: tuple[tuple[int, str], ...] = (
    (
        1,
        """
        CREATE TABLE events (
            seq INTEGER PRIMARY KEY,
            message_id TEXT NOT NULL UNIQUE,
            event_id TEXT,
            event_type TEXT NOT NULL,
            body_format TEXT NOT NULL,
            source TEXT NOT NULL,
            company_id TEXT,
            connection_id TEXT,
            generated_date TEXT NOT NULL,
            received_at TEXT NOT NULL,
            fields TEXT NOT NULL,
            body BLOB NOT NULL,
            headers TEXT NOT NULL,
            deliveries INTEGER NOT NULL DEFAULT 1,
            last_delivered_at TEXT NOT NULL,
            duplicate_of INTEGER REFERENCES events(seq),
            processed_at TEXT,
            fold_order INTEGER,
            outcome TEXT
        ) STRICT;
        CREATE UNIQUE INDEX events_event_id ON events(event_id)
            WHERE event_id IS NOT NULL AND duplicate_of IS NULL;
        CREATE INDEX events_pending ON events(company_id, generated_date, seq)
            WHERE processed_at IS NULL;
        CREATE INDEX events_company ON events(company_id, seq);
        CREATE INDEX events_fold_order ON events(fold_order);

        CREATE TABLE companies (
            company_id TEXT PRIMARY KEY,
            state TEXT NOT NULL,
            data TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            checked_at TEXT
        ) STRICT;
        CREATE INDEX companies_state ON companies(state, company_id);

        CREATE TABLE effects (
            id INTEGER PRIMARY KEY,
            company_id TEXT NOT NULL,
            kind TEXT NOT NULL,
            connection_id TEXT,
            idempotency_key TEXT NOT NULL UNIQUE,
            caused_by INTEGER REFERENCES events(seq),
            status TEXT NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt_at TEXT NOT NULL,
            last_error TEXT,
            result TEXT,
            claimed_by TEXT,
            claim_expires_at TEXT,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        ) STRICT;
        CREATE UNIQUE INDEX effects_open ON effects(company_id, kind)
            WHERE status = 'pending';
        CREATE INDEX effects_due ON effects(status, next_attempt_at);
        CREATE INDEX effects_company ON effects(company_id, id);

        """,
    ),
    (
        2,
        """
        CREATE TABLE heartbeat (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            at TEXT NOT NULL
        ) STRICT;
        """,
    ),
    (
        3,
        """
        DROP INDEX events_fold_order;
        CREATE INDEX events_fold_order ON events(fold_order) WHERE fold_order IS NOT NULL;
        """,
    ),
    (
        4,
        """
        CREATE TABLE expense_options (
            company_id TEXT PRIMARY KEY,
            fetched_at TEXT NOT NULL,
            data TEXT NOT NULL
        ) STRICT;
        """,
    ),
    (
        5,
        """
        CREATE TABLE expense_syncs (
            key TEXT PRIMARY KEY,
            company_id TEXT NOT NULL,
            sync_id TEXT NOT NULL,
            at TEXT NOT NULL,
            outcome TEXT,
            data TEXT NOT NULL,
            updated_at TEXT NOT NULL
        ) STRICT;
        CREATE INDEX expense_syncs_company ON expense_syncs(company_id, at, sync_id);
        """,
    ),
    (
        6,
        """
        CREATE TABLE company_state_counts (
            state TEXT NOT NULL,
            shard INTEGER NOT NULL,
            companies INTEGER NOT NULL,
            PRIMARY KEY (state, shard)
        ) STRICT;
        INSERT INTO company_state_counts (state, shard, companies)
            SELECT state, 0, COUNT(*) FROM companies GROUP BY state;
        CREATE TRIGGER companies_counted_insert AFTER INSERT ON companies BEGIN
            INSERT INTO company_state_counts (state, shard, companies) VALUES (new.state, 0, 1)
                ON CONFLICT (state, shard) DO UPDATE SET companies = companies + 1;
        END;
        CREATE TRIGGER companies_counted_update AFTER UPDATE OF state ON companies
            WHEN old.state IS NOT new.state BEGIN
            INSERT INTO company_state_counts (state, shard, companies) VALUES (old.state, 0, -1)
                ON CONFLICT (state, shard) DO UPDATE SET companies = companies - 1;
            INSERT INTO company_state_counts (state, shard, companies) VALUES (new.state, 0, 1)
                ON CONFLICT (state, shard) DO UPDATE SET companies = companies + 1;
        END;
        CREATE TRIGGER companies_counted_delete AFTER DELETE ON companies BEGIN
            INSERT INTO company_state_counts (state, shard, companies) VALUES (old.state, 0, -1)
                ON CONFLICT (state, shard) DO UPDATE SET companies = companies - 1;
        END;
        CREATE INDEX companies_changed ON companies(updated_at, company_id);
        CREATE INDEX companies_state_changed ON companies(state, updated_at, company_id);
        CREATE INDEX companies_name ON companies(lower(json_extract(data, '$.name')), company_id);
        CREATE INDEX companies_sync_failing
            ON companies(json_extract(data, '$.syncs[0].at'), company_id)
            WHERE json_extract(data, '$.syncs[0].outcome') = 'failed';
        CREATE INDEX companies_sync_quiet ON companies(
            state,
            coalesce(json_extract(data, '$.syncs[0].at'),
                     json_extract(data, '$.configuration.checked_at')),
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
            paused_until TEXT NOT NULL,
            since TEXT NOT NULL,
            reason TEXT NOT NULL,
            notice_at TEXT,
            updated_at TEXT NOT NULL
        ) STRICT;
        CREATE TABLE sync_checks (
            company_id TEXT PRIMARY KEY,
            checked_at TEXT NOT NULL
        ) STRICT;
        CREATE INDEX events_rate_limit ON events(generated_date, seq)
            WHERE event_type IN ('client.rateLimit.reached', 'client.rateLimit.reset');
        """,
    ),
    (
        8,
        """
        CREATE TABLE codat_calls (
            id INTEGER PRIMARY KEY,
            company_id TEXT NOT NULL,
            at TEXT NOT NULL,
            operation TEXT NOT NULL,
            status TEXT NOT NULL,
            duration_ms REAL NOT NULL,
            correlation_id TEXT,
            error TEXT
        ) STRICT;
        CREATE INDEX codat_calls_company ON codat_calls(company_id, id);
        """,
    ),
    (
        9,
        """
        ALTER TABLE effects ADD COLUMN requeued_at TEXT;
        """,
    ),
)
# The schema this code reads: a reader refuses a database an older version left behind.
LATEST_VERSION = max(version for version, _ in MIGRATIONS)
