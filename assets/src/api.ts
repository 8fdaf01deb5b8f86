// The gateway's REST API as the board uses it. The browser authenticates with the session
// cookie; every write carries the session's CSRF token.

// Every shape the gateway sends is generated from the Rust protocol types
// (protocol.gen.ts; a Rust test fails when it drifts), so tsc checks the board against them.
import type * as P from './protocol.gen';

export type NodeInfo = P.NodeView;
export type PairingRequest = P.PairingRequestView;
export type Job = P.JobView;
export type BindingStatus = P.BindingPhase;
export type Binding = P.BindingView;
export type SecretInfo = P.SecretView;
export type EnvType = P.EnvKind;
export type Environment = P.EnvironmentView;
export type TaskState = P.TaskState;
export type Thread = P.ThreadView;
export type ThreadMessage = P.ThreadMessageView;
export type InjectionMode = P.InjectionMode;
export type ValidationResult = P.ValidationResult;
export type TerminalInfo = P.TerminalView;
/** What a terminal opens on: a thread (its environment's binding on the thread's node) or a binding. */
export type TerminalTarget = { threadId: string } | { bindingId: string };

export class ApiError extends Error {
  constructor(
    public status: number,
    public code: string,
    message: string,
  ) {
    super(message);
  }
}

let csrfToken: string | null = null;
let onUnauthorized: () => void = () => {};

export function setCsrfToken(token: string | null) {
  csrfToken = token;
}

/** Called when the session ends (expired, logged out elsewhere, gateway reset). */
export function handleUnauthorized(f: () => void) {
  onUnauthorized = f;
}

export async function request<T>(
  method: string,
  path: string,
  body?: unknown,
  extra: Record<string, string> = {},
): Promise<T> {
  const headers: Record<string, string> = { Accept: 'application/json', ...extra };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (method !== 'GET' && csrfToken) headers['X-CSRF-Token'] = csrfToken;
  let res: Response;
  try {
    res = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: 'same-origin',
    });
  } catch {
    throw new ApiError(0, 'network', 'cannot reach the gateway');
  }
  if (res.status === 204) return undefined as T;
  const text = await res.text();
  let json: any = undefined;
  try {
    json = text ? JSON.parse(text) : undefined;
  } catch {
    /* not JSON: reported below */
  }
  if (!res.ok) {
    const err = json?.error;
    if (res.status === 401 && path !== '/api/session') onUnauthorized();
    throw new ApiError(res.status, err?.code ?? 'http', err?.message ?? `${res.status} ${res.statusText}`);
  }
  return json as T;
}

const get = <T>(path: string) => request<T>('GET', path);
const enc = encodeURIComponent;

/**
 * A terminal's viewer WebSocket, from byte `offset` of its output on. A browser cannot put a
 * header on a WebSocket, so the session's CSRF token rides in the query (the gateway wants it
 * there for a cookie-authenticated socket).
 */
export function terminalSocketUrl(id: string, offset: number): string {
  const q = new URLSearchParams({ offset: String(offset) });
  if (csrfToken) q.set('csrf', csrfToken);
  const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
  return `${scheme}//${location.host}/api/terminals/${enc(id)}/ws?${q}`;
}

export const api = {
  session: () => get<P.SessionInfo>('/api/session'),
  login: (token: string) => request<P.SessionOpened>('POST', '/api/session', { token }),
  logout: () => request<void>('DELETE', '/api/session'),
  health: () => get<P.Health>('/health'),
  audit: (before?: number) =>
    get<P.AuditPage>(`/api/audit?limit=100${before === undefined ? '' : `&before=${before}`}`),

  nodes: () => get<P.NodeList>('/api/nodes').then((r) => r.nodes),
  enroll: (name: string) =>
    request<{ token: string; expiresAt: string; command: string }>('POST', '/api/nodes/enroll', { name }),
  revokeNode: (id: string) => request<void>('DELETE', `/api/nodes/${enc(id)}`),
  checkConfig: (id: string) => request<P.ConfigPushed>('POST', `/api/nodes/${enc(id)}/config-push`, {}),
  pairings: () => get<P.PairingList>('/api/nodes/pending').then((r) => r.requests),
  approvePairing: (fingerprint: string, name?: string) =>
    request<P.PairingDecided>('POST', `/api/nodes/pending/${enc(fingerprint)}/approve`, name ? { name } : {}),
  rejectPairing: (fingerprint: string) =>
    request<P.PairingDecided>('POST', `/api/nodes/pending/${enc(fingerprint)}/reject`, {}),

  usage: (from: string, to: string) => get<P.UsageReport>(`/api/usage?from=${enc(from)}&to=${enc(to)}`),
  sharedConfig: () => get<P.SharedConfig>('/api/config'),
  setShared: (key: string, body: P.SetShared) => request<P.SharedConfig>('PUT', `/api/config/${enc(key)}`, body),
  deleteShared: (key: string) => request<void>('DELETE', `/api/config/${enc(key)}`),
  jobs: (environmentId: string) => get<P.JobList>(`/api/environments/${enc(environmentId)}/jobs`).then((r) => r.jobs),
  createJob: (environmentId: string, body: P.CreateJob) => request<Job>('POST', `/api/environments/${enc(environmentId)}/jobs`, body),
  updateJob: (id: string, body: P.UpdateJob) => request<Job>('PATCH', `/api/jobs/${enc(id)}`, body),
  deleteJob: (id: string) => request<void>('DELETE', `/api/jobs/${enc(id)}`),
  runJob: (id: string) => request<P.JobRunView>('POST', `/api/jobs/${enc(id)}/run`),

  environments: () => get<P.EnvironmentList>('/api/environments').then((r) => r.environments),
  environment: (id: string) => get<Environment>(`/api/environments/${enc(id)}`),
  createEnvironment: (body: unknown) => request<Environment>('POST', '/api/environments', body),
  updateEnvironment: (id: string, body: unknown) => request<Environment>('PUT', `/api/environments/${enc(id)}`, body),
  deleteEnvironment: (id: string) => request<void>('DELETE', `/api/environments/${enc(id)}`),
  validate: (id: string) => request<ValidationResult>('POST', `/api/environments/${enc(id)}/validate`, {}),
  bind: (id: string, body: { nodeId: string; strategy: string; path?: string }) =>
    request<P.BindingView>('POST', `/api/environments/${enc(id)}/bindings`, body),
  prepare: (id: string, bid: string, force: boolean) =>
    request<P.BindingView>('POST', `/api/environments/${enc(id)}/bindings/${enc(bid)}/prepare`, { force }),
  bindingLogs: (id: string, bid: string) =>
    get<P.LogList>(`/api/environments/${enc(id)}/bindings/${enc(bid)}/logs`).then(
      (r) => r.logs,
    ),

  threads: () => get<P.ThreadList>('/api/threads').then((r) => r.threads),
  thread: (id: string) => get<Thread>(`/api/threads/${enc(id)}`),
  createThread: (environmentId: string, title?: string) =>
    request<Thread>('POST', '/api/threads', { environmentId, title }),
  patchThread: (id: string, body: { title?: string; status?: string }) =>
    request<Thread>('PATCH', `/api/threads/${enc(id)}`, body),
  messages: (id: string) =>
    get<P.ThreadMessages>(`/api/threads/${enc(id)}/messages?output=false`).then((r) => r.messages),
  /** `key` makes a retried send (double click, flaky network) deliver the message once. */
  send: (id: string, body: { message: string; injectionMode?: InjectionMode; executor?: string }, key: string) =>
    request<{ taskId: string } & Partial<P.FollowUpAccepted>>('POST', `/api/threads/${enc(id)}/messages`, body, { 'Idempotency-Key': key }),

  /** What the thread changed in its worktree (commits, uncommitted and untracked files). */
  diff: (id: string) => get<P.ThreadDiff>(`/api/threads/${enc(id)}/diff`),
  commit: (id: string, message?: string) =>
    request<P.GitOutcome>('POST', `/api/threads/${enc(id)}/commit`, message ? { message } : {}),
  push: (id: string) => request<P.GitOutcome>('POST', `/api/threads/${enc(id)}/push`, {}),
  pullRequest: (id: string, body: { title?: string; body?: string; draft?: boolean }) =>
    request<P.PullRequestView>('POST', `/api/threads/${enc(id)}/pull-request`, body),
  sync: (id: string, mode: P.SyncMode) => request<P.GitOutcome>('POST', `/api/threads/${enc(id)}/sync`, { mode }),

  /** Running terminals of a thread or binding, newest first. */
  terminals: (target: TerminalTarget) =>
    get<P.TerminalList>(`/api/terminals?${new URLSearchParams(target)}`).then((r) => r.terminals),
  terminal: (id: string) => get<TerminalInfo>(`/api/terminals/${enc(id)}`),
  /** A login shell kept in tmux, sized like the viewer's window. */
  openTerminal: (target: TerminalTarget, cols: number, rows: number) =>
    request<TerminalInfo>('POST', '/api/terminals', { ...target, cols, rows }),
  closeTerminal: (id: string) => request<TerminalInfo>('DELETE', `/api/terminals/${enc(id)}`),

  stop: (id: string) => request<P.TaskView>('POST', `/api/tasks/${enc(id)}/stop`, {}),
  approve: (id: string, approvalId: string, approve: boolean, scope?: P.ApprovalScope) =>
    request<P.ApprovalAnswered>('POST', `/api/tasks/${enc(id)}/approvals/${enc(approvalId)}`, {
      approve,
      ...(scope ? { scope } : {}),
    } satisfies P.ApprovalAnswer),
};
