// The audit log: who changed what, from where, and how it ended (never a value).

import { useEffect, useState } from 'preact/hooks';
import { api } from './api';
import { errorText } from './store';
import type { AuditEntry } from './protocol.gen';
import { Empty, ErrorBox, RelTime } from './ui';

/** A sign-in is a POST of /api/session; a sign-out its DELETE. */
function what(e: AuditEntry): string {
  if (e.route === '/api/session') {
    if (e.method === 'POST') return e.status < 300 ? 'sign-in' : 'failed sign-in';
    if (e.method === 'DELETE') return 'sign-out';
  }
  return `${e.method} ${e.path}`;
}

export function AuditPage() {
  const [entries, setEntries] = useState<AuditEntry[]>([]);
  const [next, setNext] = useState<number | undefined>(undefined);
  const [error, setError] = useState<string | null>(null);
  const [loaded, setLoaded] = useState(false);
  const load = async (before?: number) => {
    setError(null);
    try {
      const page = await api.audit(before);
      setEntries((old) => (before === undefined ? page.entries : [...old, ...page.entries]));
      setNext(page.nextBefore);
    } catch (e) {
      setError(errorText(e));
    }
    setLoaded(true);
  };
  useEffect(() => {
    load();
  }, []);
  return (
    <div class="page">
      <header class="page-head">
        <h1>Audit log</h1>
        <button class="small" onClick={() => load()}>
          Refresh
        </button>
      </header>
      <p class="muted">
        Every request that changed something, and every sign-in: who, from where, and which fields it
        set. Values are never recorded.
      </p>
      <ErrorBox message={error} />
      {loaded && entries.length === 0 && !error && <Empty title="Nothing recorded yet" />}
      {entries.length > 0 && (
        <div class="card table-wrap">
          <table class="audit">
            <thead>
              <tr>
                <th>When</th>
                <th>Who</th>
                <th>From</th>
                <th>What</th>
                <th>Status</th>
                <th>Fields</th>
              </tr>
            </thead>
            <tbody>
              {entries.map((e) => (
                <tr key={e.id} data-status={e.status >= 400 ? 'error' : 'ok'}>
                  <td title={e.at}>
                    <RelTime iso={e.at} />
                  </td>
                  <td>{e.actor}</td>
                  <td>{e.peer}</td>
                  <td class="what" title={e.route}>
                    {what(e)}
                  </td>
                  <td class="status">{e.status}</td>
                  <td class="fields">{e.fields.join(', ')}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      {next !== undefined && (
        <button class="small" onClick={() => load(next)}>
          Older
        </button>
      )}
    </div>
  );
}
