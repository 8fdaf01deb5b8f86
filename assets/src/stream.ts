// A task's output: the gateway's SSE stream (AI SDK UI message stream v1) read with the AI
// SDK's own client, `readUIMessageStream`. A dropped connection resumes with Last-Event-ID
// into the same chunk stream, so the message state carries on without repeats.

import { readUIMessageStream, type UIMessage, type UIMessageChunk } from 'ai';
import { EventSourceParserStream } from 'eventsource-parser/stream';

export interface TaskStreamUpdate {
  message: UIMessage | null;
  /** `error` chunks (reported through `onError`: they are not parts of the message). */
  errors: string[];
  /** The stream ended with [DONE]: the task is over and everything has been seen. */
  done: boolean;
  /** A reconnect is under way after a dropped connection. */
  reconnecting: boolean;
}

/**
 * Streams task `taskId` into `onUpdate`, coalescing updates to one per animation frame.
 * Returns a function that stops reading.
 */
export function watchTask(taskId: string, onUpdate: (u: TaskStreamUpdate) => void): () => void {
  const abort = new AbortController();
  let lastEventId: string | null = null;
  const state: TaskStreamUpdate = { message: null, errors: [], done: false, reconnecting: false };
  let frame = 0;
  const flush = () => {
    frame = 0;
    onUpdate({ ...state, errors: [...state.errors] });
  };
  const schedule = () => {
    if (!frame) frame = requestAnimationFrame(flush);
  };

  const chunks = new ReadableStream<UIMessageChunk>({
    async start(controller) {
      let attempt = 0;
      while (!abort.signal.aborted && !state.done) {
        try {
          const headers: Record<string, string> = { Accept: 'text/event-stream' };
          if (lastEventId !== null) headers['Last-Event-ID'] = lastEventId;
          const res = await fetch(`/api/tasks/${encodeURIComponent(taskId)}/stream`, {
            headers,
            signal: abort.signal,
            credentials: 'same-origin',
          });
          if (res.status === 404 || res.status === 401) {
            state.errors.push(`cannot read the task's output (${res.status})`);
            state.done = true;
            break;
          }
          if (!res.ok || !res.body) throw new Error(`HTTP ${res.status}`);
          if (state.reconnecting) {
            state.reconnecting = false;
            schedule();
          }
          const events = res.body.pipeThrough(new TextDecoderStream()).pipeThrough(new EventSourceParserStream());
          const reader = events.getReader();
          for (;;) {
            const { value, done } = await reader.read();
            if (done) break;
            attempt = 0;
            if (value.data === '[DONE]') {
              state.done = true;
              break;
            }
            let chunk: UIMessageChunk;
            try {
              chunk = JSON.parse(value.data);
            } catch {
              continue;
            }
            if (value.id) lastEventId = value.id;
            controller.enqueue(chunk);
          }
        } catch {
          if (abort.signal.aborted) break;
        }
        if (state.done || abort.signal.aborted) break;
        // The connection dropped before [DONE]: resume from the last event seen.
        state.reconnecting = true;
        schedule();
        attempt++;
        await new Promise((r) => setTimeout(r, Math.min(5000, 250 * 2 ** Math.min(attempt, 5))));
      }
      schedule();
      controller.close();
    },
    cancel() {
      abort.abort();
    },
  });

  (async () => {
    try {
      for await (const message of readUIMessageStream({
        stream: chunks,
        onError: (e) => {
          state.errors.push(String(e instanceof Error ? e.message : e));
          schedule();
        },
      })) {
        state.message = message;
        schedule();
      }
    } catch (e) {
      if (!abort.signal.aborted) {
        state.errors.push(String(e instanceof Error ? e.message : e));
        schedule();
      }
    }
  })();

  return () => {
    abort.abort();
    if (frame) cancelAnimationFrame(frame);
  };
}
