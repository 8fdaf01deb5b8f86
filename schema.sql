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

-- migration: 2

-- Declarative runtime specs. `version` increases on every change, so a binding prepared at
-- an older version is stale.
CREATE TABLE environments (
    id                TEXT PRIMARY KEY,
    name              TEXT NOT NULL UNIQUE,
    description       TEXT NOT NULL DEFAULT '',
    type              TEXT NOT NULL CHECK (type IN ('github', 'git', 'local', 'manual')),
    repo_url          TEXT,
    repo_org          TEXT,
    repo_name         TEXT,
    repo_branch       TEXT,
    local_path        TEXT,
    container_image   TEXT,
    working_dir       TEXT NOT NULL DEFAULT '',
    setup_script      TEXT NOT NULL DEFAULT '',
    network_access    INTEGER NOT NULL DEFAULT 1,
    persist_volume    INTEGER NOT NULL DEFAULT 0,
    default_executor  TEXT,
    metadata          TEXT NOT NULL DEFAULT '{}',
    version           INTEGER NOT NULL DEFAULT 1,
    created_at        INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL
);

CREATE TABLE environment_vars (
    environment_id  TEXT NOT NULL REFERENCES environments (id) ON DELETE CASCADE,
    key             TEXT NOT NULL,
    value           TEXT NOT NULL,
    PRIMARY KEY (environment_id, key)
) WITHOUT ROWID;

-- Values sealed with AES-256-GCM (see src/secrets); never stored in plaintext.
CREATE TABLE environment_secrets (
    environment_id   TEXT NOT NULL REFERENCES environments (id) ON DELETE CASCADE,
    key              TEXT NOT NULL,
    scope            TEXT NOT NULL CHECK (scope IN ('setup', 'runtime')),
    key_id           TEXT NOT NULL,
    nonce            BLOB NOT NULL,
    encrypted_value  BLOB NOT NULL,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    PRIMARY KEY (environment_id, key)
) WITHOUT ROWID;

-- An environment mapped onto one node.
CREATE TABLE environment_bindings (
    id                    TEXT PRIMARY KEY,
    environment_id        TEXT NOT NULL REFERENCES environments (id) ON DELETE CASCADE,
    node_id               TEXT NOT NULL,
    strategy              TEXT NOT NULL CHECK (strategy IN ('auto', 'existing-path')),
    path                  TEXT,
    resolved_working_dir  TEXT,
    status                TEXT NOT NULL CHECK (status IN ('pending', 'preparing', 'ready', 'error')),
    step                  TEXT,
    last_error            TEXT,
    commit_sha            TEXT,
    prepared_version      INTEGER,
    last_prepare_at       INTEGER,
    created_at            INTEGER NOT NULL,
    UNIQUE (environment_id, node_id)
);

-- Setup output of bindings, redacted on the node before it is sent.
CREATE TABLE binding_logs (
    binding_id  TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    line        TEXT NOT NULL,
    at          INTEGER NOT NULL,
    PRIMARY KEY (binding_id, seq)
) WITHOUT ROWID;

CREATE TABLE threads (
    id               TEXT PRIMARY KEY,
    environment_id   TEXT NOT NULL REFERENCES environments (id),
    title            TEXT NOT NULL,
    active_node_id   TEXT,
    status           TEXT NOT NULL CHECK (status IN ('active', 'paused', 'archived')),
    last_message_at  INTEGER,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL
);
CREATE INDEX threads_by_environment ON threads (environment_id, updated_at);

CREATE TABLE thread_messages (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    thread_id   TEXT NOT NULL REFERENCES threads (id) ON DELETE CASCADE,
    message     TEXT NOT NULL,
    task_id     TEXT NOT NULL,
    injection_mode TEXT,
    created_at  INTEGER NOT NULL
);
CREATE INDEX thread_messages_by_thread ON thread_messages (thread_id, id);

ALTER TABLE tasks ADD COLUMN environment_id TEXT;
ALTER TABLE tasks ADD COLUMN thread_id TEXT;
ALTER TABLE tasks ADD COLUMN binding_id TEXT;

-- What each node last reported for `config:push`.
ALTER TABLE nodes ADD COLUMN config_state TEXT;

-- migration: 3

-- Token usage of `llm` tasks, summed from their message-metadata chunks.
ALTER TABLE tasks ADD COLUMN input_tokens INTEGER NOT NULL DEFAULT 0;
ALTER TABLE tasks ADD COLUMN output_tokens INTEGER NOT NULL DEFAULT 0;
ALTER TABLE tasks ADD COLUMN model TEXT;

-- migration: 4

-- Board sessions: the browser exchanges the operator token for an HttpOnly cookie. Only the
-- SHA-256 of the session id is stored, with the CSRF token that cookie-authenticated writes
-- must echo, and the hash of the operator token that created it (a rotated admin token ends
-- its sessions).
CREATE TABLE sessions (
    session_hash   TEXT PRIMARY KEY,
    csrf_token     TEXT NOT NULL,
    operator_hash  TEXT NOT NULL,
    created_at     INTEGER NOT NULL,
    expires_at     INTEGER NOT NULL
) WITHOUT ROWID;

-- The thread list shows each thread's latest run.
CREATE INDEX tasks_by_thread ON tasks (thread_id, created_at);

-- migration: 5

-- Gateway -> node commands (follow-up messages, approval answers, config pushes) kept until
-- the node acknowledges them, sent again after a reconnect. The frame is stored as sent;
-- `task_id` is null for a command about the node itself.
CREATE TABLE commands (
    id          TEXT PRIMARY KEY,
    node_id     TEXT NOT NULL,
    task_id     TEXT,
    frame       TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);
CREATE INDEX commands_by_node ON commands (node_id, created_at);

-- Retention: ended tasks' chunks are deleted after `--retention-days`; the task row and its
-- summary stay, marked with when their output was pruned.
ALTER TABLE tasks ADD COLUMN output_pruned_at INTEGER;
CREATE INDEX tasks_to_prune ON tasks (finished_at) WHERE output_pruned_at IS NULL;
CREATE INDEX binding_logs_by_time ON binding_logs (at);
CREATE INDEX idempotency_keys_by_time ON idempotency_keys (created_at);

-- migration: 6

-- networkAccess became a mode (on, off, allowlist) with a host allowlist.
ALTER TABLE environments ADD COLUMN network_mode TEXT NOT NULL DEFAULT 'on'
    CHECK (network_mode IN ('on', 'off', 'allowlist'));
ALTER TABLE environments ADD COLUMN network_allowlist TEXT NOT NULL DEFAULT '[]';
UPDATE environments SET network_mode = CASE WHEN network_access THEN 'on' ELSE 'off' END;
ALTER TABLE environments DROP COLUMN network_access;
-- Hosts an operator allowed for all of a thread's tasks (a network approval "for the thread").
ALTER TABLE threads ADD COLUMN network_allowlist TEXT NOT NULL DEFAULT '[]';

-- migration: 7

-- What agent CLIs report besides tokens: their cost, and the session a thread's next task
-- continues (Claude Code, Codex and OpenCode keep their own conversation).
ALTER TABLE tasks ADD COLUMN cost_usd REAL NOT NULL DEFAULT 0;
ALTER TABLE tasks ADD COLUMN agent_session TEXT;
-- The executor a thread's messages run with, from its first message on.
ALTER TABLE threads ADD COLUMN executor TEXT;
-- A secret delivered as a file (a path relative to an agent CLI's home, such as
-- `.codex/auth.json`) instead of a variable.
ALTER TABLE environment_secrets ADD COLUMN file TEXT;

-- migration: 8

-- Terminals opened on nodes: where they run and how they ended. Their output is not stored
-- (it lives in the node's scrollback ring and tmux's history).
CREATE TABLE terminals (
    id              TEXT PRIMARY KEY,
    node_id         TEXT NOT NULL,
    environment_id  TEXT NOT NULL REFERENCES environments (id) ON DELETE CASCADE,
    binding_id      TEXT NOT NULL,
    thread_id       TEXT,
    command         TEXT NOT NULL DEFAULT '[]',
    persistent      INTEGER NOT NULL DEFAULT 0,
    status          TEXT NOT NULL DEFAULT 'running'
        CHECK (status IN ('running', 'exited', 'lost')),
    exit_code       INTEGER,
    error           TEXT,
    created_at      INTEGER NOT NULL,
    ended_at        INTEGER
);
CREATE INDEX terminals_by_node ON terminals (node_id, status);
CREATE INDEX terminals_by_binding ON terminals (binding_id, created_at);

-- migration: 9

-- A thread's git worktree: its branch (named when the thread's first task is created), the
-- node holding it, and what the node reported (where the branch started, its path); the
-- pull request opened from it.
CREATE TABLE worktrees (
    thread_id    TEXT PRIMARY KEY REFERENCES threads (id) ON DELETE CASCADE,
    node_id      TEXT NOT NULL,
    binding_id   TEXT NOT NULL,
    branch       TEXT NOT NULL,
    base_commit  TEXT,
    path         TEXT,
    pr_url       TEXT,
    pr_number    INTEGER,
    created_at   INTEGER NOT NULL
);

-- migration: 10

-- An enrollment token may enroll several nodes (a fleet): it enrolls until its uses run out
-- or it expires. Each node it enrolls is named `<name>-<end of its id>`.
ALTER TABLE enrollments ADD COLUMN uses INTEGER NOT NULL DEFAULT 1;
ALTER TABLE enrollments ADD COLUMN used_count INTEGER NOT NULL DEFAULT 0;
UPDATE enrollments SET used_count = 1 WHERE used_at IS NOT NULL;

-- migration: 11

-- The audit log: every operator request that changes something (and every sign-in), who made
-- it (the operator token or a board session), from where, and how it ended. `fields` names
-- the request body's fields (and the names inside its objects), never their values.
CREATE TABLE audit (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    at       INTEGER NOT NULL,
    actor    TEXT NOT NULL,
    method   TEXT NOT NULL,
    route    TEXT NOT NULL,
    path     TEXT NOT NULL,
    status   INTEGER NOT NULL,
    peer     TEXT NOT NULL,
    fields   TEXT NOT NULL DEFAULT '[]'
);
CREATE INDEX audit_at ON audit (at);

-- migration: 12

-- Device pairing: a node that connected without a token, proved its key and waits for an
-- operator. `status` is `pending` (expires at `expires_at`), `approved` (the operator said yes
-- while the node was away: it gets its token when it next connects) or `rejected` (the key is
-- refused from now on; the row stays so it is remembered).
CREATE TABLE pairing_requests (
    node_id       TEXT PRIMARY KEY,
    public_key    TEXT NOT NULL,
    name          TEXT NOT NULL,
    hostname      TEXT NOT NULL DEFAULT '',
    platform      TEXT NOT NULL DEFAULT '',
    version       TEXT NOT NULL DEFAULT '',
    address       TEXT NOT NULL,
    requested_at  INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL,
    status        TEXT NOT NULL DEFAULT 'pending'
                  CHECK (status IN ('pending', 'approved', 'rejected')),
    decided_at    INTEGER,
    approved_name TEXT
);
CREATE INDEX pairing_requests_expiry ON pairing_requests (status, expires_at);

-- migration: 13

-- Scheduled jobs: a goal run on an environment by a cron schedule (5 fields, in `timezone`),
-- in a new thread each time (`thread_mode` 'new') or one thread reused ('reuse', `thread_id`
-- once the first run made it). `next_run_at` is when the scheduler runs it next; a run missed
-- while the gateway was down runs once at start when it is within the grace window.
CREATE TABLE jobs (
    id              TEXT PRIMARY KEY,
    environment_id  TEXT NOT NULL REFERENCES environments(id) ON DELETE CASCADE,
    name            TEXT NOT NULL,
    schedule        TEXT NOT NULL,
    timezone        TEXT NOT NULL DEFAULT 'UTC',
    goal            TEXT NOT NULL,
    executor        TEXT,
    thread_mode     TEXT NOT NULL DEFAULT 'new' CHECK (thread_mode IN ('new', 'reuse')),
    thread_id       TEXT,
    enabled         INTEGER NOT NULL DEFAULT 1,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    next_run_at     INTEGER,
    last_run_at     INTEGER,
    last_trigger    TEXT,
    last_task_id    TEXT,
    last_thread_id  TEXT,
    last_error      TEXT
);
CREATE INDEX jobs_environment ON jobs (environment_id);
CREATE INDEX jobs_due ON jobs (enabled, next_run_at);

-- migration: 14

-- Shared credentials: gateway-wide variables and secrets (and secret files) that every
-- environment inherits unless it sets the same name. The same shape as environment_vars and
-- environment_secrets, with `environment_id` always '', so one set of statements serves both.
CREATE TABLE shared_vars (
    environment_id  TEXT NOT NULL DEFAULT '' CHECK (environment_id = ''),
    key             TEXT NOT NULL,
    value           TEXT NOT NULL,
    PRIMARY KEY (environment_id, key)
) WITHOUT ROWID;
CREATE TABLE shared_secrets (
    environment_id   TEXT NOT NULL DEFAULT '' CHECK (environment_id = ''),
    key              TEXT NOT NULL,
    scope            TEXT NOT NULL CHECK (scope IN ('setup', 'runtime')),
    key_id           TEXT NOT NULL,
    nonce            BLOB NOT NULL,
    encrypted_value  BLOB NOT NULL,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    file             TEXT,
    PRIMARY KEY (environment_id, key)
) WITHOUT ROWID;

-- migration: 15
-- A task's chunks in runs: each row holds consecutive chunks first_seq..=last_seq as one JSON
-- array, so the writer stores a commit's worth of a task's output as one row instead of one
-- row per chunk. A rowid table: rows are up to a few hundred KiB, too large for the B-tree
-- of a WITHOUT ROWID table. Runs of one task never overlap, so last_seq orders them.
CREATE TABLE task_chunk_runs (
    task_id    TEXT NOT NULL,
    first_seq  INTEGER NOT NULL,
    last_seq   INTEGER NOT NULL,
    chunks     TEXT NOT NULL
);
INSERT INTO task_chunk_runs (task_id, first_seq, last_seq, chunks)
    SELECT task_id, seq, seq, '[' || chunk || ']' FROM task_chunks ORDER BY task_id, seq;
CREATE UNIQUE INDEX task_chunk_runs_by_seq ON task_chunk_runs (task_id, last_seq);
DROP TABLE task_chunks;
