// The thread view: each message and the output of the task it started, streamed live through
// the AI SDK client; approvals, Stop, and the composer for follow-ups. Other tabs hold the
// thread's Changes in its git worktree (changes.tsx) and a terminal on the thread's node.

import type { UIMessage } from 'ai';
import { useEffect, useRef, useState } from 'preact/hooks';
import { api, type InjectionMode, type Thread, type ThreadMessage } from './api';
import type * as P from './protocol.gen';
import { offeredBy } from './executors';
import { errorText, navigate, nodeName, setState, toast, useStore } from './store';
import { watchTask, type TaskStreamUpdate } from './stream';
import { Changes } from './changes';
import { Empty, ErrorBox, Pill, RelTime, Terminal } from './ui';

interface Turn {
  taskId: string;
  first: ThreadMessage;
  injected: ThreadMessage[];
}

function turnsOf(messages: ThreadMessage[]): Turn[] {
  const turns: Turn[] = [];
  for (const m of messages) {
    const t = turns.find((x) => x.taskId === m.taskId);
    if (t) t.injected.push(m);
    else turns.push({ taskId: m.taskId, first: m, injected: [] });
  }
  return turns;
}

function pretty(v: unknown): string {
  if (v === undefined) return '';
  if (typeof v === 'string') return v;
  try {
    return JSON.stringify(v, null, 2);
  } catch {
    return String(v);
  }
}

type AnyPart = UIMessage['parts'][number] & Record<string, any>;

function ToolPart({ part, taskId }: { part: AnyPart; taskId: string }) {
  const name: string = part.type === 'dynamic-tool' ? part.toolName : part.type.slice('tool-'.length);
  const [busy, setBusy] = useState(false);
  const answer = async (approve: boolean, scope?: P.ApprovalScope) => {
    setBusy(true);
    try {
      const r = await api.approve(taskId, part.approval.id, approve, scope);
      if (!r.delivered) toast('The node is away: your answer is kept and applies when it is back.');
    } catch (e) {
      toast(`Approval: ${errorText(e)}`);
      setBusy(false);
    }
  };
  const stateLabel: Record<string, string> = {
    'input-streaming': 'preparing',
    'input-available': 'running',
    'approval-requested': 'needs approval',
    'approval-responded': part.approval?.approved ? 'approved' : 'denied',
    'output-available': 'done',
    'output-error': 'failed',
    'output-denied': 'denied',
  };
  const summaryInput =
    part.input && typeof part.input === 'object' && 'command' in part.input
      ? String(part.input.command)
      : part.input && typeof part.input === 'object' && 'path' in part.input
        ? String(part.input.path)
        : part.input && typeof part.input === 'object' && 'host' in part.input
          ? `${part.input.host}:${part.input.port}`
          : '';
  // A sandboxed process asking to reach a host its environment's allowlist does not name.
  const network = name === 'network';
  return (
    <div class={`tool state-${part.state}`}>
      <details open={part.state === 'approval-requested'}>
        <summary>
          <span class="tool-name">{name}</span>
          {summaryInput && <code class="tool-arg">{summaryInput}</code>}
          <span class="tool-state">{stateLabel[part.state] ?? part.state}</span>
        </summary>
        <div class="tool-body">
          <div class="label">Input</div>
          <pre>{pretty(part.input)}</pre>
          {part.state === 'output-available' && (
            <>
              <div class="label">Output</div>
              <pre>{pretty(part.output)}</pre>
            </>
          )}
          {part.errorText && <ErrorBox message={part.errorText} />}
        </div>
      </details>
      {part.state === 'approval-requested' && (
        <div class="approval" role="group" aria-label={`Approve ${name}?`}>
          <span>{network ? `The task wants to reach ${summaryInput}.` : `The agent wants to run ${name}.`}</span>
          <button class="primary" disabled={busy} onClick={() => answer(true)}>
            {network ? 'Allow for this task' : 'Approve'}
          </button>
          {network && (
            <>
              <button disabled={busy} onClick={() => answer(true, 'thread')}>
                Allow for this thread
              </button>
              <button disabled={busy} onClick={() => answer(true, 'environment')}>
                Always allow for the environment
              </button>
            </>
          )}
          <button class="danger" disabled={busy} onClick={() => answer(false)}>
            Deny
          </button>
        </div>
      )}
    </div>
  );
}

function Parts({ message, taskId, shell }: { message: UIMessage; taskId: string; shell: boolean }) {
  return (
    <>
      {message.parts.map((p, i) => {
        const part = p as AnyPart;
        if (part.type === 'text')
          return (
            <div key={i} class={shell ? 'out terminal' : 'out prose'}>
              {part.text}
            </div>
          );
        if (part.type === 'reasoning')
          return (
            <details key={i} class="reasoning">
              <summary>Reasoning</summary>
              <div class="out prose">{part.text}</div>
            </details>
          );
        if (part.type === 'dynamic-tool' || part.type.startsWith('tool-'))
          return <ToolPart key={part.toolCallId ?? i} part={part} taskId={taskId} />;
        if (part.type === 'step-start') return i === 0 ? null : <hr key={i} class="step" />;
        return null;
      })}
    </>
  );
}

/** A task's streamed output; its state comes with the thread's messages (refetched on task events). */
function TaskOutput({ taskId, task }: { taskId: string; task: ThreadMessage['task'] }) {
  const [u, setU] = useState<TaskStreamUpdate | null>(null);
  useEffect(() => watchTask(taskId, setU), [taskId]);
  const shell = task?.executor === 'shell';
  const running = task?.state === 'running' || task?.state === 'pending';
  return (
    <div class="assistant" data-task={taskId}>
      {u?.message ? (
        <Parts message={u.message} taskId={taskId} shell={shell} />
      ) : (
        !u?.done && <div class="muted-text">{task?.state === 'pending' ? 'Waiting for the environment…' : 'Starting…'}</div>
      )}
      {u?.errors.map((e, i) => <ErrorBox key={i} message={e} />)}
      {u?.reconnecting && <div class="muted-text">Reconnecting…</div>}
      <div class="task-foot">
        {task && <Pill status={task.state} />}
        {task?.exitCode != null && <span>exit {task.exitCode}</span>}
        {task?.outputPrunedAt && (
          <span class="muted-text" title={task.outputPrunedAt}>
            output deleted by retention
          </span>
        )}
        {task?.error && !u?.errors.includes(task.error) && <span class="bad-text">{task.error}</span>}
        {task?.usage && (
          <span class="muted-text">
            {task.usage.model} · {task.usage.inputTokens}↑ {task.usage.outputTokens}↓ tokens
            {task.usage.costUsd > 0 && ` · $${task.usage.costUsd.toFixed(4)}`}
          </span>
        )}
        {running && (
          <button class="danger small" onClick={() => api.stop(taskId).catch((e) => toast(`Stop: ${errorText(e)}`))}>
            Stop
          </button>
        )}
      </div>
    </div>
  );
}

function Composer({ thread, running, onSent, hidden }: { thread: Thread; running: boolean; onSent: () => void; hidden: boolean }) {
  const [text, setText] = useState('');
  const [mode, setMode] = useState<InjectionMode>('followup');
  const s = useStore();
  // The thread keeps its executor; a new thread starts with this browser's last choice.
  const [executor, setExecutor] = useState(() => thread.executor ?? localStorage.getItem('viber.executor') ?? '');
  const offered = offeredBy(s.nodes.find((n) => n.id === thread.activeNodeId));
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const send = async () => {
    const message = text.trim();
    if (!message || busy) return;
    setBusy(true);
    setError(null);
    try {
      const body: { message: string; injectionMode?: InjectionMode; executor?: string } = { message };
      if (running) body.injectionMode = mode;
      else if (executor) body.executor = executor;
      const r = await api.send(thread.id, body, crypto.randomUUID());
      if (r.followUp && !r.delivered) toast('The node is away: your message is kept and runs when it is back.');
      setText('');
      onSent();
    } catch (e) {
      setError(errorText(e));
    } finally {
      setBusy(false);
    }
  };
  return (
    <form
      class="composer"
      hidden={hidden}
      onSubmit={(e) => {
        e.preventDefault();
        send();
      }}
    >
      <ErrorBox message={error} />
      <textarea
        aria-label="Message"
        placeholder={running ? 'Add to the running task…' : 'Ask the agent, or type a shell command…'}
        value={text}
        rows={3}
        onInput={(e) => setText((e.target as HTMLTextAreaElement).value)}
        onKeyDown={(e) => {
          if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) {
            e.preventDefault();
            send();
          }
        }}
      />
      <div class="composer-row">
        {running ? (
          <label>
            Deliver as{' '}
            <select value={mode} onChange={(e) => setMode((e.target as HTMLSelectElement).value as InjectionMode)}>
              <option value="followup">Follow-up (after this step)</option>
              <option value="collect">Collect (batch for later)</option>
              <option value="steer">Steer (interrupt now)</option>
            </select>
          </label>
        ) : (
          <label>
            Run with{' '}
            <select
              value={executor}
              onChange={(e) => {
                const v = (e.target as HTMLSelectElement).value;
                setExecutor(v);
                localStorage.setItem('viber.executor', v);
              }}
            >
              <option value="">Environment default</option>
              {offered.map((e) => (
                <option key={e.value} value={e.value}>
                  {e.label}
                </option>
              ))}
            </select>
          </label>
        )}
        <button type="submit" class="primary" disabled={busy || !text.trim()}>
          Send
        </button>
      </div>
    </form>
  );
}

type Tab = 'conversation' | 'changes' | 'terminal';
const TABS: Tab[] = ['conversation', 'changes', 'terminal'];
const TAB_NAMES: Record<Tab, string> = { conversation: 'Conversation', changes: 'Changes', terminal: 'Terminal' };

export function ThreadView({ id }: { id: string }) {
  const s = useStore();
  const [thread, setThread] = useState<Thread | null>(null);
  const [messages, setMessages] = useState<ThreadMessage[] | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [reload, setReload] = useState(0);
  // The conversation stays mounted behind the terminal (its streams and scroll position go on),
  // and the terminal, once shown, stays attached behind the conversation.
  const [tab, setTab] = useState<Tab>('conversation');
  const [terminalShown, setTerminalShown] = useState(false);

  useEffect(() => {
    setThread(null);
    setMessages(null);
    setError(null);
    setTab('conversation');
    setTerminalShown(false);
  }, [id]);
  useEffect(() => {
    let live = true;
    Promise.all([api.thread(id), api.messages(id)]).then(
      ([t, m]) => {
        if (!live) return;
        setThread(t);
        setMessages(m);
        if (t.environmentId !== s.currentEnvId) setState({ currentEnvId: t.environmentId });
      },
      (e) => live && setError(errorText(e)),
    );
    return () => {
      live = false;
    };
  }, [id, s.taskTick, reload]);

  // Follow the output while the reader is at the bottom; leave them be once they scroll up.
  const conversation = useRef<HTMLDivElement>(null);
  const loaded = !!thread && !!messages;
  useEffect(() => {
    const conv = conversation.current;
    const main = document.getElementById('main');
    if (!conv || !main) return;
    const scroller = () =>
      main.scrollHeight > main.clientHeight + 1 ? main : (document.scrollingElement as HTMLElement);
    let pinned = true;
    const onScroll = () => {
      const el = scroller();
      pinned = el.scrollHeight - el.scrollTop - el.clientHeight < 160;
    };
    const follow = new ResizeObserver(() => {
      if (!pinned) return;
      const el = scroller();
      el.scrollTop = el.scrollHeight;
    });
    follow.observe(conv);
    main.addEventListener('scroll', onScroll, { passive: true });
    addEventListener('scroll', onScroll, { passive: true });
    return () => {
      follow.disconnect();
      main.removeEventListener('scroll', onScroll);
      removeEventListener('scroll', onScroll);
    };
  }, [id, loaded]);

  if (error) return <Empty title="Thread not available">{<ErrorBox message={error} />}</Empty>;
  if (!thread || !messages) return <div class="loading">Loading thread…</div>;
  const listed = s.threads.find((t) => t.id === id) ?? thread;
  const env = s.environments.find((e) => e.id === thread.environmentId);
  const turns = turnsOf(messages);
  const last = messages[messages.length - 1];
  const running = last?.task?.state === 'running';
  const archived = listed.status === 'archived';
  const setStatus = async (status: string) => {
    try {
      await api.patchThread(id, { status });
      setReload((x) => x + 1);
    } catch (e) {
      toast(errorText(e));
    }
  };
  const show = (t: Tab) => {
    setTab(t);
    if (t === 'terminal') setTerminalShown(true);
  };
  return (
    <div class={`thread-view${tab === 'terminal' ? ' terminal-tab' : ''}`}>
      <header class="page-head">
        <button class="icon mobile-only" aria-label="Back to threads" onClick={() => navigate('/')}>
          ←
        </button>
        <div class="grow">
          <h1>{listed.title}</h1>
          <div class="muted-text">
            {env?.name ?? thread.environmentId}
            {listed.activeNodeId && <> · {nodeName(s, listed.activeNodeId)}</>} · <RelTime iso={listed.lastMessageAt ?? listed.createdAt} />
          </div>
        </div>
        <div class="tabs" role="tablist" aria-label="Thread view">
          {TABS.filter((t) => t !== 'changes' || thread.worktree).map((t) => (
            <button key={t} role="tab" aria-selected={tab === t} class={tab === t ? 'tab active' : 'tab'} onClick={() => show(t)}>
              {TAB_NAMES[t]}
            </button>
          ))}
        </div>
        <button onClick={() => setStatus(archived ? 'active' : 'archived')}>{archived ? 'Unarchive' : 'Archive'}</button>
      </header>
      <div class="conversation" ref={conversation} hidden={tab !== 'conversation'}>
        {turns.length === 0 && (
          <Empty title="Nothing here yet">
            <p>Describe what the agent should do, or run a shell command, in the box below.</p>
          </Empty>
        )}
        {turns.map((t) => (
          <section key={t.taskId} class="turn">
            <div class="user">
              <div class="bubble">{t.first.message}</div>
              {t.injected.map((m) => (
                <div key={m.id} class="bubble injected">
                  <span class="badge">{m.injectionMode}</span> {m.message}
                </div>
              ))}
            </div>
            <TaskOutput taskId={t.taskId} task={t.first.task} />
          </section>
        ))}
      </div>
      {archived ? (
        <div class="composer muted-text" hidden={tab !== 'conversation'}>
          This thread is archived. Unarchive it to continue.
        </div>
      ) : (
        <Composer
          thread={thread}
          running={running}
          onSent={() => setReload((x) => x + 1)}
          hidden={tab !== 'conversation'}
        />
      )}
      {tab === 'changes' && <Changes thread={thread} tick={s.taskTick} />}
      {terminalShown && (
        <div class="thread-terminal" hidden={tab !== 'terminal'}>
          <Terminal key={id} target={{ threadId: id }} />
        </div>
      )}
    </div>
  );
}
