// The board's state: what the gateway knows (nodes, environments, threads), kept current by
// the gateway's event stream, plus the route and this browser's preferences.

import { useEffect, useReducer } from 'preact/hooks';
import { api, type Binding, type Environment, type NodeInfo, type PairingRequest, type Thread } from './api';

export type Route =
  | { page: 'home' }
  | { page: 'thread'; id: string }
  | { page: 'env-new' }
  | { page: 'env-edit'; id: string }
  | { page: 'env-map'; id: string }
  | { page: 'nodes' }
  | { page: 'audit' }
  | { page: 'usage' }
  | { page: 'settings' };

export interface BindingLog {
  seq: number;
  text: string;
}

export interface State {
  auth: 'unknown' | 'in' | 'out';
  loginError: string | null;
  loaded: boolean;
  loadError: string | null;
  live: boolean;
  nodes: NodeInfo[];
  /** Devices asking to join (pending, approved but not yet collected, rejected). */
  pairings: PairingRequest[];
  environments: Environment[];
  threads: Thread[];
  route: Route;
  currentEnvId: string | null;
  pinned: string[];
  /** Setup logs by binding id, as far as this page has seen them. */
  logs: Record<string, BindingLog[]>;
  /** Bumped on every task event, so open thread views refresh their task states. */
  taskTick: number;
  /** Bumped on job and task events, so open job lists refresh. */
  jobTick: number;
  sheetOpen: boolean;
  toast: string | null;
}

const PREF_ENV = 'viber.currentEnvironment';
const PREF_PINNED = 'viber.pinnedEnvironments';

function readPref<T>(key: string, fallback: T): T {
  try {
    const v = localStorage.getItem(key);
    return v ? (JSON.parse(v) as T) : fallback;
  } catch {
    return fallback;
  }
}

function writePref(key: string, value: unknown) {
  try {
    localStorage.setItem(key, JSON.stringify(value));
  } catch {
    /* private mode: preferences last for this page only */
  }
}

export function parseRoute(path: string): Route {
  const parts = path.split('/').filter(Boolean).map(decodeURIComponent);
  if (parts[0] === 'threads' && parts[1]) return { page: 'thread', id: parts[1] };
  if (parts[0] === 'environments' && parts[1] === 'new') return { page: 'env-new' };
  if (parts[0] === 'environments' && parts[1] && parts[2] === 'mappings') return { page: 'env-map', id: parts[1] };
  if (parts[0] === 'environments' && parts[1]) return { page: 'env-edit', id: parts[1] };
  if (parts[0] === 'nodes') return { page: 'nodes' };
  if (parts[0] === 'audit') return { page: 'audit' };
  if (parts[0] === 'usage') return { page: 'usage' };
  if (parts[0] === 'settings') return { page: 'settings' };
  return { page: 'home' };
}

let state: State = {
  auth: 'unknown',
  loginError: null,
  loaded: false,
  loadError: null,
  live: false,
  nodes: [],
  pairings: [],
  environments: [],
  threads: [],
  route: parseRoute(location.pathname),
  currentEnvId: readPref<string | null>(PREF_ENV, null),
  pinned: readPref<string[]>(PREF_PINNED, []),
  logs: {},
  taskTick: 0,
  jobTick: 0,
  sheetOpen: false,
  toast: null,
};

const listeners = new Set<() => void>();

export function setState(patch: Partial<State> | ((s: State) => Partial<State>)) {
  const p = typeof patch === 'function' ? patch(state) : patch;
  state = { ...state, ...p };
  if ('currentEnvId' in p) writePref(PREF_ENV, state.currentEnvId);
  if ('pinned' in p) writePref(PREF_PINNED, state.pinned);
  listeners.forEach((f) => f());
}

/** Re-renders the calling component whenever the state changes. */
export function useStore(): State {
  const [, bump] = useReducer((x: number) => x + 1, 0);
  useEffect(() => {
    const f = () => bump(0);
    listeners.add(f);
    return () => {
      listeners.delete(f);
    };
  }, []);
  return state;
}

export function navigate(path: string) {
  if (location.pathname !== path) history.pushState(null, '', path);
  setState({ route: parseRoute(path), sheetOpen: false });
  window.scrollTo(0, 0);
}

addEventListener('popstate', () => setState({ route: parseRoute(location.pathname) }));

let toastTimer = 0;
export function toast(message: string) {
  clearTimeout(toastTimer);
  setState({ toast: message });
  toastTimer = window.setTimeout(() => setState({ toast: null }), 5000);
}

export function errorText(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

// ---- derived views ---------------------------------------------------------------------

export function currentEnvironment(s: State): Environment | null {
  return s.environments.find((e) => e.id === s.currentEnvId) ?? s.environments[0] ?? null;
}

export type EnvStatus = 'Unmapped' | 'Preparing' | 'Ready' | 'Stale' | 'Error';

/** One pill for an environment: the best state among its bindings. */
export function envStatus(e: Environment): EnvStatus {
  const b = e.bindings;
  if (b.length === 0) return 'Unmapped';
  if (b.some((x) => x.status === 'ready')) return 'Ready';
  if (b.some((x) => x.status === 'preparing' || x.status === 'pending')) return 'Preparing';
  if (b.some((x) => x.status === 'stale')) return 'Stale';
  return 'Error';
}

export function nodeName(s: State, id: string | undefined): string {
  if (!id) return '';
  return s.nodes.find((n) => n.id === id)?.name ?? id;
}

export function bindingsOfNode(s: State, nodeId: string): { env: Environment; binding: Binding }[] {
  return s.environments.flatMap((env) =>
    env.bindings.filter((b) => b.nodeId === nodeId).map((binding) => ({ env, binding })),
  );
}

// ---- loading and live updates ------------------------------------------------------------

export async function loadAll() {
  try {
    const [nodes, pairings, environments, threads] = await Promise.all([
      api.nodes(),
      api.pairings(),
      api.environments(),
      api.threads(),
    ]);
    setState({ nodes, pairings, environments, threads, loaded: true, loadError: null });
  } catch (e) {
    setState({ loadError: errorText(e), loaded: true });
  }
}

type Collection = 'nodes' | 'pairings' | 'environments' | 'threads';
const pending = new Set<Collection>();
let refreshTimer = 0;

/** Refetches the named collections once the current burst of events is over. */
function refresh(what: Collection) {
  pending.add(what);
  if (refreshTimer) return;
  refreshTimer = window.setTimeout(async () => {
    refreshTimer = 0;
    const todo = [...pending];
    pending.clear();
    try {
      const patch: Partial<State> = {};
      await Promise.all(
        todo.map(async (k) => {
          if (k === 'nodes') patch.nodes = await api.nodes();
          if (k === 'pairings') patch.pairings = await api.pairings();
          if (k === 'environments') patch.environments = await api.environments();
          if (k === 'threads') patch.threads = await api.threads();
        }),
      );
      setState(patch);
    } catch {
      /* the next event or reconnect refreshes again */
    }
  }, 60);
}

/** Merges setup-log lines (from the backlog or live events, in any order) by their seq. */
export function appendLogs(bindingId: string, lines: BindingLog[]) {
  setState((s) => {
    const have = s.logs[bindingId] ?? [];
    const seen = new Set(have.map((l) => l.seq));
    const fresh = lines.filter((l) => !seen.has(l.seq));
    if (!fresh.length && s.logs[bindingId]) return {};
    const merged = [...have, ...fresh].sort((a, b) => a.seq - b.seq);
    return { logs: { ...s.logs, [bindingId]: merged } };
  });
}

/** Starts keeping a binding's setup log: live lines from now on, then the backlog. */
export async function openLog(environmentId: string, bindingId: string) {
  appendLogs(bindingId, []);
  try {
    appendLogs(bindingId, await api.bindingLogs(environmentId, bindingId));
  } catch (e) {
    toast(`setup log: ${errorText(e)}`);
  }
}

let source: EventSource | null = null;

const EVENTS = [
  'ready',
  'gap',
  'node.online',
  'node.offline',
  'nodes.changed',
  'node.config',
  'pairing.requested',
  'pairing.changed',
  'task.created',
  'task.state',
  'task.approval',
  'binding.status',
  'binding.log',
  'environment.changed',
  'thread.changed',
  'job.changed',
];

/** Subscribes to `/api/events`; every (re)connect refreshes everything, since events are not replayed. */
export function connectEvents() {
  source?.close();
  source = new EventSource('/api/events');
  source.onerror = () => setState({ live: false });
  for (const name of EVENTS) {
    source.addEventListener(name, (ev) => {
      let data: any = {};
      try {
        data = JSON.parse((ev as MessageEvent).data);
      } catch {
        return;
      }
      onEvent(name, data);
    });
  }
}

export function disconnectEvents() {
  source?.close();
  source = null;
}

function onEvent(name: string, data: any) {
  switch (name) {
    case 'ready':
    case 'gap':
      setState({ live: true });
      refresh('nodes');
      refresh('pairings');
      refresh('environments');
      refresh('threads');
      break;
    case 'pairing.requested':
      toast(`${data.name} (${data.hostname || 'unknown host'}, ${data.address}) asks to join as a node: approve or reject it on the Nodes page`);
      refresh('pairings');
      break;
    case 'pairing.changed':
      refresh('pairings');
      refresh('nodes');
      break;
    case 'node.online':
    case 'node.offline':
    case 'nodes.changed':
    case 'node.config':
      refresh('nodes');
      refresh('environments');
      break;
    case 'task.created':
    case 'task.state':
    case 'task.approval':
      setState((s) => ({ taskTick: s.taskTick + 1, jobTick: s.jobTick + 1 }));
      refresh('threads');
      refresh('nodes');
      break;
    case 'binding.status':
    case 'environment.changed':
      refresh('environments');
      break;
    case 'binding.log':
      if (data.bindingId && typeof data.seq === 'number') {
        // Only the logs someone has opened are kept; the first open loads the backlog.
        if (state.logs[data.bindingId]) appendLogs(data.bindingId, [{ seq: data.seq, text: data.text ?? '' }]);
      }
      break;
    case 'thread.changed':
      refresh('threads');
      break;
    case 'job.changed':
      setState((s) => ({ jobTick: s.jobTick + 1 }));
      break;
  }
}
