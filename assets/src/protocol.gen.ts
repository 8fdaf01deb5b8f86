// Generated from src/protocol by `VIBER_UPDATE_TS=1 cargo test --lib protocol::board_types`.
// Do not edit: change the Rust types and regenerate.

export type TaskState = "pending" | "running" | "completed" | "error" | "stopped";

export type ExecutorKind = "shell" | "llm" | "claude-code" | "codex" | "opencode";

export type WorkingMode = "always-ask" | "agent-decides" | "always-execute";

export type InjectionMode = "collect" | "steer" | "followup";

export type EnvKind = "github" | "git" | "local" | "manual";

export type BindingStrategy = "auto" | "existing-path";

export type SecretScope = "setup" | "runtime";

export type NetworkAccess = "on" | "off" | "allowlist";

export type BindingStatus = "pending" | "preparing" | "ready" | "error";

export type BindingPhase = "pending" | "preparing" | "ready" | "stale" | "error";

export type NodePresence = "online" | "offline";

export type ValidationStatus = "verified" | "failed" | "unchecked";

export type ConfigValidation = { 
/**
 * llm_keys, oauth, env_secrets, skills, binary_deps, setup_script
 */
category: string, status: ValidationStatus, message?: string, checkedAt: string, };

export type ConfigAck = { configVersion: string, validations: Array<ConfigValidation>, };

export type ConfigPushed = { nodeId: string, pushed: boolean, 
/**
 * The node started checking already; false: stored and sent when the node is back.
 */
delivered: boolean, };

export type CredentialKind = "bearer" | "cookie";

export type ThreadStatus = "active" | "paused" | "archived";

export type FileStatus = "added" | "modified" | "deleted" | "renamed" | "copied" | "type-changed";

export type SyncMode = "merge" | "rebase";

export type ChangedFile = { path: string, 
/**
 * The path before a rename or copy.
 */
oldPath?: string, status: FileStatus, additions: number, deletions: number, binary: boolean, 
/**
 * The unified patch (`git diff --binary` for binary files), empty when truncated.
 */
patch: string, 
/**
 * The patch was left out: longer than the limit for one file, or past the limit for
 * the whole diff.
 */
truncated: boolean, };

export type WorktreeView = { branch: string, nodeId: string, 
/**
 * Where the branch started (absent until the node created the worktree).
 */
base?: string, 
/**
 * Its directory on the node (absent until created, and once removed).
 */
path?: string, pullRequestUrl?: string, };

export type ThreadDiff = { threadId: string, branch: string, 
/**
 * The commit the thread's branch started from.
 */
base: string, 
/**
 * The branch's commit now (uncommitted changes are in the diff as well).
 */
head: string, files: Array<ChangedFile>, additions: number, deletions: number, 
/**
 * Some patches were left out (see [`ChangedFile::truncated`]).
 */
truncated: boolean, };

export type GitOutcome = { branch: string, 
/**
 * The branch's commit afterwards.
 */
head: string, 
/**
 * What git printed (push, sync), secrets redacted.
 */
output?: string, 
/**
 * Push: where to.
 */
remote?: string, 
/**
 * Sync: the files that conflicted. Not empty: the merge or rebase was undone and the
 * worktree is as it was.
 */
conflicts: Array<string>, };

export type PullRequestView = { number: number, 
/**
 * Its page (`html_url`).
 */
url: string, head: string, base: string, draft: boolean, };

export type ErrorDetail = { code: string, message: string, };

export type ErrorBody = { error: ErrorDetail, };

export type AuditEntry = { id: number, at: string, 
/**
 * `operator-token`, `session:<8 hex>` (a board session, by a digest of its id), or
 * `anonymous` (not signed in: a failed sign-in, a refused request).
 */
actor: string, method: string, 
/**
 * The route's pattern, `/api/environments/{id}`.
 */
route: string, 
/**
 * The path as requested, with its ids.
 */
path: string, 
/**
 * The response's HTTP status.
 */
status: number, 
/**
 * The client's address.
 */
peer: string, fields: Array<string>, };

export type AuditPage = { entries: Array<AuditEntry>, 
/**
 * Pass as `before` for the next (older) page; absent on the last page.
 */
nextBefore?: number, };

export type Health = { 
/**
 * Always `ok` while the gateway answers.
 */
status: string, version: string, uptimeSecs: number, 
/**
 * Enrolled nodes (not revoked).
 */
nodes: number, nodesOnline: number, tasks: number, };

export type NodeView = { id: string, name: string, version: string, platform: string, capabilities: Array<string>, 
/**
 * How the node confines task processes: `bwrap`, `off` (turned off by its operator) or
 * `missing` (no sandbox tool: it refuses tasks). Absent for nodes that do not say.
 */
sandbox?: string, status: NodePresence, runningTasks: Array<string>, enrolledAt: string, lastSeen?: string, connectedAt?: string, memoryRssBytes?: number, uptimeSecs?: number, 
/**
 * 1, 5 and 15 minute load averages (online nodes).
 */
load?: [number, number, number], 
/**
 * The node's last `config:ack`.
 */
config?: ConfigAck, };

export type NodeList = { nodes: Array<NodeView>, };

export type PairingStatus = "pending" | "approved" | "rejected";

export type PairingRequestView = { 
/**
 * The fingerprint of the node's key, which is also the node id once approved.
 */
fingerprint: string, 
/**
 * The name the node asked for (its host name unless its operator set `--name`).
 */
name: string, hostname: string, platform: string, version: string, 
/**
 * The IP address it connected from.
 */
address: string, status: PairingStatus, 
/**
 * Whether it is connected now, waiting for the answer.
 */
waiting: boolean, requestedAt: string, 
/**
 * When a pending (or approved, undelivered) request lapses.
 */
expiresAt: string, };

export type PairingList = { requests: Array<PairingRequestView>, };

export type ApproveRequest = { 
/**
 * The node's name [default: the name it asked for].
 */
name?: string, };

export type PairingDecided = { fingerprint: string, name: string, status: PairingStatus, 
/**
 * The node was waiting and has its answer now (for an approval: its token, and it is
 * coming online); false: it gets it when it next connects.
 */
delivered: boolean, };

export type JobThreadMode = "new" | "reuse";

export type JobTrigger = "schedule" | "manual" | "catch-up" | "missed" | "overlap";

export type CreateJob = { 
/**
 * A name to tell jobs apart [default: the goal's first line].
 */
name?: string, 
/**
 * A standard 5-field cron expression: minute, hour, day of month, month, day of week
 * (`0 9 * * 1-5`: weekdays at 9:00).
 */
schedule: string, 
/**
 * An IANA time zone the schedule is read in [default: `UTC`].
 */
timezone?: string, 
/**
 * What each run asks (the message a thread gets).
 */
goal: string, 
/**
 * The executor [default: the environment's, else `llm` where the node offers it].
 */
executor?: string, 
/**
 * `new` (default) or `reuse`.
 */
thread?: string, enabled?: boolean, };

export type UpdateJob = { name?: string, schedule?: string, timezone?: string, goal?: string, executor?: string, thread?: string, enabled?: boolean, };

export type JobRunView = { at: string, trigger: JobTrigger, 
/**
 * The task it started (none when it was skipped or could not start).
 */
taskId?: string, threadId?: string, 
/**
 * The task's state now.
 */
state?: TaskState, 
/**
 * Why it did not start, or why its task failed.
 */
error?: string, };

export type JobView = { id: string, environmentId: string, name: string, schedule: string, timezone: string, goal: string, executor?: ExecutorKind, thread: JobThreadMode, 
/**
 * The thread a `reuse` job continues, once its first run made it.
 */
threadId?: string, enabled: boolean, 
/**
 * When it runs next (none while disabled).
 */
nextRunAt?: string, lastRun?: JobRunView, createdAt: string, };

export type JobList = { jobs: Array<JobView>, };

export type SharedConfig = { 
/**
 * Plain variables (`var.NAME`).
 */
vars: { [key in string]: string }, 
/**
 * Secrets, masked: variables (`env.NAME`) and files (`file.PATH`, named
 * `FILE_<PATH IN CAPITALS>`).
 */
secrets: { [key in string]: SecretView }, };

export type UsageTotal = { tasks: number, inputTokens: number, outputTokens: number, 
/**
 * In US dollars: what the agents reported, plus what the price table gives the tokens
 * of tasks whose agent reported nothing.
 */
costUsd: number, 
/**
 * The part of `costUsd` that comes from the price table.
 */
estimatedCostUsd: number, 
/**
 * Tokens neither reported with a cost nor priced by the table (their model is not in
 * it): `costUsd` leaves them out.
 */
unpricedTokens: number, };

export type UsageRow = { 
/**
 * The node, environment or model; null for tasks without one.
 */
key: string | null, tasks: number, inputTokens: number, outputTokens: number, 
/**
 * In US dollars: what the agents reported, plus what the price table gives the tokens
 * of tasks whose agent reported nothing.
 */
costUsd: number, 
/**
 * The part of `costUsd` that comes from the price table.
 */
estimatedCostUsd: number, 
/**
 * Tokens neither reported with a cost nor priced by the table (their model is not in
 * it): `costUsd` leaves them out.
 */
unpricedTokens: number, };

export type UsageDaily = { 
/**
 * `YYYY-MM-DD` (UTC).
 */
day: string, nodeId: string | null, environmentId: string | null, model: string | null, tasks: number, inputTokens: number, outputTokens: number, 
/**
 * In US dollars: what the agents reported, plus what the price table gives the tokens
 * of tasks whose agent reported nothing.
 */
costUsd: number, 
/**
 * The part of `costUsd` that comes from the price table.
 */
estimatedCostUsd: number, 
/**
 * Tokens neither reported with a cost nor priced by the table (their model is not in
 * it): `costUsd` leaves them out.
 */
unpricedTokens: number, };

export type UsageReport = { from: string, to: string, byNode: Array<UsageRow>, byEnvironment: Array<UsageRow>, byModel: Array<UsageRow>, 
/**
 * By day, node, environment and model (for charts), oldest first.
 */
daily: Array<UsageDaily>, total: UsageTotal, 
/**
 * Models in the gateway's price table.
 */
pricedModels: number, };

export type SetShared = { value: string, 
/**
 * For a secret: `runtime` (setup and tasks, the default) or `setup` (setup only).
 */
scope?: SecretScope, };

export type SessionOpened = { csrfToken: string, expiresAt: string, };

export type SessionInfo = { authenticated: boolean, via: CredentialKind, csrfToken?: string, };

export type TaskUsage = { inputTokens: number, outputTokens: number, 
/**
 * Null when the provider did not say.
 */
model: string | null, 
/**
 * What the agent reported the task cost, in US dollars (0 when it did not say).
 */
costUsd: number, };

export type PendingApproval = { approvalId: string, toolCallId: string, 
/**
 * Null when the tool call's input chunk is missing.
 */
toolName: string | null, input: unknown, };

export type ChunkEvent = { seq: number, chunk: unknown, };

export type TaskView = { id: string, 
/**
 * Null for a task whose node was deleted.
 */
nodeId?: string | null, goal: string, executor: ExecutorKind, options: Record<string, unknown>, state: TaskState, createdAt: string, 
/**
 * The last stream sequence number stored (-1 before the first chunk).
 */
lastSeq: number, startedAt?: string, finishedAt?: string, exitCode?: number, error?: string, result?: string, usage?: TaskUsage, environmentId?: string, threadId?: string, 
/**
 * When retention deleted the task's output; its summary stays.
 */
outputPrunedAt?: string, 
/**
 * `GET /api/tasks/:id` of a running task that waits for an approval.
 */
awaitingApproval?: PendingApproval, 
/**
 * `awaiting approval` alongside `awaitingApproval`.
 */
status?: string, 
/**
 * `GET /api/tasks/:id`: the most recent chunks, oldest first.
 */
lastEvents?: Array<ChunkEvent>, 
/**
 * `POST /api/tasks/:id/stop`.
 */
stopRequested?: boolean, 
/**
 * `POST /api/threads/:id/messages` that started a task: the task id again.
 */
taskId?: string, 
/**
 * `POST /api/threads/:id/messages` that started a task: the binding it runs on.
 */
bindingId?: string, };

export type TaskList = { tasks: Array<TaskView>, };

export type ApprovalScope = "once" | "thread" | "environment";

export type ApprovalAnswer = { approve: boolean, reason?: string, 
/**
 * For a network approval: how long the host stays allowed (default `once`: the rest
 * of this task). Other approvals take only `once`.
 */
scope?: ApprovalScope, };

export type ApprovalAnswered = { taskId: string, approvalId: string, approved: boolean, 
/**
 * The node applied the answer already; false: stored and sent when the node is back.
 */
delivered: boolean, };

export type SecretView = { value: string, scope: SecretScope, updatedAt: string, 
/**
 * Delivered as this file in the agent home instead of as a variable.
 */
file?: string | null, };

export type BindingView = { id: string, environmentId: string, nodeId: string, nodeOnline: boolean, strategy: BindingStrategy, status: BindingPhase, createdAt: string, path?: string, resolvedWorkingDir?: string, step?: string, lastError?: string, commit?: string, preparedVersion?: number, lastPrepareAt?: string, };

export type BindingList = { bindings: Array<BindingView>, };

export type EnvironmentView = { id: string, name: string, description: string, type: EnvKind, workingDir: string, setupScript: string, networkAccess: NetworkAccess, networkAllowlist: Array<string>, persistVolume: boolean, metadata: Record<string, unknown>, version: number, vars: { [key in string]: string }, secrets: { [key in string]: SecretView }, bindings: Array<BindingView>, createdAt: string, updatedAt: string, repoUrl?: string, repoOrg?: string, repoName?: string, repoBranch?: string, localPath?: string, containerImage?: string, defaultExecutor?: ExecutorKind, };

export type EnvironmentList = { environments: Array<EnvironmentView>, };

export type LogLine = { seq: number, text: string, };

export type LogList = { logs: Array<LogLine>, };

export type ValidationCheck = { name: string, ok: boolean, message: string, 
/**
 * The script line a syntax error is on.
 */
line?: number, };

export type ValidationResult = { ok: boolean, checks: Array<ValidationCheck>, };

export type ThreadView = { id: string, environmentId: string, title: string, status: ThreadStatus, createdAt: string, updatedAt: string, activeNodeId?: string, lastMessageAt?: string, lastTaskId?: string, lastTaskState?: TaskState, 
/**
 * The executor the thread's messages run with (the first message's, or the last one
 * that named another). Agent CLIs continue the thread's session on the same node.
 */
executor?: ExecutorKind, 
/**
 * The thread's git worktree (`GET /api/threads/:id` only).
 */
worktree?: WorktreeView, };

export type ThreadList = { threads: Array<ThreadView>, };

export type MessageTask = { state: TaskState, executor: ExecutorKind, 
/**
 * Null until the task ends.
 */
exitCode: number | null, error: string | null, usage?: TaskUsage, 
/**
 * When retention deleted the task's output.
 */
outputPrunedAt?: string, };

export type FollowUpAccepted = { threadId: string, taskId: string, followUp: boolean, 
/**
 * The node applied the message already; false: stored and sent when the node is back.
 */
delivered: boolean, };

export type ThreadMessageView = { id: number, message: string, taskId: string, createdAt: string, 
/**
 * Set for a follow-up that joined a running task.
 */
injectionMode?: InjectionMode, task?: MessageTask, 
/**
 * The task's text output (left out with `?output=false` and for follow-ups).
 */
output?: string, };

export type ThreadMessages = { messages: Array<ThreadMessageView>, };

export type TerminalView = { id: string, nodeId: string, bindingId: string, environmentId: string, threadId?: string, 
/**
 * Empty for a shell.
 */
command: Array<string>, persistent: boolean, 
/**
 * `running`, `exited`, or `lost` (its node no longer has it).
 */
status: string, exitCode?: number, error?: string, 
/**
 * TCP ports its processes listen on (as its node last reported).
 */
ports: Array<number>, 
/**
 * Where its ports are previewed: `<previewUrl><port>/`, on the previews' own origin.
 */
previewUrl: string, createdAt: string, endedAt?: string, };

export type TerminalList = { terminals: Array<TerminalView>, };

export type ViewerEvent = { "type": "output", offset: number, data: string, } | { "type": "skipped", from: number, to: number, } | { "type": "exit", code?: number | null, } | { "type": "error", message: string, };

export type ViewerInput = { "type": "input", data: string, } | { "type": "inputBytes", data: string, } | { "type": "resize", cols: number, rows: number, };

export type Event = { "type": "ready", nodesOnline: number, } | { "type": "gap", missed: number, } | { "type": "node.online", nodeId: string, name: string, } | { "type": "node.offline", nodeId: string, name: string, reason: string, } | { "type": "nodes.changed", online: number, offline: number, } | { "type": "pairing.requested", fingerprint: string, name: string, hostname: string, address: string, } | { "type": "pairing.changed", fingerprint: string, status: string, } | { "type": "node.config", nodeId: string, config: unknown, } | { "type": "environment.changed", environmentId: string, deleted?: boolean, } | { "type": "binding.status", bindingId: string, environmentId: string, nodeId: string, status: BindingStatus, step?: string, message?: string, } | { "type": "binding.log", bindingId: string, environmentId: string, seq: number, text: string, } | { "type": "task.created", taskId: string, nodeId: string | null, state: TaskState, } | { "type": "task.state", taskId: string, state: TaskState, } | { "type": "task.approval", taskId: string, 
/**
 * `awaiting approval`.
 */
status: string, approvalId: string, toolCallId: string, } | { "type": "task.progress", taskId: string, nodeId: string, event: unknown, } | { "type": "thread.changed", threadId: string, } | { "type": "job.changed", jobId: string, environmentId: string, };

