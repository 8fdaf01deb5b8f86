// Create and edit an environment; map it to nodes, watch it prepare, open a terminal on it.

import { useEffect, useRef, useState } from 'preact/hooks';
import { api, type EnvType, type Environment, type SecretInfo, type ValidationResult } from './api';
import type * as P from './protocol.gen';
import { EXECUTORS } from './executors';
import { errorText, navigate, openLog, setState, toast, useStore } from './store';
import { Empty, ErrorBox, Pill, RelTime, Terminal } from './ui';

interface Row {
  key: string;
  value: string;
}

interface SecretRow {
  key: string;
  /** The new value; empty keeps the stored one. */
  value: string;
  scope: 'runtime' | 'setup';
  /** Deliver as this file in the agent CLIs' home instead of a variable; empty: a variable. */
  file: string;
  stored?: SecretInfo;
  removed?: boolean;
}

interface Draft {
  name: string;
  description: string;
  type: EnvType;
  repoUrl: string;
  repoBranch: string;
  localPath: string;
  workingDir: string;
  setupScript: string;
  networkAccess: P.NetworkAccess;
  networkAllowlist: string;
  persistVolume: boolean;
  containerImage: string;
  defaultExecutor: string;
  workingMode: string;
  vars: Row[];
  secrets: SecretRow[];
}

function draftOf(e: Environment | null): Draft {
  return {
    name: e?.name ?? '',
    description: e?.description ?? '',
    type: e?.type ?? 'git',
    repoUrl: e?.repoUrl ?? (e?.repoOrg && e?.repoName ? `https://github.com/${e.repoOrg}/${e.repoName}` : ''),
    repoBranch: e?.repoBranch ?? '',
    localPath: e?.localPath ?? '',
    workingDir: e?.workingDir ?? '',
    setupScript: e?.setupScript ?? '',
    networkAccess: e?.networkAccess ?? 'on',
    networkAllowlist: (e?.networkAllowlist ?? []).join('\n'),
    persistVolume: e?.persistVolume ?? false,
    containerImage: e?.containerImage ?? '',
    defaultExecutor: e?.defaultExecutor ?? '',
    workingMode: typeof e?.metadata?.workingMode === 'string' ? (e.metadata.workingMode as string) : '',
    vars: Object.entries(e?.vars ?? {}).map(([key, value]) => ({ key, value })),
    secrets: Object.entries(e?.secrets ?? {}).map(([key, stored]) => ({ key, value: '', scope: stored.scope, file: stored.file ?? '', stored })),
  };
}

/** The request body: everything for a new environment, vars in full and only changed secrets. */
function bodyOf(d: Draft, isNew: boolean) {
  const vars: Record<string, string> = {};
  for (const r of d.vars) if (r.key.trim()) vars[r.key.trim()] = r.value;
  const secrets: Record<string, { value: string; scope: string; file?: string } | null> = {};
  for (const s of d.secrets) {
    const key = s.key.trim();
    if (!key) continue;
    if (s.removed) {
      if (s.stored) secrets[key] = null;
    } else if (s.value) secrets[key] = { value: s.value, scope: s.scope, ...(s.file.trim() ? { file: s.file.trim() } : {}) };
  }
  const body: Record<string, unknown> = {
    name: d.name.trim(),
    description: d.description,
    type: d.type,
    workingDir: d.workingDir,
    setupScript: d.setupScript,
    networkAccess: d.networkAccess,
    networkAllowlist: d.networkAllowlist
      .split(/[\s,]+/)
      .map((h) => h.trim())
      .filter(Boolean),
    persistVolume: d.persistVolume,
    containerImage: d.containerImage.trim(),
    vars,
  };
  if (d.type === 'git' || d.type === 'github') {
    body.repoUrl = d.repoUrl.trim();
    if (d.repoBranch.trim()) body.repoBranch = d.repoBranch.trim();
  }
  if (d.type === 'local') body.localPath = d.localPath.trim();
  if (d.defaultExecutor) body.defaultExecutor = d.defaultExecutor;
  // Metadata merges key by key on the server; null removes the key.
  body.metadata = { workingMode: d.workingMode || null };
  if (Object.keys(secrets).length || isNew) body.secrets = secrets;
  return body;
}

function Validation({ result }: { result: ValidationResult | null }) {
  if (!result) return null;
  return (
    <ul class={`checks ${result.ok ? 'ok' : 'bad'}`} aria-label="Validation result">
      {result.checks.map((c) => (
        <li key={c.name} class={c.ok ? 'ok-text' : 'bad-text'}>
          {c.ok ? '✓' : '✗'} <strong>{c.name}</strong>: {c.message}
          {c.line ? ` (line ${c.line})` : ''}
        </li>
      ))}
    </ul>
  );
}

export function EnvironmentForm({ id }: { id?: string }) {
  const s = useStore();
  const existing = id ? s.environments.find((e) => e.id === id || e.name === id) ?? null : null;
  const [draft, setDraft] = useState<Draft>(() => draftOf(existing));
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const [validation, setValidation] = useState<ValidationResult | null>(null);
  const loadedFor = useRef<string | null>(existing?.id ?? null);
  useEffect(() => {
    // The list arrives after a reload: fill the form once the environment is known.
    if (existing && loadedFor.current !== existing.id) {
      loadedFor.current = existing.id;
      setDraft(draftOf(existing));
    }
  }, [existing?.id]);

  if (id && !existing) {
    return s.loaded ? <Empty title="No such environment" /> : <div class="loading">Loading…</div>;
  }
  const set = (patch: Partial<Draft>) => setDraft((d) => ({ ...d, ...patch }));
  const field = (k: keyof Draft) => ({
    value: draft[k] as string,
    onInput: (e: Event) => set({ [k]: (e.target as HTMLInputElement).value } as Partial<Draft>),
  });

  const save = async (then: 'stay' | 'map') => {
    setBusy(true);
    setError(null);
    try {
      const body = bodyOf(draft, !existing);
      const env = existing ? await api.updateEnvironment(existing.id, body) : await api.createEnvironment(body);
      setState((st) => ({
        environments: [...st.environments.filter((e) => e.id !== env.id), env],
        currentEnvId: env.id,
      }));
      loadedFor.current = env.id;
      setDraft(draftOf(env));
      if (then === 'map') navigate(`/environments/${env.id}/mappings`);
      else if (!existing) navigate(`/environments/${env.id}`);
      else toast('Saved');
    } catch (e) {
      setError(errorText(e));
    } finally {
      setBusy(false);
    }
  };
  const validate = async () => {
    if (!existing) return;
    setValidation(null);
    try {
      setValidation(await api.validate(existing.id));
    } catch (e) {
      setError(errorText(e));
    }
  };
  const remove = async () => {
    if (!existing || !confirm(`Delete environment ${existing.name} with its threads and mappings?`)) return;
    try {
      await api.deleteEnvironment(existing.id);
      setState((st) => ({ environments: st.environments.filter((e) => e.id !== existing.id) }));
      navigate('/');
    } catch (e) {
      setError(errorText(e));
    }
  };

  const repo = draft.type === 'git' || draft.type === 'github';
  return (
    <form
      class="page env-form"
      onSubmit={(e) => {
        e.preventDefault();
        save('stay');
      }}
    >
      <header class="page-head">
        <h1>{existing ? `Edit ${existing.name}` : 'Create Environment'}</h1>
        {existing && (
          <button type="button" onClick={() => navigate(`/environments/${existing.id}/mappings`)}>
            Manage Mappings
          </button>
        )}
      </header>
      <ErrorBox message={error} />
      <fieldset>
        <legend>Basic</legend>
        <label>
          Name
          <input name="name" required maxLength={64} pattern="[A-Za-z0-9 ._\-]+" {...field('name')} />
        </label>
        <label>
          Description
          <input name="description" {...field('description')} />
        </label>
        <label>
          Type
          <select name="type" value={draft.type} onChange={(e) => set({ type: (e.target as HTMLSelectElement).value as EnvType })}>
            <option value="git">Git repository</option>
            <option value="github">GitHub repository</option>
            <option value="local">Local directory on the node</option>
            <option value="manual">Empty directory</option>
          </select>
        </label>
        {repo && (
          <div class="two">
            <label>
              Repository URL
              <input name="repoUrl" required placeholder="https://… or file:///…" {...field('repoUrl')} />
            </label>
            <label>
              Branch
              <input name="repoBranch" placeholder="default branch" {...field('repoBranch')} />
            </label>
          </div>
        )}
        {draft.type === 'local' && (
          <label>
            Path on the node
            <input name="localPath" required placeholder="/home/me/project" {...field('localPath')} />
          </label>
        )}
      </fieldset>
      <fieldset>
        <legend>Code execution</legend>
        <label>
          Working directory (inside the checkout)
          <input name="workingDir" placeholder="." {...field('workingDir')} />
        </label>
        <label>
          Setup script (bash, runs with set -e after each clone or update)
          <textarea name="setupScript" class="code" rows={6} spellcheck={false} {...field('setupScript')} />
        </label>
        <label>
          Default executor
          <select
            name="defaultExecutor"
            value={draft.defaultExecutor}
            onChange={(e) => set({ defaultExecutor: (e.target as HTMLSelectElement).value })}
          >
            <option value="">Agent when configured</option>
            {EXECUTORS.map((e) => (
              <option key={e.value} value={e.value}>
                {e.label}
              </option>
            ))}
          </select>
        </label>
        <label>
          Agent working mode
          <select
            name="workingMode"
            value={draft.workingMode}
            onChange={(e) => set({ workingMode: (e.target as HTMLSelectElement).value })}
          >
            <option value="">Always execute (default)</option>
            <option value="agent-decides">Agent decides (ask before changes)</option>
            <option value="always-ask">Always ask before every tool</option>
          </select>
        </label>
        <label>
          Network access
          <select
            name="networkAccess"
            value={draft.networkAccess}
            onChange={(e) => set({ networkAccess: (e.target as HTMLSelectElement).value as P.NetworkAccess })}
          >
            <option value="on">On: the node's network</option>
            <option value="allowlist">Allowlist: only the hosts below, through the node's proxy</option>
            <option value="off">Off: loopback only</option>
          </select>
        </label>
        {draft.networkAccess === 'allowlist' && (
          <label>
            Allowed hosts <span class="muted-text">(one per line: example.com, *.example.com, host:port)</span>
            <textarea
              name="networkAllowlist"
              rows={3}
              value={draft.networkAllowlist}
              onInput={(e) => set({ networkAllowlist: (e.target as HTMLTextAreaElement).value })}
            />
          </label>
        )}
        <label>
          Container image <span class="muted-text">(optional: setup and tasks run in it through the node's podman or docker)</span>
          <input
            name="containerImage"
            placeholder="debian:12"
            value={draft.containerImage}
            onInput={(e) => set({ containerImage: (e.target as HTMLInputElement).value })}
          />
        </label>
        <label class="check">
          <input type="checkbox" checked={draft.persistVolume} onChange={(e) => set({ persistVolume: (e.target as HTMLInputElement).checked })} />
          Persistent home volume (containers)
        </label>
      </fieldset>
      <fieldset>
        <legend>Variables</legend>
        {draft.vars.map((r, i) => (
          <div class="kv" key={i}>
            <input aria-label="Variable name" placeholder="NAME" value={r.key} onInput={(e) => set({ vars: draft.vars.map((x, j) => (j === i ? { ...x, key: (e.target as HTMLInputElement).value } : x)) })} />
            <input aria-label="Variable value" placeholder="value" value={r.value} onInput={(e) => set({ vars: draft.vars.map((x, j) => (j === i ? { ...x, value: (e.target as HTMLInputElement).value } : x)) })} />
            <button type="button" class="icon" aria-label={`Remove ${r.key || 'variable'}`} onClick={() => set({ vars: draft.vars.filter((_, j) => j !== i) })}>
              ✕
            </button>
          </div>
        ))}
        <button type="button" onClick={() => set({ vars: [...draft.vars, { key: '', value: '' }] })}>
          Add variable
        </button>
      </fieldset>
      <fieldset>
        <legend>Secrets</legend>
        <p class="muted-text">Write-only: stored encrypted, shown masked, redacted from every log and output.</p>
        {draft.secrets.map((r, i) => {
          const upd = (p: Partial<SecretRow>) => set({ secrets: draft.secrets.map((x, j) => (j === i ? { ...x, ...p } : x)) });
          return (
            <div class={`kv secret${r.removed ? ' removed' : ''}`} key={i}>
              <input aria-label="Secret name" placeholder="NAME" value={r.key} readOnly={!!r.stored} onInput={(e) => upd({ key: (e.target as HTMLInputElement).value })} />
              <input
                type="password"
                autocomplete="new-password"
                aria-label={`Value of ${r.key || 'secret'}`}
                placeholder={r.stored ? `${r.stored.value} (set, type to replace)` : 'value'}
                value={r.value}
                disabled={r.removed}
                onInput={(e) => upd({ value: (e.target as HTMLInputElement).value })}
              />
              <select aria-label="Scope" value={r.scope} onChange={(e) => upd({ scope: (e.target as HTMLSelectElement).value as 'runtime' | 'setup' })}>
                <option value="runtime">setup + tasks</option>
                <option value="setup">setup only</option>
              </select>
              <input
                aria-label={`File for ${r.key || 'secret'}`}
                title="Deliver as this file in the agent CLIs' home (0600) instead of a variable"
                placeholder="as file: .codex/auth.json (optional)"
                value={r.file}
                disabled={r.removed}
                onInput={(e) => upd({ file: (e.target as HTMLInputElement).value })}
              />
              <button type="button" class="icon" aria-label={r.removed ? `Keep ${r.key}` : `Remove ${r.key || 'secret'}`} onClick={() => (r.stored ? upd({ removed: !r.removed }) : set({ secrets: draft.secrets.filter((_, j) => j !== i) }))}>
                {r.removed ? '↺' : '✕'}
              </button>
              {r.stored && <span class="muted-text small">updated <RelTime iso={r.stored.updatedAt} /></span>}
            </div>
          );
        })}
        <button type="button" onClick={() => set({ secrets: [...draft.secrets, { key: '', value: '', scope: 'runtime', file: '' }] })}>
          Add secret
        </button>
      </fieldset>
      <fieldset>
        <legend>Validation</legend>
        <p class="muted-text">A dry run: the setup script's syntax, and that the repository and branch are reachable.</p>
        <button type="button" disabled={!existing} onClick={validate} title={existing ? undefined : 'Save first'}>
          Validate
        </button>
        <Validation result={validation} />
      </fieldset>
      <div class="form-actions">
        <button type="submit" class="primary" disabled={busy}>
          {existing ? 'Save' : 'Create'}
        </button>
        <button type="button" disabled={busy} onClick={() => save('map')}>
          {existing ? 'Save and map to a node' : 'Create and map to a node'}
        </button>
        {existing && (
          <button type="button" class="danger" onClick={remove}>
            Delete
          </button>
        )}
      </div>
    </form>
  );
}

function SetupLog({ envId, bindingId }: { envId: string; bindingId: string }) {
  const s = useStore();
  const box = useRef<HTMLPreElement>(null);
  useEffect(() => {
    openLog(envId, bindingId);
  }, [envId, bindingId]);
  const lines = s.logs[bindingId] ?? [];
  useEffect(() => {
    const el = box.current;
    if (el) el.scrollTop = el.scrollHeight;
  }, [lines.length]);
  return (
    <pre class="setup-log terminal" ref={box} aria-label="Setup log">
      {lines.length ? lines.map((l) => l.text).join('') : 'No setup output yet.'}
    </pre>
  );
}

export function MappingView({ id }: { id: string }) {
  const s = useStore();
  const env = s.environments.find((e) => e.id === id || e.name === id);
  const [nodeId, setNodeId] = useState('');
  const [strategy, setStrategy] = useState<'auto' | 'existing-path'>('auto');
  const [path, setPath] = useState('');
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  /** Bindings whose terminal pane is open. */
  const [terminals, setTerminals] = useState<string[]>([]);
  if (!env) return s.loaded ? <Empty title="No such environment" /> : <div class="loading">Loading…</div>;
  const chosen = nodeId || s.nodes.find((n) => n.status === 'online')?.id || s.nodes[0]?.id || '';
  const prepare = async () => {
    setBusy(true);
    setError(null);
    try {
      await api.bind(env.id, { nodeId: chosen, strategy, path: strategy === 'existing-path' ? path : undefined });
    } catch (e) {
      setError(errorText(e));
    } finally {
      setBusy(false);
    }
  };
  const reprepare = async (bid: string) => {
    try {
      await api.prepare(env.id, bid, true);
    } catch (e) {
      toast(`Prepare: ${errorText(e)}`);
    }
  };
  return (
    <div class="page mapping">
      <header class="page-head">
        <h1>Mappings of {env.name}</h1>
        <button onClick={() => navigate(`/environments/${env.id}`)}>Edit environment</button>
      </header>
      <section class="card">
        <h2>Map to a node</h2>
        {s.nodes.length === 0 ? (
          <p>
            No nodes yet. <a href="/nodes" onClick={(e) => (e.preventDefault(), navigate('/nodes'))}>Add a node</a> first.
          </p>
        ) : (
          <div class="map-form">
            <label>
              Node
              <select name="node" value={chosen} onChange={(e) => setNodeId((e.target as HTMLSelectElement).value)}>
                {s.nodes.map((n) => (
                  <option key={n.id} value={n.id}>
                    {n.name} ({n.status})
                  </option>
                ))}
              </select>
            </label>
            <label>
              Strategy
              <select name="strategy" value={strategy} onChange={(e) => setStrategy((e.target as HTMLSelectElement).value as 'auto' | 'existing-path')}>
                <option value="auto">Clone into the node's workspace</option>
                <option value="existing-path">Use a directory already on the node</option>
              </select>
            </label>
            {strategy === 'existing-path' && (
              <label>
                Path
                <input value={path} required placeholder="/srv/checkouts/web" onInput={(e) => setPath((e.target as HTMLInputElement).value)} />
              </label>
            )}
            <button class="primary" disabled={busy || !chosen} onClick={prepare}>
              Prepare Environment
            </button>
          </div>
        )}
        <ErrorBox message={error} />
      </section>
      {env.bindings.length === 0 && <p class="muted-text">This environment is not mapped to any node yet.</p>}
      {env.bindings.map((b) => (
        <section key={b.id} class="card binding" data-binding={b.id}>
          <div class="binding-head">
            <h2>{s.nodes.find((n) => n.id === b.nodeId)?.name ?? b.nodeId}</h2>
            <Pill status={b.status} label={b.status === 'ready' ? 'Ready' : b.status === 'preparing' ? 'Preparing' : b.status === 'error' ? 'Error' : b.status === 'stale' ? 'Stale' : 'Pending'} />
            {!b.nodeOnline && <span class="muted-text">node offline</span>}
            <div class="binding-actions">
              {(b.status === 'ready' || terminals.includes(b.id)) && (
                <button
                  aria-pressed={terminals.includes(b.id)}
                  onClick={() => setTerminals((t) => (t.includes(b.id) ? t.filter((x) => x !== b.id) : [...t, b.id]))}
                >
                  Terminal
                </button>
              )}
              <button onClick={() => reprepare(b.id)} disabled={b.status === 'preparing'}>
                Re-prepare
              </button>
            </div>
          </div>
          {terminals.includes(b.id) && (
            <div class="binding-terminal">
              <Terminal key={b.id} target={{ bindingId: b.id }} />
            </div>
          )}
          <dl class="facts">
            <dt>Strategy</dt>
            <dd>{b.strategy}</dd>
            {b.resolvedWorkingDir && (
              <>
                <dt>Working dir</dt>
                <dd>
                  <code>{b.resolvedWorkingDir}</code>
                </dd>
              </>
            )}
            {b.commit && (
              <>
                <dt>Commit</dt>
                <dd>
                  <code>{b.commit.slice(0, 12)}</code>
                </dd>
              </>
            )}
            <dt>Last prepared</dt>
            <dd>
              <RelTime iso={b.lastPrepareAt} />
            </dd>
          </dl>
          {b.status === 'error' && <ErrorBox message={`Failed at ${b.step ?? 'prepare'}: ${b.lastError ?? 'unknown error'}`} />}
          {b.status === 'pending' && <p class="muted-text">Waiting for the node to come online; it prepares when it connects.</p>}
          <SetupLog envId={env.id} bindingId={b.id} />
        </section>
      ))}
    </div>
  );
}
