// The board's entry: login (token from the printed URL, or typed), then the app shell.

import { render } from 'preact';
import { useState } from 'preact/hooks';
import { api, ApiError, handleUnauthorized, setCsrfToken } from './api';
import { EnvironmentForm, MappingView } from './envs';
import { JobsSection } from './jobs';
import { UsagePage } from './usage';
import { AuditPage } from './audit';
import { NodesPage, SettingsPage } from './nodes';
import { EnvironmentSheet, newThread, Sidebar } from './sidebar';
import { connectEvents, currentEnvironment, disconnectEvents, envStatus, errorText, loadAll, navigate, setState, useStore } from './store';
import { ThreadView } from './thread';
import { Empty, ErrorBox, Pill } from './ui';
import './style.css';

async function startSession(csrf: string | undefined) {
  setCsrfToken(csrf ?? null);
  setState({ auth: 'in', loginError: null });
  connectEvents();
  await loadAll();
}

function signedOut(message: string | null) {
  disconnectEvents();
  setCsrfToken(null);
  setState({ auth: 'out', loginError: message, loaded: false });
}

handleUnauthorized(() => signedOut('Your session ended. Sign in again.'));

async function login(token: string): Promise<string | null> {
  try {
    const r = await api.login(token);
    await startSession(r.csrfToken);
    return null;
  } catch (e) {
    return e instanceof ApiError && e.status === 401 ? 'That token is not valid.' : errorText(e);
  }
}

async function boot() {
  // The URL all-in-one prints carries the token once: trade it for a cookie and drop it from
  // the address bar (and so from history and bookmarks).
  const url = new URL(location.href);
  const token = url.searchParams.get('token');
  if (token) {
    url.searchParams.delete('token');
    history.replaceState(null, '', url.pathname + url.search + url.hash);
    const err = await login(token);
    if (!err) return;
    signedOut(err);
    return;
  }
  try {
    const s = await api.session();
    await startSession(s.csrfToken);
  } catch (e) {
    signedOut(e instanceof ApiError && e.status === 401 ? null : errorText(e));
  }
}

function Login() {
  const s = useStore();
  const [token, setToken] = useState('');
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  return (
    <main class="login">
      <form
        class="card"
        onSubmit={async (e) => {
          e.preventDefault();
          setBusy(true);
          setError(await login(token.trim()));
          setBusy(false);
        }}
      >
        <h1>viber</h1>
        <p>Sign in with the gateway's admin token: open the URL that <code>viber all-in-one</code> printed, or paste the token from <code>~/.openviber/admin-token</code>.</p>
        <ErrorBox message={error ?? s.loginError} />
        <label>
          Admin token
          <input type="password" name="token" autocomplete="current-password" required value={token} onInput={(e) => setToken((e.target as HTMLInputElement).value)} />
        </label>
        <button class="primary" type="submit" disabled={busy || !token.trim()}>
          Sign in
        </button>
      </form>
    </main>
  );
}

function Home() {
  const s = useStore();
  const env = currentEnvironment(s);
  if (!s.environments.length) {
    return (
      <Empty title="Welcome to viber">
        <p>An environment says where the code comes from and how to set it up. Create one, map it to a node, then start a thread.</p>
        <button class="primary" onClick={() => navigate('/environments/new')}>
          Create Environment
        </button>
      </Empty>
    );
  }
  if (!env) return null;
  const status = envStatus(env);
  return (
    <Empty title={env.name}>
      <p>
        <Pill status={status} /> {env.description}
      </p>
      {status === 'Unmapped' ? (
        <>
          <p>Map this environment to a node so threads have somewhere to run.</p>
          <button class="primary" onClick={() => navigate(`/environments/${env.id}/mappings`)}>
            Manage Mappings
          </button>
        </>
      ) : (
        <>
          <p>Pick a thread on the left, or start a new one.</p>
          <button class="primary" onClick={() => newThread(env)}>
            New Thread
          </button>
        </>
      )}
    </Empty>
  );
}

function Main() {
  const s = useStore();
  const r = s.route;
  if (s.loadError) return <Empty title="Cannot load the board">{<ErrorBox message={s.loadError} />}</Empty>;
  if (!s.loaded) return <div class="loading">Loading…</div>;
  switch (r.page) {
    case 'thread':
      return <ThreadView id={r.id} />;
    case 'env-new':
      return <EnvironmentForm key="new" />;
    case 'env-edit':
      return (
        <>
          <EnvironmentForm key={r.id} id={r.id} />
          <JobsSection key={`jobs-${r.id}`} envId={r.id} />
        </>
      );
    case 'env-map':
      return <MappingView id={r.id} />;
    case 'nodes':
      return <NodesPage />;
    case 'usage':
      return <UsagePage />;
    case 'audit':
      return <AuditPage />;
    case 'settings':
      return <SettingsPage onLogout={() => signedOut(null)} />;
    default:
      return <Home />;
  }
}

function App() {
  const s = useStore();
  if (s.auth === 'unknown') return <div class="loading">Loading…</div>;
  if (s.auth === 'out') return <Login />;
  // On a phone the thread list is the home screen; other pages replace it.
  const home = s.route.page === 'home';
  return (
    <div class={`shell ${home ? 'at-home' : 'at-page'}`}>
      <Sidebar />
      <main class="main" id="main">
        {!home && s.route.page !== 'thread' && (
          <button class="mobile-only back-bar" onClick={() => navigate('/')}>
            ← Threads
          </button>
        )}
        <Main />
      </main>
      <EnvironmentSheet />
      {s.toast && (
        <div class="toast" role="status">
          {s.toast}
        </div>
      )}
    </div>
  );
}

render(<App />, document.getElementById('app')!);
boot();
