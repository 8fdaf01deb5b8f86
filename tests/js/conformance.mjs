// Parses a viber task stream with the real `ai` package: its SSE JSON parser, its chunk
// schema, and readUIMessageStream (which enforces the chunk ordering rules).
//
//   node conformance.mjs stream <url> [last-event-id]   (token in VIBER_TOKEN)
//   node conformance.mjs selftest                        (proves bad streams are rejected)
//
// Prints one JSON line; exits non-zero on any violation.
import { parseJsonEventStream, readUIMessageStream, uiMessageChunkSchema } from 'ai';

async function consume(body) {
  const chunks = [];
  const parsed = parseJsonEventStream({ stream: body, schema: uiMessageChunkSchema });
  const validated = parsed.pipeThrough(
    new TransformStream({
      transform(result, controller) {
        if (!result.success) {
          throw new Error(
            `chunk rejected by uiMessageChunkSchema: ${result.error?.message ?? result.error} raw=${JSON.stringify(result.rawValue)}`,
          );
        }
        chunks.push(result.value);
        controller.enqueue(result.value);
      },
    }),
  );
  let last;
  let streamError;
  const appErrors = [];
  const messages = readUIMessageStream({
    stream: validated,
    terminateOnError: false,
    onError: (e) => {
      // An `error` chunk is the task reporting a failure, not a protocol violation.
      const fromChunk = chunks.some((c) => c.type === 'error' && c.errorText === e?.message);
      if (fromChunk) appErrors.push(e.message);
      else streamError = e;
    },
  });
  for await (const message of messages) last = message;
  if (streamError) throw streamError;
  return { message: last, chunks, appErrors };
}

function textOf(message) {
  return (message?.parts ?? [])
    .filter((p) => p.type === 'text')
    .map((p) => p.text)
    .join('');
}

function bodyOf(text) {
  return new ReadableStream({
    start(c) {
      c.enqueue(new TextEncoder().encode(text));
      c.close();
    },
  });
}

function sse(chunks) {
  return chunks.map((c, i) => `id: ${i}\ndata: ${JSON.stringify(c)}\n\n`).join('') + 'data: [DONE]\n\n';
}

const mode = process.argv[2];
if (mode === 'stream') {
  const url = process.argv[3];
  const headers = { authorization: `Bearer ${process.env.VIBER_TOKEN}` };
  if (process.argv[4]) headers['last-event-id'] = process.argv[4];
  const res = await fetch(url, { headers });
  if (res.status !== 200) throw new Error(`HTTP ${res.status}: ${await res.text()}`);
  const ct = res.headers.get('content-type');
  const proto = res.headers.get('x-vercel-ai-ui-message-stream');
  if (ct !== 'text/event-stream' || proto !== 'v1') throw new Error(`bad headers: ${ct} / ${proto}`);
  const { message, chunks, appErrors } = await consume(res.body);
  console.log(
    JSON.stringify({
      ok: true,
      text: textOf(message),
      role: message?.role,
      id: message?.id,
      partTypes: (message?.parts ?? []).map((p) => p.type),
      chunkTypes: chunks.map((c) => c.type),
      errors: appErrors,
    }),
  );
} else if (mode === 'selftest') {
  const good = [
    { type: 'start', messageId: 'm' },
    { type: 'start-step' },
    { type: 'text-start', id: 't' },
    { type: 'text-delta', id: 't', delta: 'hello' },
    { type: 'text-end', id: 't' },
    { type: 'finish-step' },
    { type: 'finish', finishReason: 'stop' },
  ];
  const bad = {
    'null where a field should be absent': [{ type: 'start', messageId: null }, ...good.slice(1)],
    'wrong field name': good.map((c) => (c.type === 'text-delta' ? { type: 'text-delta', id: 't', text: 'hello' } : c)),
    'wrong field type': good.map((c) => (c.type === 'text-delta' ? { ...c, delta: 5 } : c)),
    'delta before text-start': [good[0], good[1], good[3], good[2], good[4], good[5], good[6]],
    'unknown chunk type': [...good.slice(0, 6), { type: 'text-ending', id: 't' }, good[6]],
  };
  const { message } = await consume(bodyOf(sse(good)));
  if (textOf(message) !== 'hello') throw new Error('good stream did not parse');
  const survived = [];
  for (const [name, chunks] of Object.entries(bad)) {
    try {
      await consume(bodyOf(sse(chunks)));
      survived.push(name);
    } catch {
      // rejected, as it must be
    }
  }
  if (survived.length) throw new Error(`bad streams accepted: ${survived.join(', ')}`);
  console.log(JSON.stringify({ ok: true, rejected: Object.keys(bad) }));
} else {
  console.error('usage: conformance.mjs stream <url> [last-event-id] | selftest');
  process.exit(2);
}
