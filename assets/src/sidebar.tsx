// The sidebar: current environment, New Thread, thread search and list, environments, and
// node health. On a phone it is the first screen; environment management opens as a sheet.

import { useEffect, useRef, useState } from 'preact/hooks';
import { api, type Environment, type Thread } from './api';
import {
  currentEnvironment,
  envStatus,
  errorText,
  navigate,
  nodeName,
  setState,
  toast,
  useStore,
  type State,
} from './store';
import { Pill, RelTime } from './ui';

export async function newThread(env: Environment | null) {
  if (!env) {
    navigate('/environments/new');
    return;
  }
  try {
    const t = await api.createThread(env.id);
    setState((s) => ({ threads: [t, ...s.threads.filter((x) => x.id !== t.id)] }));
    navigate(`/threads/${t.id}`);
  } catch (e) {
    toast(`New thread: ${errorText(e)}`);
  }
}

function groupThreads(threads: Thread[], now = Date.now()) {
  const day = new Date(now);
  day.setHours(0, 0, 0, 0);
  const today: Thread[] = [];
  const week: Thread[] = [];
  const older: Thread[] = [];
  const archived: Thread[] = [];
  for (const t of threads) {
    const at = Date.parse(t.lastMessageAt ?? t.createdAt);
    if (t.status === 'archived') archived.push(t);
    else if (at >= day.getTime()) today.push(t);
    else if (at >= day.getTime() - 6 * 86400_000) week.push(t);
    else older.push(t);
  }
  return [
    ['Today', today],
    ['Last 7 days', week],
    ['Older', older],
    ['Archived', archived],
  ] as const;
}

function ThreadItem({ t, s }: { t: Thread; s: State }) {
  const active = s.route.page === 'thread' && s.route.id === t.id;
  const href = `/threads/${t.id}`;
  return (
    <li>
      <a
        href={href}
        class={`thread-item${active ? ' active' : ''}`}
        aria-current={active ? 'page' : undefined}
        onClick={(e) => {
          e.preventDefault();
          navigate(href);
        }}
      >
        <span class="thread-title">{t.title}</span>
        <span class="thread-meta">
          <RelTime iso={t.lastMessageAt ?? t.createdAt} />
          {t.activeNodeId && <span class="badge">{nodeName(s, t.activeNodeId)}</span>}
          {t.lastTaskState && <Pill status={t.lastTaskState} />}
        </span>
      </a>
    </li>
  );
}

export function EnvironmentSwitcher({ s }: { s: State }) {
  const env = currentEnvironment(s);
  if (!s.environments.length) {
    return (
      <button class="env-switch" onClick={() => navigate('/environments/new')}>
        <span class="env-name">No environment yet</span>
        <span class="muted-text">Create one</span>
      </button>
    );
  }
  return (
    <div class="env-switch-row">
      <label class="sr-only" for="env-select">
        Current environment
      </label>
      <select
        id="env-select"
        class="env-select"
        value={env?.id}
        onChange={(e) => setState({ currentEnvId: (e.target as HTMLSelectElement).value })}
      >
        {s.environments.map((e) => (
          <option key={e.id} value={e.id}>
            {e.name}
          </option>
        ))}
      </select>
      {env && <Pill status={envStatus(env)} />}
    </div>
  );
}

export function EnvironmentList({ s }: { s: State }) {
  const cur = currentEnvironment(s);
  const envs = [...s.environments].sort((a, b) => {
    const pa = s.pinned.includes(a.id) ? 0 : 1;
    const pb = s.pinned.includes(b.id) ? 0 : 1;
    return pa - pb || a.name.localeCompare(b.name);
  });
  const togglePin = (id: string) =>
    setState((st) => ({ pinned: st.pinned.includes(id) ? st.pinned.filter((x) => x !== id) : [...st.pinned, id] }));
  return (
    <section class="env-section" aria-label="Environments">
      <h3>Environments</h3>
      <ul class="env-list">
        {envs.map((e) => (
          <li key={e.id} class={e.id === cur?.id ? 'active' : ''}>
            <button
              class="pin"
              aria-pressed={s.pinned.includes(e.id)}
              title={s.pinned.includes(e.id) ? 'Unpin' : 'Pin'}
              onClick={() => togglePin(e.id)}
            >
              {s.pinned.includes(e.id) ? '★' : '☆'}
            </button>
            <button
              class="env-link"
              onClick={() => {
                setState({ currentEnvId: e.id, sheetOpen: false });
              }}
            >
              {e.name}
            </button>
            <Pill status={envStatus(e)} />
            <button class="icon" title={`Edit ${e.name}`} aria-label={`Edit ${e.name}`} onClick={() => navigate(`/environments/${e.id}`)}>
              ✎
            </button>
          </li>
        ))}
      </ul>
      <div class="env-actions">
        <button onClick={() => navigate('/environments/new')}>Create Environment</button>
        <button disabled={!cur} onClick={() => cur && navigate(`/environments/${cur.id}/mappings`)}>
          Manage Mappings
        </button>
      </div>
    </section>
  );
}

export function Sidebar() {
  const s = useStore();
  const [query, setQuery] = useState('');
  const env = currentEnvironment(s);
  const q = query.trim().toLowerCase();
  const threads = s.threads.filter(
    (t) => (!env || t.environmentId === env.id) && (!q || t.title.toLowerCase().includes(q)),
  );
  const online = s.nodes.filter((n) => n.status === 'online').length;
  const waiting = s.pairings.filter((p) => p.status === 'pending').length;
  return (
    <nav class="sidebar" aria-label="Threads and environments">
      <div class="brand">
        <a
          href="/"
          onClick={(e) => {
            e.preventDefault();
            navigate('/');
          }}
        >
          viber
        </a>
        <span class={`live-dot ${s.live ? 'on' : ''}`} title={s.live ? 'live' : 'reconnecting'} />
        <button class="mobile-only icon" aria-label="Environments" onClick={() => setState({ sheetOpen: true })}>
          ☰
        </button>
      </div>
      <EnvironmentSwitcher s={s} />
      <button class="primary new-thread" onClick={() => newThread(env)}>
        New Thread
      </button>
      <input
        type="search"
        class="search"
        placeholder="Search threads"
        aria-label="Search threads"
        value={query}
        onInput={(e) => setQuery((e.target as HTMLInputElement).value)}
      />
      <div class="thread-groups">
        {threads.length === 0 && (
          <p class="muted-text empty-threads">
            {q ? 'No thread matches.' : env ? 'No threads yet. Start one with New Thread.' : 'Create an environment to start.'}
          </p>
        )}
        {groupThreads(threads).map(([label, list]) =>
          list.length ? (
            <section key={label} class="thread-group">
              <h3>{label}</h3>
              <ul>
                {list.map((t) => (
                  <ThreadItem key={t.id} t={t} s={s} />
                ))}
              </ul>
            </section>
          ) : null,
        )}
      </div>
      <div class="desktop-only">
        <EnvironmentList s={s} />
      </div>
      <footer class="sidebar-footer">
        <a
          href="/nodes"
          class="node-health"
          onClick={(e) => {
            e.preventDefault();
            navigate('/nodes');
          }}
        >
          <span class="dot ok" /> {online} online
          <span class="dot muted" /> {s.nodes.length - online} offline
          {waiting > 0 && (
            <span class="badge" data-pairing-count title="Devices asking to join">
              {waiting} waiting
            </span>
          )}
        </a>
        <a
          href="/usage"
          onClick={(e) => {
            e.preventDefault();
            navigate('/usage');
          }}
        >
          Usage
        </a>
        <a
          href="/audit"
          onClick={(e) => {
            e.preventDefault();
            navigate('/audit');
          }}
        >
          Audit
        </a>
        <a
          href="/settings"
          onClick={(e) => {
            e.preventDefault();
            navigate('/settings');
          }}
        >
          Settings
        </a>
      </footer>
    </nav>
  );
}

/** The phone's environment sheet: the same section the desktop sidebar shows. */
export function EnvironmentSheet() {
  const s = useStore();
  const close = useRef<HTMLButtonElement>(null);
  useEffect(() => {
    if (s.sheetOpen) close.current?.focus();
  }, [s.sheetOpen]);
  if (!s.sheetOpen) return null;
  return (
    <div class="sheet-backdrop" onClick={() => setState({ sheetOpen: false })}>
      <div
        class="sheet"
        role="dialog"
        aria-modal="true"
        aria-label="Environments"
        onClick={(e) => e.stopPropagation()}
        onKeyDown={(e) => e.key === 'Escape' && setState({ sheetOpen: false })}
      >
        <div class="sheet-head">
          <strong>Environments</strong>
          <button class="icon" ref={close} aria-label="Close" onClick={() => setState({ sheetOpen: false })}>
            ✕
          </button>
        </div>
        <EnvironmentList s={s} />
      </div>
    </div>
  );
}
