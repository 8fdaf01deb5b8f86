// The gateway's REST API as the board uses it. The browser authenticates with the session
// cookie; every write carries the session's CSRF token.

export interface NodeInfo {
  id: string;
  name: string;
  version?: string;
  platform?: string;
  capabilities?: string[];
  status: 'online' | 'offline';
  runningTasks: string[];
  enrolledAt: string;
  lastSeen?: string;
  connectedAt?: string;
  memoryRssBytes?: number;
  uptimeSecs?: number;
}

export type BindingStatus = 'pending' | 'preparing' | 'ready' | 'error' | 'stale';

export interface Binding {
  id: string;
  environmentId: string;
  nodeId: string;
  nodeOnline: boolean;
  strategy: 'auto' | 'existing-path';
  status: BindingStatus;
  createdAt: string;
  path?: string;
  resolvedWorkingDir?: string;
  step?: string;
  lastError?: string;
  commit?: string;
  preparedVersion?: number;
  lastPrepareAt?: string;
}

export interface SecretInfo {
  value: string;
  scope: 'runtime' | 'setup';
  updatedAt: string;
}

export type EnvType = 'git' | 'github' | 'local' | 'manual';

export interface Environment {
  id: string;
  name: string;
  description: string;
  type: EnvType;
  workingDir: string;
  setupScript: string;
  networkAccess: boolean;
  persistVolume: boolean;
  version: number;
  vars: Record<string, string>;
  secrets: Record<string, SecretInfo>;
  bindings: Binding[];
  createdAt: string;
  updatedAt: string;
  repoUrl?: string;
  repoOrg?: string;
  repoName?: string;
  repoBranch?: string;
  localPath?: string;
  defaultExecutor?: string;
  metadata?: Record<string, unknown>;
  warnings?: string[];
}

export type TaskState = 'pending' | 'running' | 'completed' | 'error' | 'stopped';

export interface Thread {
  id: string;
  environmentId: string;
  title: string;
  status: 'active' | 'paused' | 'archived';
  createdAt: string;
  updatedAt: string;
  activeNodeId?: string;
  lastMessageAt?: string;
  lastTaskId?: string;
  lastTaskState?: TaskState;
}

export interface ThreadMessage {
  id: number;
  message: string;
  taskId: string;
  createdAt: string;
  injectionMode?: InjectionMode;
  task?: {
    state: TaskState;
    executor: string;
    exitCode?: number | null;
    error?: string | null;
    usage?: { inputTokens: number; outputTokens: number; model?: string };
  };
}

export type InjectionMode = 'followup' | 'collect' | 'steer';

export interface ValidationResult {
  ok: boolean;
  checks: { name: string; ok: boolean; message: string; line?: number }[];
}

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

export const api = {
  session: () => get<{ authenticated: boolean; csrfToken?: string }>('/api/session'),
  login: (token: string) => request<{ csrfToken: string }>('POST', '/api/session', { token }),
  logout: () => request<void>('DELETE', '/api/session'),
  health: () => get<{ version: string; uptimeSecs: number }>('/health'),

  nodes: () => get<{ nodes: NodeInfo[] }>('/api/nodes').then((r) => r.nodes),
  enroll: (name: string) =>
    request<{ token: string; expiresAt: string; command: string }>('POST', '/api/nodes/enroll', { name }),
  revokeNode: (id: string) => request<void>('DELETE', `/api/nodes/${enc(id)}`),

  environments: () => get<{ environments: Environment[] }>('/api/environments').then((r) => r.environments),
  environment: (id: string) => get<Environment>(`/api/environments/${enc(id)}`),
  createEnvironment: (body: unknown) => request<Environment>('POST', '/api/environments', body),
  updateEnvironment: (id: string, body: unknown) => request<Environment>('PUT', `/api/environments/${enc(id)}`, body),
  deleteEnvironment: (id: string) => request<void>('DELETE', `/api/environments/${enc(id)}`),
  validate: (id: string) => request<ValidationResult>('POST', `/api/environments/${enc(id)}/validate`, {}),
  bind: (id: string, body: { nodeId: string; strategy: string; path?: string }) =>
    request<Binding>('POST', `/api/environments/${enc(id)}/bindings`, body),
  prepare: (id: string, bid: string, force: boolean) =>
    request<unknown>('POST', `/api/environments/${enc(id)}/bindings/${enc(bid)}/prepare`, { force }),
  bindingLogs: (id: string, bid: string) =>
    get<{ logs: { seq: number; text: string }[] }>(`/api/environments/${enc(id)}/bindings/${enc(bid)}/logs`).then(
      (r) => r.logs,
    ),

  threads: () => get<{ threads: Thread[] }>('/api/threads').then((r) => r.threads),
  thread: (id: string) => get<Thread>(`/api/threads/${enc(id)}`),
  createThread: (environmentId: string, title?: string) =>
    request<Thread>('POST', '/api/threads', { environmentId, title }),
  patchThread: (id: string, body: { title?: string; status?: string }) =>
    request<Thread>('PATCH', `/api/threads/${enc(id)}`, body),
  messages: (id: string) =>
    get<{ messages: ThreadMessage[] }>(`/api/threads/${enc(id)}/messages?output=false`).then((r) => r.messages),
  /** `key` makes a retried send (double click, flaky network) deliver the message once. */
  send: (id: string, body: { message: string; injectionMode?: InjectionMode; executor?: string }, key: string) =>
    request<{ taskId: string }>('POST', `/api/threads/${enc(id)}/messages`, body, { 'Idempotency-Key': key }),

  stop: (id: string) => request<unknown>('POST', `/api/tasks/${enc(id)}/stop`, {}),
  approve: (id: string, approvalId: string, approve: boolean) =>
    request<unknown>('POST', `/api/tasks/${enc(id)}/approvals/${enc(approvalId)}`, { approve }),
};
