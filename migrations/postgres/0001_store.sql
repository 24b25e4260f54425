-- The store: consumers and keys managed at run time. Every write takes the next revision from
-- tollgate_revision, so a node catches up by reading the rows above the revision it has.
-- Deleted rows stay as tombstones (deleted_at set) so that deletions propagate the same way.
CREATE TABLE tollgate_revision (
    id INTEGER PRIMARY KEY,
    revision BIGINT NOT NULL
);
INSERT INTO tollgate_revision (id, revision) VALUES (1, 0);

CREATE TABLE tollgate_consumers (
    name TEXT PRIMARY KEY,
    spec TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    deleted_at BIGINT,
    revision BIGINT NOT NULL
);
CREATE INDEX tollgate_consumers_revision ON tollgate_consumers (revision);

CREATE TABLE tollgate_keys (
    id TEXT PRIMARY KEY,
    consumer TEXT NOT NULL,
    name TEXT,
    prefix TEXT NOT NULL,
    digest TEXT NOT NULL UNIQUE,
    previous_digest TEXT,
    previous_until BIGINT,
    spec TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    rotated_at BIGINT,
    expires_at BIGINT,
    revoked_at BIGINT,
    last_used_at BIGINT,
    deleted_at BIGINT,
    revision BIGINT NOT NULL
);
CREATE INDEX tollgate_keys_revision ON tollgate_keys (revision);
CREATE INDEX tollgate_keys_consumer ON tollgate_keys (consumer);

CREATE TABLE tollgate_idempotency (
    key TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    status BIGINT NOT NULL,
    response TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE tollgate_audit (
    id BIGSERIAL PRIMARY KEY,
    at BIGINT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    detail TEXT NOT NULL
);
