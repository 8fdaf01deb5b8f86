// A terminal on a node, in the browser: xterm.js attached to the gateway's viewer WebSocket for
// one terminal of a thread or a binding. Lists the running ones, opens and closes them, and
// keeps the socket up across gateway restarts without losing or repeating output.
//
// Loaded on first use (see ui.tsx's Terminal): xterm.js is most of its weight.

import { FitAddon } from '@xterm/addon-fit';
import { Terminal, type IDisposable } from '@xterm/xterm';
import '@xterm/xterm/css/xterm.css';
import { useEffect, useRef, useState } from 'preact/hooks';
import { api, ApiError, terminalSocketUrl, type TerminalInfo, type TerminalTarget } from './api';
import type * as P from './protocol.gen';
import { errorText, nodeName, useStore } from './store';
import { ErrorBox, RelTime } from './ui';

/** connecting: opening the socket or replaying scrollback; live: keystrokes go through. */
export type LinkState = 'connecting' | 'live' | 'reconnecting' | 'ended';

// Scrollback replay on (re)attach. The replayed bytes hold the queries programs sent to the
// terminal back then (device attributes, cursor position, colours, ...), and xterm.js answers
// every query it parses through onData, as if typed: answering them again would type garbage
// into the shell. So output counts as replay while it arrives within REPLAY_MIN_MS of the
// socket opening, or before its first REPLAY_QUIET_MS pause, and input xterm produces then
// (onData) is dropped until xterm has parsed all of it, except what the user types, composes
// with an IME or pastes meanwhile: that is held and sent when the replay ends (a paste as its
// text, pasted then, so it is bracketed or not as the program by then asks). REPLAY_MAX_MS
// bounds it for a terminal whose output never pauses (a `yes`, a busy log), which would
// otherwise never take input.
const REPLAY_MIN_MS = 300;
const REPLAY_QUIET_MS = 100;
const REPLAY_MAX_MS = 3000;
/** Most keystroke and paste messages held during a replay; more are dropped. */
const HELD_MAX = 256;
/** Reconnect delays after the socket drops (a gateway restart, a network blip). */
const BACKOFF_MIN_MS = 500;
const BACKOFF_MAX_MS = 5000;

function fromBase64(s: string): Uint8Array {
  const bin = atob(s);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

/**
 * Whether input xterm produces now is the user's, not an answer to a query. `typing`: xterm is
 * handling a key event (raised by the pane's key event handler, lowered once the call handling
 * the event returns). `ime`: an IME composition ended or an IME key went by, and xterm sends
 * the composed text from a timer it set then ({@link untilTimersRun}), or text is inserted
 * without a key (an input event). xterm's parsing of the replay runs from timers too, so
 * while only `ime` is up, input that holds an ESC (as every answer to a query does, and no
 * composed or inserted text) is not the user's. Counts, so one lowering does not end
 * another's window.
 */
interface Keys {
  typing: number;
  ime: number;
}

/** Runs `f` after the timers already set have run, and after a zero-delay timer one of them sets. */
function untilTimersRun(f: () => void) {
  setTimeout(() => setTimeout(f, 0), 0);
}

/** Whether `msg`, produced while `keys` are as they are, is the user's input. */
function typedNow(keys: Keys, msg: P.ViewerInput): boolean {
  return keys.typing > 0 || (keys.ime > 0 && msg.type === 'input' && !msg.data.includes('\x1b'));
}

interface Listener {
  state(s: LinkState): void;
  error(message: string | null): void;
}

/**
 * One viewer socket on one terminal, written into an xterm: tracks the offset of the next byte
 * wanted, so a reconnect (`?offset=`) resumes with nothing lost or written twice.
 */
class Attachment {
  private ws: WebSocket | null = null;
  /** The stream offset of the next byte this viewer wants. */
  private next = 0;
  private delay = BACKOFF_MIN_MS;
  private retryTimer = 0;
  private replaying = true;
  /** Bumped per socket, so a replay that ends late cannot end the next socket's replay. */
  private generation = 0;
  private replayTimer = 0;
  private openedAt = 0;
  /** The size last sent on this socket, `colsxrows`. */
  private sentSize = '';
  /** Exited or disposed: no more reconnects. */
  private done = false;
  private subs: IDisposable[];
  /** What the user typed, composed, inserted or pasted during a replay, sent when it ends. */
  private held: (P.ViewerInput | { paste: string })[] = [];

  constructor(
    private term: Terminal,
    private id: string,
    private on: Listener,
    private keys: Keys,
  ) {
    this.subs = [
      term.onData((data) => this.input({ type: 'input', data })),
      // Some mouse reports are raw bytes (one per char code), not text.
      term.onBinary((data) => this.input({ type: 'inputBytes', data: btoa(data) })),
    ];
    this.connect();
  }

  /** Sends the window size, when it changed since the last one sent on this socket. */
  resize() {
    const size = `${this.term.cols}x${this.term.rows}`;
    if (size !== this.sentSize && this.send({ type: 'resize', cols: this.term.cols, rows: this.term.rows })) this.sentSize = size;
  }

  /** Pastes `text` into the terminal, or holds it while a replay goes on. */
  paste(text: string) {
    if (!this.replaying) this.term.paste(text);
    else if (this.held.length < HELD_MAX) this.held.push({ paste: text });
  }

  dispose() {
    this.done = true;
    clearTimeout(this.retryTimer);
    clearTimeout(this.replayTimer);
    this.subs.forEach((s) => s.dispose());
    const ws = this.ws;
    this.ws = null;
    ws?.close();
  }

  private connect() {
    if (this.done) return;
    const gen = ++this.generation;
    const ws = new WebSocket(terminalSocketUrl(this.id, this.next));
    this.ws = ws;
    this.replaying = true;
    this.sentSize = '';
    let opened = false;
    ws.onopen = () => {
      if (this.ws !== ws) return;
      opened = true;
      this.openedAt = performance.now();
      this.armReplay(gen, REPLAY_MIN_MS);
      this.resize();
    };
    ws.onmessage = (ev) => {
      if (this.ws === ws) this.receive(gen, ev.data);
    };
    ws.onclose = () => {
      if (this.ws !== ws) return;
      this.ws = null;
      clearTimeout(this.replayTimer);
      if (this.done) return;
      this.on.state('reconnecting');
      const delay = this.delay;
      this.delay = Math.min(this.delay * 2, BACKOFF_MAX_MS);
      this.retryTimer = window.setTimeout(() => this.reconnect(opened), delay);
    };
  }

  /**
   * A socket that never opened may have been refused (no such terminal, session over): ask the
   * REST API, and stop on an answer that retrying cannot change. An unreachable gateway (a
   * restart) is retried.
   */
  private async reconnect(opened: boolean) {
    if (!opened) {
      try {
        await api.terminal(this.id);
      } catch (e) {
        if (e instanceof ApiError && e.status >= 400 && e.status < 500) {
          this.done = true;
          this.on.error(errorText(e));
          this.on.state('ended');
          return;
        }
      }
    }
    this.connect();
  }

  private receive(gen: number, raw: unknown) {
    let ev: P.ViewerEvent;
    try {
      ev = JSON.parse(String(raw));
    } catch {
      return;
    }
    this.delay = BACKOFF_MIN_MS;
    switch (ev.type) {
      case 'output': {
        let bytes = fromBase64(ev.data);
        const end = ev.offset + bytes.length;
        if (end <= this.next) return;
        if (ev.offset < this.next) bytes = bytes.subarray(this.next - ev.offset);
        this.next = end;
        this.term.write(bytes);
        if (this.replaying) {
          const elapsed = performance.now() - this.openedAt;
          this.armReplay(gen, Math.min(Math.max(REPLAY_QUIET_MS, REPLAY_MIN_MS - elapsed), REPLAY_MAX_MS - elapsed));
        }
        break;
      }
      case 'skipped':
        // Bytes from..to left the node's scrollback; from > to: the stream restarted (the node
        // restarted) and the program redraws its screen. Either way it goes on at `to`.
        this.next = ev.to;
        break;
      case 'exit':
        this.done = true;
        clearTimeout(this.replayTimer);
        this.term.write(`\r\n[process exited${ev.code != null ? ` with code ${ev.code}` : ''}]\r\n`);
        this.on.state('ended');
        this.ws?.close();
        this.ws = null;
        break;
      case 'error':
        this.on.error(ev.message);
        break;
    }
  }

  private armReplay(gen: number, ms: number) {
    clearTimeout(this.replayTimer);
    this.replayTimer = window.setTimeout(() => {
      // xterm parses writes later and answers queries as it parses them: the replay is over
      // once what was written so far is parsed.
      this.term.write('', () => {
        if (gen !== this.generation || this.done) return;
        this.replaying = false;
        this.on.state('live');
        for (const msg of this.held.splice(0)) {
          if ('paste' in msg) this.term.paste(msg.paste);
          else this.send(msg);
        }
      });
    }, Math.max(0, ms));
  }

  private input(msg: P.ViewerInput) {
    if (!this.replaying) this.send(msg);
    else if (typedNow(this.keys, msg) && this.held.length < HELD_MAX) this.held.push(msg);
  }

  private send(msg: P.ViewerInput): boolean {
    if (this.ws?.readyState !== WebSocket.OPEN) return false;
    this.ws.send(JSON.stringify(msg));
    return true;
  }
}

const LINK_LABEL: Record<LinkState, [string, string]> = {
  connecting: ['busy', 'Connecting…'],
  live: ['ok', 'Connected'],
  reconnecting: ['warn', 'Reconnecting…'],
  ended: ['muted', 'Ended'],
};

function cssVar(el: Element, name: string, fallback: string): string {
  return getComputedStyle(el).getPropertyValue(name).trim() || fallback;
}

/** The running terminals of a thread or binding: attached to the newest, or a New terminal button. */
export function TerminalPane({ target }: { target: TerminalTarget }) {
  const s = useStore();
  const targetKey = 'threadId' in target ? `thread:${target.threadId}` : `binding:${target.bindingId}`;
  const host = useRef<HTMLDivElement>(null);
  const xterm = useRef<{ term: Terminal; fit: FitAddon } | null>(null);
  const link = useRef<Attachment | null>(null);
  const keys = useRef<Keys>({ typing: 0, ime: 0 });
  const [list, setList] = useState<TerminalInfo[] | null>(null);
  const [current, setCurrent] = useState<TerminalInfo | null>(null);
  // The link's state with the terminal it is of: between showing a new current terminal and
  // attaching to it, the last one's 'live' must not read as this one's.
  const [linkOf, setLinkOf] = useState<{ id: string; state: LinkState } | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);

  // One xterm for the pane's life, fitted to its box whenever the box or the window changes.
  useEffect(() => {
    const el = host.current!;
    const term = new Terminal({
      cursorBlink: true,
      fontFamily: cssVar(el, '--mono', 'monospace'),
      fontSize: 13,
      scrollback: 5000,
      theme: { background: cssVar(el, '--term-bg', '#15171c'), foreground: cssVar(el, '--term-text', '#e4e6eb') },
    });
    const fit = new FitAddon();
    term.loadAddon(fit);
    // xterm calls this for each key event before it turns the key into input (onData, in the
    // same call): input while `typing` is up is typed; it drops before anything else runs. An
    // IME's key (keyCode 229) or one during a composition has xterm send the text from a
    // timer instead: `ime` stays up until it has run.
    const endIme = () => keys.current.ime--;
    const composed = () => {
      keys.current.ime++;
      untilTimersRun(endIme);
    };
    term.attachCustomKeyEventHandler((ev) => {
      keys.current.typing++;
      queueMicrotask(() => keys.current.typing--);
      if (ev.isComposing || ev.keyCode === 229) composed();
      return true;
    });
    term.open(el);
    // When a composition ends, xterm sends the composed text from a timer it sets in its own
    // listener on its textarea, which runs before this one, on its ancestor.
    el.addEventListener('compositionend', composed);
    // Text that comes as an input event with no key event (an emoji picker, dictation, some
    // on-screen keyboards): xterm sends it from its own listener on its textarea, after this
    // one (capturing, on its ancestor), and stops the event there.
    const inserted = () => {
      keys.current.ime++;
      setTimeout(endIme, 0);
    };
    el.addEventListener('input', inserted, true);
    // A paste is not a key event: xterm's own paste listeners (on its textarea and element,
    // inside `el`) would turn it into input at once, dropped during a replay. Caught first
    // here, it goes to the attachment, which pastes it through xterm's API (the same line
    // endings and bracketed paste) now or when its replay ends.
    const paste = (ev: ClipboardEvent) => {
      const text = ev.clipboardData?.getData('text/plain');
      if (!text) return;
      ev.preventDefault();
      ev.stopPropagation();
      if (link.current) link.current.paste(text);
      else term.paste(text);
    };
    el.addEventListener('paste', paste, true);
    xterm.current = { term, fit };
    const refit = () => {
      // A hidden pane has no size to fit to; it refits when it shows again.
      if (!el.clientWidth || !el.clientHeight) return;
      fit.fit();
      link.current?.resize();
    };
    refit();
    const observer = new ResizeObserver(refit);
    observer.observe(el);
    addEventListener('resize', refit);
    return () => {
      observer.disconnect();
      removeEventListener('resize', refit);
      el.removeEventListener('paste', paste, true);
      el.removeEventListener('compositionend', composed);
      el.removeEventListener('input', inserted, true);
      link.current?.dispose();
      link.current = null;
      term.dispose();
      xterm.current = null;
    };
  }, []);

  useEffect(() => {
    let live = true;
    setList(null);
    setCurrent(null);
    api.terminals(target).then(
      (ts) => {
        if (!live) return;
        setList(ts);
        setCurrent(ts[0] ?? null);
      },
      (e) => live && setError(errorText(e)),
    );
    return () => {
      live = false;
    };
  }, [targetKey]);

  // Attach to the current terminal: its scrollback from the start, then live output.
  const currentId = current?.id;
  useEffect(() => {
    const x = xterm.current;
    if (!currentId || !x) return;
    x.term.reset();
    setError(null);
    setLinkOf({ id: currentId, state: 'connecting' });
    const a = new Attachment(x.term, currentId, { state: (state) => setLinkOf({ id: currentId, state }), error: setError }, keys.current);
    link.current = a;
    x.term.focus();
    return () => {
      a.dispose();
      if (link.current === a) link.current = null;
    };
  }, [currentId]);

  const linkState: LinkState = linkOf && linkOf.id === currentId ? linkOf.state : 'connecting';

  // The ports its processes listen on change as it runs; the node reports them now and then.
  const ended = linkState === 'ended';
  useEffect(() => {
    if (!currentId) return;
    const refresh = () =>
      api.terminal(currentId).then(
        (v) => setCurrent((c) => (c?.id === v.id ? v : c)),
        () => {},
      );
    if (ended) {
      refresh();
      return;
    }
    const timer = setInterval(refresh, 5000);
    return () => clearInterval(timer);
  }, [currentId, ended]);

  const open = async () => {
    const x = xterm.current;
    if (!x) return;
    setBusy(true);
    setError(null);
    try {
      if (host.current?.clientWidth) x.fit.fit();
      const t = await api.openTerminal(target, x.term.cols, x.term.rows);
      setList((l) => [t, ...(l ?? []).filter((o) => o.id !== t.id)]);
      setCurrent(t);
    } catch (e) {
      setError(errorText(e));
    } finally {
      setBusy(false);
    }
  };

  const close = async () => {
    if (!current) return;
    setBusy(true);
    try {
      await api.closeTerminal(current.id);
      const rest = (list ?? []).filter((t) => t.id !== current.id);
      xterm.current?.term.reset();
      setList(rest);
      setCurrent(rest[0] ?? null);
    } catch (e) {
      setError(errorText(e));
    } finally {
      setBusy(false);
    }
  };

  const choices = current && !list?.some((t) => t.id === current.id) ? [current, ...(list ?? [])] : (list ?? []);
  const [cls, label] = LINK_LABEL[linkState];
  return (
    <div class="term-pane" data-terminal={currentId}>
      <div class="term-bar">
        {choices.length > 1 ? (
          <select
            aria-label="Terminal"
            value={currentId}
            onChange={(e) => setCurrent(choices.find((t) => t.id === (e.target as HTMLSelectElement).value) ?? null)}
          >
            {choices.map((t, i) => (
              <option key={t.id} value={t.id}>
                Terminal {choices.length - i} ({t.command.length ? t.command.join(' ') : 'shell'})
              </option>
            ))}
          </select>
        ) : (
          current && <strong>{current.command.length ? current.command.join(' ') : 'Shell'}</strong>
        )}
        {current && (
          <>
            <span class={`pill ${cls} term-link`}>{label}</span>
            <span class="muted-text small">
              on {nodeName(s, current.nodeId)} · opened <RelTime iso={current.createdAt} />
            </span>
            {current.ports.length > 0 && (
              <span class="term-ports" title="TCP ports its processes listen on, on the node: open one through the gateway">
                Ports{' '}
                {current.ports.map((p) => (
                  <a
                    key={p}
                    class="badge preview-link"
                    href={`${current.previewUrl}${p}/`}
                    target="_blank"
                    rel="noopener"
                  >
                    {p}
                  </a>
                ))}
              </span>
            )}
          </>
        )}
        <span class="grow" />
        {current && (
          <button class="small" disabled={busy} onClick={open}>
            New terminal
          </button>
        )}
        {current && !ended && (
          <button class="small danger" disabled={busy} onClick={close}>
            Close
          </button>
        )}
      </div>
      <ErrorBox message={error} />
      <div class="term-box">
        <div class="term-host" ref={host} />
        {!current && (
          <div class="term-empty">
            {list === null ? (
              <p>Loading terminals…</p>
            ) : (
              <>
                <p>No terminal is running here. A new one is a login shell in the checkout, kept in tmux: it outlives this page.</p>
                <button class="primary" disabled={busy} onClick={open}>
                  New terminal
                </button>
              </>
            )}
          </div>
        )}
      </div>
    </div>
  );
}
