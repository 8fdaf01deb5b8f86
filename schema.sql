-- viber gateway schema. Applied at start by src/store/mod.rs.
--
-- Each `-- migration: N` section runs once, in order, inside a transaction, on a database
-- whose `PRAGMA user_version` is below N; the version is then set to N. Never edit a
-- released section: append a new one.

-- migration: 1

-- Operator bearer tokens (only their SHA-256 is stored). The admin token's plaintext lives
-- in <data-dir>/admin-token, mode 0600.
CREATE TABLE operator_tokens (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    token_hash  TEXT NOT NULL UNIQUE,
    created_at  INTEGER NOT NULL
);

-- One-time enrollment tokens created by `viber node add` / POST /api/nodes/enroll.
CREATE TABLE enrollments (
    token_hash  TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    used_at     INTEGER,
    node_id     TEXT
);

-- Enrolled nodes. `id` is the fingerprint of `public_key`; `token_hash` is the SHA-256 of
-- the node token issued at enrollment.
CREATE TABLE nodes (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    public_key    TEXT NOT NULL,
    token_hash    TEXT NOT NULL,
    version       TEXT NOT NULL DEFAULT '',
    platform      TEXT NOT NULL DEFAULT '',
    capabilities  TEXT NOT NULL DEFAULT '[]',
    created_at    INTEGER NOT NULL,
    last_seen_at  INTEGER,
    revoked_at    INTEGER
);

-- Task runs. `last_seq` is the highest per-task sequence number stored (every reliable
-- node frame of a task carries one); -1 before the first.
CREATE TABLE tasks (
    id           TEXT PRIMARY KEY,
    node_id      TEXT,
    goal         TEXT NOT NULL,
    executor     TEXT NOT NULL,
    options      TEXT NOT NULL DEFAULT '{}',
    state        TEXT NOT NULL CHECK (state IN ('pending', 'running', 'completed', 'error', 'stopped')),
    created_at   INTEGER NOT NULL,
    started_at   INTEGER,
    finished_at  INTEGER,
    exit_code    INTEGER,
    error        TEXT,
    result       TEXT,
    last_seq     INTEGER NOT NULL DEFAULT -1
);
CREATE INDEX tasks_by_node_state ON tasks (node_id, state);
CREATE INDEX tasks_by_created ON tasks (created_at);

-- Every UI message chunk of every task, keyed by its sequence number.
CREATE TABLE task_chunks (
    task_id  TEXT NOT NULL,
    seq      INTEGER NOT NULL,
    chunk    TEXT NOT NULL,
    PRIMARY KEY (task_id, seq)
) WITHOUT ROWID;

-- Follow-up messages sent to tasks (delivered to the node in order).
CREATE TABLE task_messages (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id         TEXT NOT NULL,
    message         TEXT NOT NULL,
    injection_mode  TEXT NOT NULL,
    created_at      INTEGER NOT NULL
);
CREATE INDEX task_messages_by_task ON task_messages (task_id, id);

-- Responses to side-effecting requests that carried an Idempotency-Key.
CREATE TABLE idempotency_keys (
    scope       TEXT NOT NULL,
    key         TEXT NOT NULL,
    status      INTEGER NOT NULL,
    response    TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (scope, key)
) WITHOUT ROWID;
