// The executors a task can run with, as the board names them, and which of them a node
// offers (its capabilities list the executor names it can run now).

import type { NodeInfo } from './api';
import type * as P from './protocol.gen';

export const EXECUTORS: { value: P.ExecutorKind; label: string }[] = [
  { value: 'llm', label: 'Agent (built-in)' },
  { value: 'claude-code', label: 'Claude Code' },
  { value: 'codex', label: 'Codex' },
  { value: 'opencode', label: 'OpenCode' },
  { value: 'shell', label: 'Shell command' },
];

/** The executors `node` offers with their versions; every executor when the node is unknown. */
export function offeredBy(node: NodeInfo | undefined): { value: P.ExecutorKind; label: string }[] {
  if (!node) return EXECUTORS;
  const caps = node.capabilities;
  return EXECUTORS.filter((e) => caps.includes(e.value)).map((e) => {
    const version = caps.find((c) => c.startsWith(`${e.value}@`))?.slice(e.value.length + 1);
    return version ? { ...e, label: `${e.label} ${version}` } : e;
  });
}
