// A thread's Changes: what it changed in its git worktree since its branch started (commits,
// uncommitted and untracked files), file by file with a syntax-highlighted unified diff, and
// delivering it: commit, push, pull request, sync with the environment's branch. A comment
// on a line goes to the agent as the thread's next message, with the file, the line and the
// hunk around it. Refreshes when a task of the thread ends.

import hljs from 'highlight.js/lib/core';
import bash from 'highlight.js/lib/languages/bash';
import c from 'highlight.js/lib/languages/c';
import cpp from 'highlight.js/lib/languages/cpp';
import css from 'highlight.js/lib/languages/css';
import go from 'highlight.js/lib/languages/go';
import java from 'highlight.js/lib/languages/java';
import javascript from 'highlight.js/lib/languages/javascript';
import json from 'highlight.js/lib/languages/json';
import markdown from 'highlight.js/lib/languages/markdown';
import python from 'highlight.js/lib/languages/python';
import ruby from 'highlight.js/lib/languages/ruby';
import rust from 'highlight.js/lib/languages/rust';
import sql from 'highlight.js/lib/languages/sql';
import typescript from 'highlight.js/lib/languages/typescript';
import xml from 'highlight.js/lib/languages/xml';
import yaml from 'highlight.js/lib/languages/yaml';
import { Fragment } from 'preact';
import { useEffect, useMemo, useState } from 'preact/hooks';
import { api, type Thread } from './api';
import type * as P from './protocol.gen';
import { errorText, toast } from './store';
import { Empty, ErrorBox } from './ui';

for (const [name, lang] of Object.entries({ bash, c, cpp, css, go, java, javascript, json, markdown, python, ruby, rust, sql, typescript, xml, yaml })) {
  hljs.registerLanguage(name, lang);
}

const BY_EXTENSION: Record<string, string> = {
  sh: 'bash', bash: 'bash', zsh: 'bash', c: 'c', h: 'c', cc: 'cpp', cpp: 'cpp', hpp: 'cpp', css: 'css',
  go: 'go', java: 'java', js: 'javascript', mjs: 'javascript', cjs: 'javascript', jsx: 'javascript',
  json: 'json', md: 'markdown', py: 'python', rb: 'ruby', rs: 'rust', sql: 'sql', ts: 'typescript',
  tsx: 'typescript', html: 'xml', xml: 'xml', svg: 'xml', yml: 'yaml', yaml: 'yaml', toml: 'yaml',
};

function languageOf(path: string): string | null {
  const ext = path.split('.').pop()?.toLowerCase() ?? '';
  return BY_EXTENSION[ext] ?? null;
}

/** One line of a unified diff. */
type Line = { kind: 'add' | 'del' | 'ctx' | 'hunk' | 'meta'; text: string; old?: number; new?: number; hunk: number };

export function parsePatch(patch: string): Line[] {
  const lines: Line[] = [];
  let oldNo = 0;
  let newNo = 0;
  let hunk = -1;
  let inHunk = false;
  for (const raw of patch.split('\n')) {
    const m = /^@@ -(\d+)(?:,\d+)? \+(\d+)(?:,\d+)? @@/.exec(raw);
    if (m) {
      oldNo = Number(m[1]);
      newNo = Number(m[2]);
      hunk += 1;
      inHunk = true;
      lines.push({ kind: 'hunk', text: raw, hunk });
    } else if (!inHunk) {
      if (raw) lines.push({ kind: 'meta', text: raw, hunk });
    } else if (raw.startsWith('+')) {
      lines.push({ kind: 'add', text: raw.slice(1), new: newNo++, hunk });
    } else if (raw.startsWith('-')) {
      lines.push({ kind: 'del', text: raw.slice(1), old: oldNo++, hunk });
    } else if (raw.startsWith(' ')) {
      lines.push({ kind: 'ctx', text: raw.slice(1), old: oldNo++, new: newNo++, hunk });
    } else if (raw.startsWith('diff --git')) {
      inHunk = false;
    }
  }
  return lines;
}

function highlighted(text: string, lang: string | null): string {
  if (!lang) return text.replace(/[&<>]/g, (ch) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;' })[ch]!);
  return hljs.highlight(text, { language: lang, ignoreIllegals: true }).value;
}

/** The follow-up a line comment becomes: the file, the line and the hunk it is in. */
export function commentMessage(path: string, lines: Line[], at: Line, comment: string): string {
  const hunk = lines.filter((l) => l.hunk === at.hunk && l.kind !== 'meta');
  const quoted = hunk
    .map((l) => (l.kind === 'hunk' ? l.text : `${l.kind === 'add' ? '+' : l.kind === 'del' ? '-' : ' '}${l.text}`))
    .join('\n');
  const where = at.new !== undefined ? `line ${at.new}` : `removed line ${at.old}`;
  return `Review comment on ${path}, ${where}:\n\n${comment.trim()}\n\n\`\`\`diff\n${quoted}\n\`\`\``;
}

function FileDiff({ file, threadId }: { file: P.ChangedFile; threadId: string }) {
  const [open, setOpen] = useState(true);
  const [commenting, setCommenting] = useState<number | null>(null);
  const [comment, setComment] = useState('');
  const lang = languageOf(file.path);
  const lines = useMemo(() => parsePatch(file.patch), [file.patch]);
  const send = async (at: Line) => {
    try {
      await api.send(threadId, { message: commentMessage(file.path, lines, at, comment) }, crypto.randomUUID());
      toast('Comment sent to the agent');
      setCommenting(null);
      setComment('');
    } catch (e) {
      toast(errorText(e));
    }
  };
  const name = file.oldPath ? `${file.oldPath} → ${file.path}` : file.path;
  return (
    <section class="file-diff" data-path={file.path}>
      <header onClick={() => setOpen(!open)}>
        <span class={`file-status ${file.status}`}>{file.status}</span>
        <span class="file-name">{name}</span>
        <span class="grow" />
        {file.binary ? <span class="muted-text">binary</span> : (
          <span class="counts">
            <span class="adds">+{file.additions}</span> <span class="dels">−{file.deletions}</span>
          </span>
        )}
      </header>
      {open && file.truncated && <div class="diff-note">This file's patch is too large to show here.</div>}
      {open && !file.truncated && file.binary && <div class="diff-note">Binary file.</div>}
      {open && !file.truncated && !file.binary && (
        <table class="diff" aria-label={`Diff of ${file.path}`}>
          <tbody>
            {lines.map((l, i) =>
              l.kind === 'meta' ? null : (
                <Fragment key={i}>
                  <tr class={`dl ${l.kind}`}>
                    <td class="ln">{l.old ?? ''}</td>
                    <td class="ln">{l.new ?? ''}</td>
                    <td class="act">
                      {l.kind !== 'hunk' && (
                        <button class="comment-btn" title="Comment on this line" aria-label={`Comment on line ${l.new ?? l.old}`} onClick={() => setCommenting(i)}>
                          +
                        </button>
                      )}
                    </td>
                    <td class="code">
                      {l.kind === 'hunk' ? (
                        l.text
                      ) : (
                        <>
                          <span class="sign">{l.kind === 'add' ? '+' : l.kind === 'del' ? '-' : ' '}</span>
                          <span dangerouslySetInnerHTML={{ __html: highlighted(l.text, lang) }} />
                        </>
                      )}
                    </td>
                  </tr>
                  {commenting === i && (
                    <tr class="comment-row">
                      <td colSpan={4}>
                        <textarea aria-label="Comment" rows={3} value={comment} onInput={(e) => setComment(e.currentTarget.value)} placeholder="What should the agent change here?" />
                        <div class="row">
                          <button class="primary" disabled={!comment.trim()} onClick={() => send(l)}>
                            Send to agent
                          </button>
                          <button onClick={() => setCommenting(null)}>Cancel</button>
                        </div>
                      </td>
                    </tr>
                  )}
                </Fragment>
              ),
            )}
          </tbody>
        </table>
      )}
    </section>
  );
}

export function Changes({ thread, tick }: { thread: Thread; tick: number }) {
  const [diff, setDiff] = useState<P.ThreadDiff | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState<string | null>(null);
  const [message, setMessage] = useState('');
  const [reload, setReload] = useState(0);
  useEffect(() => {
    let live = true;
    api.diff(thread.id).then(
      (d) => {
        if (!live) return;
        setDiff(d);
        setError(null);
      },
      (e) => live && setError(errorText(e)),
    );
    return () => {
      live = false;
    };
  }, [thread.id, tick, reload]);
  const act = async (what: string, f: () => Promise<string>) => {
    setBusy(what);
    try {
      toast(await f());
      setReload((x) => x + 1);
    } catch (e) {
      toast(errorText(e));
    } finally {
      setBusy(null);
    }
  };
  if (error) return <Empty title="No changes to show">{<ErrorBox message={error} />}</Empty>;
  if (!diff) return <div class="loading">Loading changes…</div>;
  const pr = thread.worktree?.pullRequestUrl;
  return (
    <div class="changes">
      <div class="changes-head">
        <div class="grow">
          <code>{diff.branch}</code> <span class="muted-text">from {diff.base.slice(0, 10)}</span>
          <div class="muted-text">
            {diff.files.length} files · <span class="adds">+{diff.additions}</span> <span class="dels">−{diff.deletions}</span>
            {pr && (
              <>
                {' · '}
                <a href={pr} target="_blank" rel="noreferrer">
                  pull request
                </a>
              </>
            )}
          </div>
        </div>
        <button onClick={() => setReload((x) => x + 1)}>Refresh</button>
        <button disabled={!!busy} onClick={() => act('sync', async () => {
          const o = await api.sync(thread.id, 'merge');
          return o.conflicts.length ? `Not synced: conflicts in ${o.conflicts.join(', ')}` : `Synced ${o.branch}`;
        })}>
          Sync
        </button>
      </div>
      <div class="changes-actions">
        <input aria-label="Commit message" placeholder={thread.title} value={message} onInput={(e) => setMessage(e.currentTarget.value)} />
        <button disabled={!!busy} onClick={() => act('commit', async () => {
          const o = await api.commit(thread.id, message || undefined);
          setMessage('');
          return `Committed ${o.head.slice(0, 10)}`;
        })}>
          Commit
        </button>
        <button disabled={!!busy} onClick={() => act('push', async () => `Pushed ${(await api.push(thread.id)).branch}`)}>Push</button>
        <button class="primary" disabled={!!busy} onClick={() => act('pr', async () => {
          const p = await api.pullRequest(thread.id, {});
          return `Opened pull request #${p.number}`;
        })}>
          Open pull request
        </button>
      </div>
      {diff.files.length === 0 && <Empty title="No changes yet">The thread's worktree matches where its branch started.</Empty>}
      {diff.files.map((f) => (
        <FileDiff key={`${f.path}:${diff.head}`} file={f} threadId={thread.id} />
      ))}
    </div>
  );
}
