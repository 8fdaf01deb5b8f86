// Small shared pieces: status pills, relative times, empty states, the terminal's loader.

import type { ComponentChildren } from 'preact';
import { useEffect, useState } from 'preact/hooks';
import type { TerminalTarget } from './api';
import type { EnvStatus } from './store';
import type { TerminalPane } from './terminal';

const PILL_CLASS: Record<string, string> = {
  Unmapped: 'muted',
  Preparing: 'busy',
  Ready: 'ok',
  Stale: 'warn',
  Error: 'bad',
  pending: 'muted',
  preparing: 'busy',
  ready: 'ok',
  stale: 'warn',
  error: 'bad',
  running: 'busy',
  completed: 'ok',
  stopped: 'warn',
  online: 'ok',
  waiting: 'warn',
  away: 'muted',
  approved: 'ok',
  rejected: 'bad',
  offline: 'muted',
  archived: 'muted',
};

export function Pill({ status, label }: { status: EnvStatus | string; label?: string }) {
  return (
    <span class={`pill ${PILL_CLASS[status] ?? 'muted'}`} data-status={status}>
      {label ?? status}
    </span>
  );
}

export function relTime(iso: string | undefined, now = Date.now()): string {
  if (!iso) return 'never';
  const t = Date.parse(iso);
  if (Number.isNaN(t)) return iso;
  const s = Math.round((now - t) / 1000);
  if (Math.abs(s) < 10) return 'just now';
  const a = Math.abs(s);
  const span =
    a < 60 ? `${a}s` : a < 3600 ? `${Math.floor(a / 60)}m` : a < 86400 ? `${Math.floor(a / 3600)}h` : `${Math.floor(a / 86400)}d`;
  return s > 0 ? `${span} ago` : `in ${span}`;
}

/** A relative time that refreshes itself every 30 seconds. */
export function RelTime({ iso }: { iso?: string }) {
  const [now, setNow] = useState(Date.now());
  useEffect(() => {
    const t = setInterval(() => setNow(Date.now()), 30_000);
    return () => clearInterval(t);
  }, []);
  return (
    <time dateTime={iso} title={iso ? new Date(iso).toLocaleString() : undefined}>
      {relTime(iso, now)}
    </time>
  );
}

export function Empty({ title, children }: { title: string; children?: ComponentChildren }) {
  return (
    <div class="empty">
      <h2>{title}</h2>
      {children}
    </div>
  );
}

export function ErrorBox({ message }: { message: string | null | undefined }) {
  if (!message) return null;
  return (
    <div class="error-box" role="alert">
      {message}
    </div>
  );
}

/**
 * A terminal pane (terminal.tsx), fetched the first time one is shown: xterm.js is most of its
 * weight, and most visits never open a terminal.
 */
export function Terminal({ target }: { target: TerminalTarget }) {
  const [Pane, setPane] = useState<typeof TerminalPane | null>(null);
  const [error, setError] = useState<string | null>(null);
  useEffect(() => {
    let live = true;
    import('./terminal').then(
      (m) => live && setPane(() => m.TerminalPane),
      (e) => live && setError(`Cannot load the terminal: ${e instanceof Error ? e.message : String(e)}`),
    );
    return () => {
      live = false;
    };
  }, []);
  if (error) return <ErrorBox message={error} />;
  return Pane ? <Pane target={target} /> : <div class="loading">Loading terminal…</div>;
}
