// The nodes page (status, bindings, enroll, revoke, devices asking to join) and settings.

import { useEffect, useState } from 'preact/hooks';
import { api, type PairingRequest } from './api';
import { bindingsOfNode, errorText, navigate, setState, toast, useStore } from './store';
import { SharedCredentials } from './shared';
import { Empty, ErrorBox, Pill, RelTime } from './ui';

function AddNode() {
  const [name, setName] = useState('');
  const [result, setResult] = useState<{ command: string; expiresAt: string } | null>(null);
  const [error, setError] = useState<string | null>(null);
  const add = async () => {
    setError(null);
    try {
      setResult(await api.enroll(name.trim() || 'node'));
      setName('');
    } catch (e) {
      setError(errorText(e));
    }
  };
  return (
    <section class="card">
      <h2>Add node</h2>
      <form
        class="inline-form"
        onSubmit={(e) => {
          e.preventDefault();
          add();
        }}
      >
        <label>
          Name
          <input value={name} placeholder="build-01" onInput={(e) => setName((e.target as HTMLInputElement).value)} />
        </label>
        <button class="primary" type="submit">
          Add node
        </button>
      </form>
      <ErrorBox message={error} />
      {result && (
        <div class="enroll">
          <p>
            Run this on the new machine. The token works once and expires <RelTime iso={result.expiresAt} /> (
            {new Date(result.expiresAt).toLocaleString()}):
          </p>
          <pre class="terminal copyable">{result.command}</pre>
          <button onClick={() => navigator.clipboard?.writeText(result.command).then(() => toast('Copied'), () => toast('Copy failed: select the text instead'))}>
            Copy
          </button>
        </div>
      )}
    </section>
  );
}

/** Devices that started without a token and wait for an operator (device pairing). */
function Pairings({ requests }: { requests: PairingRequest[] }) {
  const [names, setNames] = useState<Record<string, string>>({});
  if (requests.length === 0) return null;
  const decide = async (r: PairingRequest, approve: boolean) => {
    if (!approve && !confirm(`Reject ${r.name} (${r.fingerprint})? Its key is refused from now on.`)) return;
    try {
      const d = approve
        ? await api.approvePairing(r.fingerprint, names[r.fingerprint]?.trim() || undefined)
        : await api.rejectPairing(r.fingerprint);
      toast(
        approve
          ? d.delivered
            ? `${d.name} approved: it is coming online`
            : `${d.name} approved: it joins when it next connects`
          : `${d.name} rejected`,
      );
      setState({ pairings: await api.pairings() });
    } catch (e) {
      toast(`${approve ? 'Approve' : 'Reject'}: ${errorText(e)}`);
    }
  };
  return (
    <section class="card" data-pairings>
      <h2>Asking to join</h2>
      <p class="muted-text">
        Machines started with <code>viber node --gateway {location.origin}</code> and no token. Check the fingerprint
        against the one the machine prints before you approve it.
      </p>
      <ul class="plain pairing-list">
        {requests.map((r) => (
          <li key={r.fingerprint} data-pairing={r.fingerprint}>
            <div class="binding-head">
              <strong>{r.name}</strong>
              <Pill status={r.status === 'pending' ? (r.waiting ? 'waiting' : 'away') : r.status} />
            </div>
            <dl class="facts">
              <dt>Fingerprint</dt>
              <dd>
                <code>{r.fingerprint}</code>
              </dd>
              <dt>Host</dt>
              <dd>
                {r.hostname || '—'} · {r.platform || '—'} · {r.version || '—'}
              </dd>
              <dt>Address</dt>
              <dd>{r.address}</dd>
              <dt>Asked</dt>
              <dd>
                <RelTime iso={r.requestedAt} />
              </dd>
            </dl>
            {r.status !== 'approved' && (
              <form
                class="inline-form"
                onSubmit={(e) => {
                  e.preventDefault();
                  decide(r, true);
                }}
              >
                <label>
                  Name
                  <input
                    value={names[r.fingerprint] ?? ''}
                    placeholder={r.name}
                    onInput={(e) => setNames({ ...names, [r.fingerprint]: (e.target as HTMLInputElement).value })}
                  />
                </label>
                <button class="primary" type="submit">
                  Approve
                </button>
                {r.status === 'pending' && (
                  <button class="danger" type="button" onClick={() => decide(r, false)}>
                    Reject
                  </button>
                )}
              </form>
            )}
          </li>
        ))}
      </ul>
    </section>
  );
}

export function NodesPage() {
  const s = useStore();
  const revoke = async (id: string, name: string) => {
    if (!confirm(`Revoke node ${name}? It is disconnected and can no longer connect.`)) return;
    try {
      await api.revokeNode(id);
      setState((st) => ({ nodes: st.nodes.filter((n) => n.id !== id) }));
    } catch (e) {
      toast(`Revoke: ${errorText(e)}`);
    }
  };
  const checkConfig = async (id: string) => {
    try {
      const r = await api.checkConfig(id);
      toast(r.delivered ? 'Checking its config; results appear on the card' : 'The node is away: it checks its config when it is back');
    } catch (e) {
      toast(`Check config: ${errorText(e)}`);
    }
  };
  return (
    <div class="page">
      <header class="page-head">
        <h1>Nodes</h1>
      </header>
      <Pairings requests={s.pairings} />
      <AddNode />
      {s.nodes.length === 0 && <Empty title="No nodes yet">Add one above, or run <code>viber all-in-one</code>.</Empty>}
      <div class="node-grid">
        {s.nodes.map((n) => {
          const bindings = bindingsOfNode(s, n.id);
          return (
            <section key={n.id} class="card node" data-node={n.id}>
              <div class="binding-head">
                <h2>{n.name}</h2>
                <Pill status={n.status} />
                <button class="small" onClick={() => checkConfig(n.id)}>
                  Check config
                </button>
                <button class="danger small" onClick={() => revoke(n.id, n.name)}>
                  Revoke
                </button>
              </div>
              <dl class="facts">
                <dt>ID</dt>
                <dd>
                  <code>{n.id}</code>
                </dd>
                <dt>Version</dt>
                <dd>{n.version ?? '—'}</dd>
                <dt>Platform</dt>
                <dd>{n.platform ?? '—'}</dd>
                <dt>Sandbox</dt>
                <dd data-sandbox>
                  {n.sandbox === 'missing' ? (
                    <span class="bad-text">none: install bubblewrap or start the node with --sandbox off; it refuses tasks</span>
                  ) : n.sandbox === 'off' ? (
                    <span class="bad-text">off: tasks run with the node's files and network</span>
                  ) : (
                    n.sandbox ?? '—'
                  )}
                </dd>
                <dt>Last seen</dt>
                <dd>{n.status === 'online' ? 'now' : <RelTime iso={n.lastSeen} />}</dd>
                <dt>Running tasks</dt>
                <dd>{n.runningTasks.length}</dd>
                {n.memoryRssBytes != null && (
                  <>
                    <dt>Memory</dt>
                    <dd>{(n.memoryRssBytes / 1048576).toFixed(1)} MiB</dd>
                  </>
                )}
              </dl>
              {n.config && (
                <>
                  <h3>Config checks</h3>
                  <ul class="plain" data-config-checks>
                    {n.config.validations.map((v) => (
                      <li key={v.category}>
                        {v.category} <Pill status={v.status} />
                        {v.message && <span class="muted-text"> {v.message}</span>}
                      </li>
                    ))}
                  </ul>
                </>
              )}
              <h3>Environments</h3>
              {bindings.length === 0 ? (
                <p class="muted-text">No environment mapped here.</p>
              ) : (
                <ul class="plain">
                  {bindings.map(({ env, binding }) => (
                    <li key={binding.id}>
                      <a href={`/environments/${env.id}/mappings`} onClick={(e) => (e.preventDefault(), navigate(`/environments/${env.id}/mappings`))}>
                        {env.name}
                      </a>{' '}
                      <Pill status={binding.status} />
                    </li>
                  ))}
                </ul>
              )}
            </section>
          );
        })}
      </div>
    </div>
  );
}

export function SettingsPage({ onLogout }: { onLogout: () => void }) {
  const [health, setHealth] = useState<{ version: string; uptimeSecs: number } | null>(null);
  const [error, setError] = useState<string | null>(null);
  useEffect(() => {
    api.health().then(setHealth, (e) => setError(errorText(e)));
  }, []);
  return (
    <div class="page">
      <header class="page-head">
        <h1>Settings</h1>
      </header>
      <ErrorBox message={error} />
      <section class="card">
        <h2>Gateway</h2>
        <dl class="facts">
          <dt>Version</dt>
          <dd>{health?.version ?? '…'}</dd>
          <dt>Uptime</dt>
          <dd>{health ? `${Math.floor(health.uptimeSecs / 60)} min` : '…'}</dd>
          <dt>Address</dt>
          <dd>
            <code>{location.origin}</code>
          </dd>
        </dl>
      </section>
      <SharedCredentials />
      <section class="card">
        <h2>Session</h2>
        <p>This browser is signed in with a session cookie. Signing out ends it here.</p>
        <button
          class="danger"
          onClick={async () => {
            try {
              await api.logout();
            } catch {
              /* signed out either way */
            }
            onLogout();
          }}
        >
          Sign out
        </button>
      </section>
    </div>
  );
}
