// End-to-end test of the board in headless Chromium (Debian's, driven by playwright-core)
// against a real `viber all-in-one` on a port it picks itself. Run by tests/board.rs:
//
//   VIBER_BIN=target/debug/viber ARTIFACTS=target/board-artifacts node tests/js/board.mjs
//
// A scripted OpenAI-compatible server stands in for the model provider (no network here).
// Terminals run in tmux and bubblewrap on the node, as they do for real.
// Screenshots of the main screens (desktop and a 390-px phone) land in $ARTIFACTS.

import { execFileSync, spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { chromium } from 'playwright-core';

const BIN = process.env.VIBER_BIN;
const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
const ARTIFACTS = resolve(process.env.ARTIFACTS ?? 'target/board-artifacts');
const SECRET = 'sk-e2e-9f8e7d6c5b4a';
const STEP_TIMEOUT = 30_000;

if (!BIN) throw new Error('set VIBER_BIN to the viber binary');
mkdirSync(ARTIFACTS, { recursive: true });

const tmp = mkdtempSync(join(tmpdir(), 'viber-board-'));
const cleanups = [];
const log = (...a) => console.log('[board]', ...a);

function check(cond, message) {
  if (!cond) throw new Error(`check failed: ${message}`);
}

// ---- a git repository made by the test ------------------------------------------------------
function makeRepo() {
  const repo = join(tmp, 'repo');
  mkdirSync(repo);
  const git = (...args) =>
    execFileSync('git', args, {
      cwd: repo,
      env: { ...process.env, GIT_AUTHOR_NAME: 't', GIT_AUTHOR_EMAIL: 't@e', GIT_COMMITTER_NAME: 't', GIT_COMMITTER_EMAIL: 't@e' },
    });
  git('init', '-q', '-b', 'main');
  writeFileSync(join(repo, 'README.md'), '# e2e\n');
  writeFileSync(join(repo, 'hello.txt'), 'hello from the repo\n');
  git('add', '.');
  git('commit', '-q', '-m', 'initial');
  return repo;
}

// ---- a scripted model: first a bash tool call, then a final answer ----------------------------
function fakeOpenAI() {
  const server = createServer((req, res) => {
    let body = '';
    req.on('data', (c) => (body += c));
    req.on('end', () => {
      const json = JSON.parse(body || '{}');
      const sawTool = (json.messages ?? []).some((m) => m.role === 'tool');
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      const send = (delta, finish = null) =>
        res.write(
          `data: ${JSON.stringify({ id: 'c1', object: 'chat.completion.chunk', created: 1, model: 'fake-model', choices: [{ index: 0, delta, finish_reason: finish }] })}\n\n`,
        );
      if (!sawTool) {
        send({ role: 'assistant', content: 'I will look at the repository.' });
        send({ tool_calls: [{ index: 0, id: 'call_1', type: 'function', function: { name: 'bash', arguments: '' } }] });
        send({ tool_calls: [{ index: 0, function: { arguments: '{"command":"cat hello.txt"}' } }] });
        send({}, 'tool_calls');
      } else {
        send({ role: 'assistant', content: 'The file says hello. Done.' });
        send({}, 'stop');
      }
      res.write(`data: ${JSON.stringify({ id: 'c1', object: 'chat.completion.chunk', choices: [], usage: { prompt_tokens: 12, completion_tokens: 7 } })}\n\n`);
      res.end('data: [DONE]\n\n');
    });
  });
  return new Promise((r) => server.listen(0, '127.0.0.1', () => r(server)));
}

// ---- viber processes --------------------------------------------------------------------------
/** Starts `viber ARGS...` and resolves with its printed login URL once it is ready. */
function startReady(args, env = {}) {
  const child = spawn(BIN, args, {
    env: { ...process.env, HOME: tmp, RUST_LOG: 'info', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  cleanups.push(() => child.kill('SIGTERM'));
  let err = '';
  child.stderr.on('data', (d) => (err = (err + d).slice(-20000)));
  return new Promise((resolveUrl, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error(`viber ${args[0]} did not print its URL:\n${out}\n${err}`)), 60_000);
    child.stdout.on('data', (d) => {
      out += d;
      const m = out.match(/viber ready: (\S+)/);
      if (m) {
        clearTimeout(timer);
        resolveUrl({ url: m[1], child });
      }
    });
    child.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`viber ${args[0]} exited with ${code}:\n${err}`));
    });
  });
}

function startViber(modelUrl) {
  const data = join(tmp, 'data');
  // A price table, so the usage page shows a cost for the fake model's tokens.
  mkdirSync(data, { recursive: true });
  writeFileSync(join(data, 'prices.json'), JSON.stringify({ models: { 'fake-model': { inputPerMillion: 3, outputPerMillion: 15 } } }));
  return startReady(['all-in-one', '--listen', '127.0.0.1:0', '--data-dir', data, '--heartbeat-ms', '500', '--name', 'laptop'], {
    OPENAI_BASE_URL: modelUrl,
    OPENAI_API_KEY: 'fake-key',
    OPENAI_MODEL: 'fake-model',
  });
}

function freePort() {
  return new Promise((r) => {
    const srv = createServer();
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => r(port));
    });
  });
}

/**
 * Reconnect: a separate gateway and node; the gateway is killed (-9) mid-task and restarted on
 * the same port. The open page resumes the stream with Last-Event-ID and shows every line once.
 */
async function reconnectScenario(browser) {
  const port = await freePort();
  const gdata = join(tmp, 'gw2');
  const gatewayArgs = ['gateway', '--listen', `127.0.0.1:${port}`, '--data-dir', gdata, '--heartbeat-ms', '300'];
  let gw = await startReady(gatewayArgs);
  const origin = `http://127.0.0.1:${port}`;
  const token = new URL(gw.url).searchParams.get('token');
  const call = async (method, path, body) => {
    const r = await fetch(origin + path, {
      method,
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: body && JSON.stringify(body),
    });
    const json = await r.json().catch(() => null);
    if (!r.ok) throw new Error(`${method} ${path}: ${r.status} ${JSON.stringify(json)}`);
    return json;
  };
  const enroll = await call('POST', '/api/nodes/enroll', { name: 'worker' });
  const node = spawn(BIN, ['node', '--gateway', origin, '--token', enroll.token, '--name', 'worker', '--data-dir', join(tmp, 'node2')], {
    env: { ...process.env, HOME: tmp },
    stdio: 'ignore',
  });
  cleanups.push(() => node.kill('SIGTERM'));
  let nodeId;
  for (let i = 0; i < 100 && !nodeId; i++) {
    nodeId = (await call('GET', '/api/nodes')).nodes.find((n) => n.status === 'online')?.id;
    if (!nodeId) await new Promise((r) => setTimeout(r, 100));
  }
  check(nodeId, 'the separate node came online');
  await call('POST', '/api/environments', { name: 'scratch', type: 'manual' });
  await call('POST', '/api/environments/scratch/bindings', { nodeId });
  const thread = await call('POST', '/api/threads', { environmentId: 'scratch' });

  const ctx = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  ctx.setDefaultTimeout(STEP_TIMEOUT);
  const page = await ctx.newPage();
  await page.goto(gw.url);
  await page.locator('.sidebar').waitFor();
  await page.goto(`${origin}/threads/${thread.id}`);
  await page.getByRole('heading', { name: 'Nothing here yet' }).waitFor();
  await call('POST', `/api/threads/${thread.id}/messages`, {
    message: 'for i in $(seq 1 40); do echo "r-$i"; sleep 0.1; done',
    executor: 'shell',
  });
  const out = page.locator('section.turn .out');
  await out.getByText('r-5', { exact: false }).waitFor().catch(async (e) => {
    await shot(page, 'reconnect-failure');
    throw e;
  });
  check(!(await out.innerText()).includes('r-40'), 'the gateway goes down while the task still runs');
  gw.child.kill('SIGKILL');
  await new Promise((r) => setTimeout(r, 700));
  gw = await startReady(gatewayArgs);
  await page.locator('section.turn .task-foot .pill[data-status="completed"]').waitFor({ timeout: 60_000 });
  const text = await out.innerText();
  for (let i = 1; i <= 40; i++) {
    const n = text.split('\n').filter((l) => l === `r-${i}`).length;
    check(n === 1, `r-${i} appears ${n} times after the gateway restart:\n${text}`);
  }
  await shot(page, 'desktop-after-gateway-restart');
  log('gateway restart mid-stream: the page resumed and shows every line once');

  // A terminal's viewer socket across a gateway restart: it reconnects from the offset after
  // the last byte it got, so every line shows once; it takes keys again; an exit ends it.
  await page.getByRole('tab', { name: 'Terminal' }).click();
  await newTerminal(page);
  await terminalCommand(page, 'for i in $(seq 1 30); do echo "t-$i"; sleep 0.2; done');
  await terminalLine(page, 't-3', 'the loop started');
  gw.child.kill('SIGKILL');
  await page.locator('.term-link', { hasText: 'Reconnecting' }).waitFor();
  await new Promise((r) => setTimeout(r, 700));
  gw = await startReady(gatewayArgs);
  await terminalLine(page, 't-30', 'the terminal resumed after the gateway restart');
  const rows = await terminalRows(page);
  for (let i = 1; i <= 30; i++) {
    const n = rows.filter((l) => l.trim() === `t-${i}`).length;
    check(n === 1, `t-${i} appears ${n} times in the terminal after the gateway restart:\n${rows.join('\n')}`);
  }
  await terminalCommand(page, 'echo $((6*9))');
  await terminalLine(page, '54', 'the terminal takes keys after the gateway restart');
  await shot(page, 'desktop-terminal-after-gateway-restart');
  await terminalCommand(page, 'exit 3');
  await terminalLine(page, '[process exited with code 3]', 'the exit shows');
  log('gateway restart with a terminal open: it resumed with every line once, then exited');

  // Device pairing: a node started without a token asks to join; the open board hears of it
  // live, and approving it there brings it online without restarting it.
  await page.goto(`${origin}/nodes`);
  await page.locator('section.node').first().waitFor();
  const visitor = spawn(BIN, ['node', '--gateway', origin, '--name', 'visitor', '--data-dir', join(tmp, 'node3')], {
    env: { ...process.env, HOME: tmp },
    stdio: 'ignore',
  });
  cleanups.push(() => visitor.kill('SIGTERM'));
  await page.locator('.toast', { hasText: 'asks to join' }).waitFor();
  const request = page.locator('[data-pairing]');
  await request.locator('.pill[data-status="waiting"]').waitFor();
  await page.locator('[data-pairing-count]').waitFor();
  await shot(page, 'desktop-pairing');
  await request.getByLabel('Name').fill('visitor-01');
  await request.getByRole('button', { name: 'Approve' }).click();
  const approved = page.locator('section.node', { hasText: 'visitor-01' });
  await approved.locator('.pill[data-status="online"]').waitFor();
  check(visitor.exitCode === null, 'the approved node kept running');
  check((await page.locator('[data-pairing]').count()) === 0, 'the request left the list');
  await ctx.close();
  log('pairing: the request showed live and the approved node came online without a restart');
}

/** The text of the terminal pane's rows (xterm's DOM renderer draws one div per row). */
function terminalRows(page) {
  return page.evaluate(() => [...document.querySelectorAll('.term-pane .xterm-rows > div')].map((r) => r.textContent.trimEnd()));
}

/** Waits until a row of the terminal reads exactly `text`. */
async function terminalLine(page, text, what) {
  await page
    .waitForFunction((t) => [...document.querySelectorAll('.term-pane .xterm-rows > div')].some((r) => r.textContent.trim() === t), text)
    .catch(async (e) => {
      await shot(page, 'terminal-failure');
      const link = await page.evaluate(() => {
        const pane = document.querySelector('.term-pane');
        return `${pane?.getAttribute('data-terminal')}: ${pane?.querySelector('.term-link')?.textContent}`;
      });
      throw new Error(`${what}: no row reads ${JSON.stringify(text)} (terminal ${link}); the terminal shows:\n${(await terminalRows(page)).join('\n')}\n${e}`);
    });
}

/**
 * Opens a new terminal in the pane and waits until the pane shows it. Until the gateway has
 * made it, the pane still shows the terminal it had (a thread's shell: connected, with
 * text), and keys typed then would go there.
 */
async function newTerminal(page) {
  const pane = page.locator('.term-pane');
  const before = await pane.getAttribute('data-terminal');
  await pane.getByRole('button', { name: 'New terminal' }).first().click();
  // The label as the pane first shows the new terminal: never the last one's "Connected"
  // (keys typed on that word would be dropped by the new attachment's replay).
  const label = await page.waitForFunction((old) => {
    const el = document.querySelector('.term-pane');
    const id = el?.getAttribute('data-terminal');
    return id && id !== old ? el.querySelector('.term-link')?.textContent ?? '' : null;
  }, before);
  const shown = await label.jsonValue();
  check(!shown.includes('Connected'), `a new terminal's link reads ${JSON.stringify(shown)} before it is attached`);
}

/** Waits until the terminal is attached and takes keys, then types a command line into it. */
async function terminalCommand(page, line) {
  const pane = page.locator('.term-pane');
  await pane.locator('.term-link', { hasText: 'Connected' }).waitFor();
  // The shell's prompt: it starts in bubblewrap inside tmux, which takes a moment.
  await page.waitForFunction(() => [...document.querySelectorAll('.term-pane .xterm-rows > div')].some((r) => r.textContent.trim()));
  await pane.locator('.xterm').click();
  await page.keyboard.type(line);
  await page.keyboard.press('Enter');
}

/** Closes the terminals a failed run left running: tmux servers outlive the node's process. */
function killTmuxServers() {
  const sockets = execFileSync('find', [tmp, '-type', 's'], { encoding: 'utf8' }).split('\n').filter(Boolean);
  for (const socket of sockets) {
    try {
      execFileSync('tmux', ['-S', socket, 'kill-server'], { stdio: 'ignore' });
    } catch {
      /* not a tmux socket, or already gone */
    }
  }
}

async function shot(page, name) {
  await page.screenshot({ path: join(ARTIFACTS, `${name}.png`), fullPage: false });
}

/** The page must never show the secret; its masked form must be there instead where expected. */
async function assertNoSecret(page, where) {
  const html = await page.content();
  check(!html.includes(SECRET), `the secret value appears in the page (${where})`);
}

async function main() {
  const repo = makeRepo();
  cleanups.push(killTmuxServers);
  const model = await fakeOpenAI();
  cleanups.push(() => model.close());
  const { url } = await startViber(`http://127.0.0.1:${model.address().port}/v1`);
  const origin = new URL(url).origin;
  log('gateway at', origin);

  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  cleanups.push(() => browser.close());
  const desktop = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  desktop.setDefaultTimeout(STEP_TIMEOUT);
  const page = await desktop.newPage();
  const consoleErrors = [];
  page.on('pageerror', (e) => consoleErrors.push(String(e)));

  // 1. Log in through the printed URL: the token becomes a cookie and leaves the address bar.
  await page.goto(url);
  await page.getByRole('heading', { name: 'Welcome to viber' }).waitFor();
  check(!page.url().includes('token='), `token still in the address bar: ${page.url()}`);
  const cookies = await desktop.cookies();
  const session = cookies.find((c) => c.name === 'viber_session');
  check(session && session.httpOnly && session.sameSite === 'Strict', `session cookie: ${JSON.stringify(cookies)}`);
  const csrfless = await page.evaluate(async () => {
    const r = await fetch('/api/threads', { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"environmentId":"x"}' });
    return r.status;
  });
  check(csrfless === 403, `a cookie write without the CSRF token got ${csrfless}`);
  await shot(page, 'desktop-welcome');

  // A browser without the token sees the login form and can sign in with the token.
  {
    const other = await browser.newContext();
    const p2 = await other.newPage();
    await p2.goto(origin + '/');
    await p2.getByLabel('Admin token').fill(new URL(url).searchParams.get('token'));
    await p2.getByRole('button', { name: 'Sign in' }).click();
    await p2.getByRole('heading', { name: 'Welcome to viber' }).waitFor();
    await other.close();
  }
  log('login ok');

  // 2. Create a git environment with a variable and a secret.
  await page.getByRole('button', { name: 'Create Environment' }).first().click();
  await page.getByLabel('Name', { exact: true }).fill('e2e-repo');
  await page.getByLabel('Description').fill('The repository the test made');
  await page.getByLabel('Repository URL').fill(`file://${repo}`);
  await page.getByLabel('Branch').fill('main');
  await page.getByLabel(/^Setup script/).fill('echo "setup sees $API_KEY"\necho "greeting is $GREETING"\nls\necho setup-finished');
  await page.getByLabel('Agent working mode').selectOption('always-ask');
  await page.getByRole('button', { name: 'Add variable' }).click();
  await page.getByLabel('Variable name').fill('GREETING');
  await page.getByLabel('Variable value').fill('hello');
  await page.getByRole('button', { name: 'Add secret' }).click();
  await page.getByLabel('Secret name').fill('API_KEY');
  await page.getByLabel('Value of API_KEY').fill(SECRET);
  await shot(page, 'desktop-create-environment');
  await page.getByRole('button', { name: 'Create', exact: true }).click();
  await page.getByRole('heading', { name: 'Edit e2e-repo' }).waitFor();
  await assertNoSecret(page, 'environment form after save');
  check(
    (await page.getByLabel('Value of API_KEY').getAttribute('placeholder')).includes('••••'),
    'the stored secret is shown masked',
  );
  // Validation (dry run).
  await page.getByRole('button', { name: 'Validate' }).click();
  await page.getByLabel('Validation result').waitFor();
  const checks = await page.getByLabel('Validation result').innerText();
  check(checks.includes('✓') && !checks.includes('✗'), `validation: ${checks}`);
  await shot(page, 'desktop-edit-environment');
  log('environment created');

  // 3. Map it to the local node and watch it prepare.
  await page.getByRole('button', { name: 'Manage Mappings' }).first().click();
  await page.getByRole('heading', { name: 'Mappings of e2e-repo' }).waitFor();
  await page.getByRole('button', { name: 'Prepare Environment' }).click();
  const binding = page.locator('section.binding');
  await binding.locator('.pill[data-status="ready"]').waitFor();
  const setupLog = page.getByLabel('Setup log');
  await setupLog.filter({ hasText: 'setup-finished' }).waitFor();
  const logText = await setupLog.innerText();
  check(logText.includes('greeting is hello'), `setup log has the variable: ${logText}`);
  check(logText.includes('hello.txt'), `setup ran in the checkout: ${logText}`);
  check(logText.includes('setup sees [REDACTED]'), `setup log masks the secret: ${logText}`);
  await assertNoSecret(page, 'mapping page');
  check((await page.locator('.env-switch-row .pill').innerText()) === 'Ready', 'sidebar pill says Ready');
  await shot(page, 'desktop-mapping-ready');
  log('prepared');

  // 4. A thread with a shell task whose output streams in.
  const newThread = async () => {
    const before = page.url();
    await page.getByRole('button', { name: 'New Thread' }).click();
    await page.waitForURL((u) => u.toString() !== before && u.pathname.startsWith('/threads/'));
    await page.getByRole('heading', { name: 'Nothing here yet' }).waitFor();
    return page.url();
  };
  const threadUrl = await newThread();
  const composer = page.getByLabel('Message');
  const send = async (text, executor) => {
    if (executor) await page.getByLabel(/^Run with/).selectOption(executor);
    await composer.fill(text);
    await page.getByRole('button', { name: 'Send' }).click();
  };
  await send('for i in $(seq 1 30); do echo "line-$i"; sleep 0.1; done; echo "key=$API_KEY"', 'shell');
  const turn1 = page.locator('section.turn').nth(0);
  await turn1.locator('.out').getByText('line-3', { exact: false }).waitFor();
  const midText = await turn1.locator('.out').innerText();
  check(!midText.includes('line-30'), 'output arrives while the task runs, not all at the end');
  await turn1.locator('.task-foot .pill[data-status="completed"]').waitFor();
  const out1 = await turn1.locator('.out').innerText();
  check(out1.includes('line-30') && out1.includes('key=[REDACTED]'), `shell output: ${out1}`);
  await assertNoSecret(page, 'thread with shell output');
  log('shell task streamed');

  // 5. Reload mid-stream: the output is there once, and keeps streaming.
  await send('for i in $(seq 1 40); do echo "tick-$i"; sleep 0.1; done');
  const turn2 = page.locator('section.turn').nth(1);
  await turn2.locator('.out').getByText('tick-8').waitFor();
  await page.reload();
  await page.locator('section.turn').nth(1).locator('.task-foot .pill[data-status="completed"]').waitFor();
  const out2 = await page.locator('section.turn').nth(1).locator('.out').innerText();
  for (let i = 1; i <= 40; i++) {
    const n = out2.split('\n').filter((l) => l === `tick-${i}`).length;
    check(n === 1, `tick-${i} appears ${n} times after the reload:\n${out2}`);
  }
  log('reload mid-stream shows every line once');

  // 6. Stop a long task.
  await send('echo long-started; sleep 300');
  const turn3 = page.locator('section.turn').nth(2);
  await turn3.locator('.out').getByText('long-started').waitFor();
  await shot(page, 'desktop-thread-running');
  await turn3.getByRole('button', { name: 'Stop' }).click();
  await turn3.locator('.task-foot .pill[data-status="stopped"]').waitFor();
  log('long task stopped');

  // 7. The agent asks before running a tool (the environment says always-ask): approve it.
  await send('What does hello.txt say?', 'llm');
  const turn4 = page.locator('section.turn').nth(3);
  await turn4.getByRole('button', { name: 'Approve' }).waitFor();
  await shot(page, 'desktop-approval');
  await turn4.getByRole('button', { name: 'Approve' }).click();
  await turn4.getByText('The file says hello. Done.').waitFor();
  await turn4.locator('.task-foot .pill[data-status="completed"]').waitFor();
  await turn4.locator('.tool summary').click();
  await turn4.locator('.tool-body').getByText('hello from the repo').waitFor();
  await shot(page, 'desktop-thread');
  log('agent approval flow ok');

  // 7b. A terminal on the thread's node (a login shell in tmux, in the sandbox), typed into
  // through xterm.js; after a reload it reattaches and replays its screen, and takes keys again.
  await page.getByRole('tab', { name: 'Terminal' }).click();
  const pane = page.locator('.term-pane');
  await pane.locator('.term-empty button, .term-link').first().waitFor();
  // The thread's shell tasks were typed into the thread's own shell: it shows them.
  await page
    .waitForFunction(() => [...document.querySelectorAll('.term-pane .xterm-rows > div')].some((r) => r.textContent.includes('# viber: task_')))
    .catch(async (e) => {
      await shot(page, 'terminal-failure');
      throw new Error(`the thread's shell does not show its tasks:\n${(await terminalRows(page)).join('\n')}\n${e}`);
    });
  await shot(page, 'desktop-terminal-thread-shell');
  await newTerminal(page);
  await terminalCommand(page, 'echo $((6*7))');
  await terminalLine(page, '42', 'the shell answered');
  check(!(await page.locator('section.turn').first().isVisible()), 'the conversation is hidden behind the terminal');
  await shot(page, 'desktop-terminal');
  await page.reload();
  await page.getByRole('tab', { name: 'Terminal' }).click();
  // Pasted the moment the reattached terminal shows its replayed screen (from the page, not a
  // round trip later), then composed as an IME does (xterm sends that text from a timer, not
  // in a key event), then inserted with no key (as dictation or an emoji picker does), while
  // its scrollback is still replaying (input is not sent then): the paste, the composition
  // and the insertion are held and sent in order when the replay ends.
  const pastedWhile = await page.evaluate(async ([text, composed, inserted]) => {
    const shown = () => [...document.querySelectorAll('.term-pane .xterm-rows > div')].some((r) => r.textContent.trim() === '42');
    const until = performance.now() + 30000;
    while (!shown()) {
      if (performance.now() > until) return null;
      await new Promise(requestAnimationFrame);
    }
    const data = new DataTransfer();
    data.setData('text/plain', text);
    const ev = new ClipboardEvent('paste', { clipboardData: data, bubbles: true, cancelable: true });
    const textarea = document.querySelector('.term-pane .xterm-helper-textarea');
    textarea.dispatchEvent(ev);
    const label = document.querySelector('.term-pane .term-link')?.textContent ?? '';
    textarea.dispatchEvent(new CompositionEvent('compositionstart', { bubbles: true, data: '' }));
    textarea.value += composed;
    textarea.dispatchEvent(new CompositionEvent('compositionupdate', { bubbles: true, data: composed }));
    textarea.dispatchEvent(new CompositionEvent('compositionend', { bubbles: true, data: composed }));
    // After the composition is sent (from xterm's timer) and its window has closed.
    await new Promise((r) => setTimeout(r, 20));
    textarea.dispatchEvent(new InputEvent('input', { bubbles: true, inputType: 'insertText', data: inserted }));
    return label;
  }, ['echo $((6*', '8', '))']);
  if (pastedWhile === null) await terminalLine(page, '42', 'the reattached terminal replays its screen');
  log(`terminal: pasted into the reattached terminal while its link read "${pastedWhile}"`);
  await pane.locator('.xterm').click();
  await page.keyboard.press('Enter');
  await terminalLine(page, '48', 'the reattached terminal takes a paste, a composition and an insertion as it replays');
  const screen = (await terminalRows(page)).join('\n');
  check(screen.split('\n').filter((l) => l.trim() === '42').length === 1, `42 appears once after the reattach:\n${screen}`);
  // Closing it leaves the thread's own shell (where its shell tasks were typed) or nothing.
  await pane.getByRole('button', { name: 'Close' }).click();
  await page.waitForFunction(() => !document.querySelector('.term-pane .xterm-rows') || document.querySelector('.term-pane .term-empty') || [...document.querySelectorAll('.term-pane .xterm-rows > div')].every((r) => r.textContent.trim() !== '48'));
  await page.getByRole('tab', { name: 'Conversation' }).click();
  await page.locator('section.turn').first().waitFor();
  log('terminal: typed into, reattached after a reload, closed');

  // 7c. The thread works in its own git worktree: an edit shows in its Changes, with the
  // changed line highlighted as added, and a comment on that line goes to the thread as its
  // next message, quoting the file, the line and the hunk.
  await send("sed -i 's/hello from the repo/hello from the thread/' hello.txt && echo edited", 'shell');
  const turnEdit = page.locator('section.turn').nth(4);
  await turnEdit.locator('.task-foot .pill[data-status="completed"]').waitFor();
  await page.getByRole('tab', { name: 'Changes' }).click();
  const fileDiff = page.locator('.file-diff[data-path="hello.txt"]');
  await fileDiff.waitFor();
  const added = fileDiff.locator('tr.dl.add');
  await added.filter({ hasText: 'hello from the thread' }).waitFor();
  await fileDiff.locator('tr.dl.del').filter({ hasText: 'hello from the repo' }).waitFor();
  check((await page.locator('.file-diff').count()) === 1, 'only the edited file is changed (setup output is not in the repo)');
  await shot(page, 'desktop-changes');
  await added.first().hover();
  await added.first().getByRole('button', { name: /Comment on line/ }).click();
  await page.getByLabel('Comment', { exact: true }).fill('say goodbye instead');
  await page.getByRole('button', { name: 'Send to agent' }).click();
  await page.getByRole('tab', { name: 'Conversation' }).click();
  const review = page.locator('section.turn').nth(5).locator('.bubble').first();
  await review.waitFor();
  const reviewText = await review.innerText();
  check(reviewText.includes('hello.txt, line 1') && reviewText.includes('say goodbye instead') && reviewText.includes('+hello from the thread'), `review comment: ${reviewText}`);
  await page.locator('section.turn').nth(5).locator('.task-foot .pill').first().waitFor();
  log('changes view shows the edit; a line comment became the next message');

  // 8. Time to first render of a thread with 500 chunks of history.
  const bigUrl = await newThread();
  await send('for i in $(seq 1 500); do echo "chunk-$i"; sleep 0.004; done', 'shell');
  await page.locator('section.turn .task-foot .pill[data-status="completed"]').waitFor({ timeout: 60_000 });
  const bigTask = await page.locator('section.turn .assistant').getAttribute('data-task');
  const lastSeq = await page.evaluate(async (id) => (await (await fetch(`/api/tasks/${id}`)).json()).lastSeq, bigTask);
  const renders = [];
  for (let i = 0; i < 5; i++) {
    const p = await desktop.newPage();
    // Checked every frame from the first one: the time from navigation start to the first
    // frame that shows the whole history.
    await p.addInitScript(() => {
      const tick = () => {
        const out = document.querySelector('.out');
        if (out && out.textContent.includes('chunk-500')) window.__rendered = performance.now();
        else requestAnimationFrame(tick);
      };
      requestAnimationFrame(tick);
    });
    await p.goto(bigUrl);
    await p.waitForFunction(() => window.__rendered !== undefined);
    renders.push(await p.evaluate(() => window.__rendered));
    await p.close();
  }
  renders.sort((a, b) => a - b);
  log(`thread view with ${lastSeq} chunks: first render of all output ${renders.map((r) => r.toFixed(0)).join(', ')} ms (median ${renders[2].toFixed(0)} ms)`);
  writeFileSync(join(ARTIFACTS, 'measurements.json'), JSON.stringify({ chunks: lastSeq, firstRenderMs: renders }, null, 2));

  // 9. Nodes page: the local node and its binding; Add node shows the enrollment command.
  await page.goto(origin + '/nodes');
  const node = page.locator('section.node').first();
  await node.locator('.pill[data-status="online"]').waitFor();
  await node.getByText('e2e-repo').waitFor();
  await page.getByLabel('Name', { exact: true }).fill('build-01');
  await page.getByRole('button', { name: 'Add node' }).click();
  const cmd = await page.locator('.enroll pre').innerText();
  check(cmd.includes('viber node --gateway') && cmd.includes('vbr_enr_') && cmd.includes('build-01'), `enroll command: ${cmd}`);
  await shot(page, 'desktop-nodes');

  // 9b. A scheduled job on the environment's page: added, run now, its run shown with its
  // thread.
  await page.goto(origin + '/environments/e2e-repo');
  const jobs = page.locator('[data-jobs]');
  await jobs.getByLabel('Job name').fill('nightly');
  await jobs.getByLabel('Schedule (cron)').fill('0 3 * * *');
  await jobs.getByLabel('Time zone').fill('Europe/Paris');
  await jobs.getByLabel('Executor').selectOption('shell');
  await jobs.getByLabel('Goal').fill('echo from-a-job');
  await jobs.getByRole('button', { name: 'Add job' }).click();
  const jobRow = jobs.locator('tr[data-job]', { hasText: 'nightly' });
  await jobRow.locator('[data-next-run]').filter({ hasText: /in / }).waitFor();
  await jobRow.getByRole('button', { name: 'Run now' }).click();
  await jobRow.locator('[data-last-run] .pill[data-status="completed"]').waitFor();
  await shot(page, 'desktop-jobs');
  await jobRow.getByRole('link', { name: 'thread' }).click();
  await page.locator('section.turn .out', { hasText: 'from-a-job' }).waitFor();
  log('a scheduled job was added, run now, and its thread shows the output');

  // 9c. Shared credentials on the Settings page: a secret every environment inherits, shown
  // masked and never in the page.
  await page.goto(origin + '/settings');
  const shared = page.locator('[data-shared]');
  await shared.getByLabel('Kind').selectOption('env');
  await shared.getByLabel('Variable name').fill('SHARED_KEY');
  await shared.getByLabel('Value').fill('sk-shared-7f6e5d4c3b2a');
  await shared.getByRole('button', { name: 'Save' }).click();
  await shared.locator('[data-shared-key="env.SHARED_KEY"]').waitFor();
  check(!(await page.content()).includes('sk-shared-7f6e5d4c3b2a'), 'the shared secret appears in the page');
  await shot(page, 'desktop-settings');

  // 9d. Usage: the agent's tokens per day in a chart, and their cost from the price table.
  await page.goto(origin + '/usage');
  const usageRow = page.locator('tr[data-usage-row="fake-model"]');
  await usageRow.waitFor();
  const cost = await usageRow.locator('[data-cost]').innerText();
  check(cost.includes('from prices') && !cost.includes('unpriced'), `the agent's cost comes from the price table: ${cost}`);
  await page.waitForFunction(() => {
    const c = document.querySelector('.usage-chart canvas');
    return c && c.width > 0 && c.getAttribute('style');
  });
  await page.getByLabel('Show').selectOption('cost');
  await shot(page, 'desktop-usage');

  // 10. The secret is masked everywhere the board shows the environment.
  const pages = [
    ['/', '.thread-item'],
    ['/nodes', 'section.node .pill'],
    ['/settings', 'text=Sign out'],
    // The audit log names the secret the board set, never its value.
    ['/audit', 'table.audit td.fields:has-text("secrets.API_KEY")'],
    ['/environments/e2e-repo', '.kv.secret'],
    ['/environments/e2e-repo/mappings', 'section.binding .pill[data-status="ready"]'],
  ];
  for (const [path, ready] of pages) {
    await page.goto(origin + path);
    await page.locator(ready).first().waitFor();
    await assertNoSecret(page, path);
    if (path === '/audit') await shot(page, 'desktop-audit');
  }
  await page.goto(threadUrl);
  await page.locator('section.turn').nth(0).locator('.task-foot .pill[data-status="completed"]').waitFor();
  await assertNoSecret(page, 'thread after reload');

  // 11. Phone layout (390 px): threads panel first, environment switcher and New Thread on top,
  // environment management in a sheet.
  const phone = await browser.newContext({
    viewport: { width: 390, height: 844 },
    deviceScaleFactor: 2,
    isMobile: true,
    hasTouch: true,
    storageState: await desktop.storageState(),
  });
  phone.setDefaultTimeout(STEP_TIMEOUT);
  const m = await phone.newPage();
  m.on('pageerror', (e) => consoleErrors.push(String(e)));
  await m.goto(origin + '/');
  await m.getByRole('button', { name: 'New Thread' }).waitFor();
  await m.locator('.thread-item').first().waitFor();
  check(await m.locator('.thread-item').first().isVisible(), 'threads panel is visible first on a phone');
  const switcherY = (await m.locator('#env-select').boundingBox()).y;
  const listY = (await m.locator('.thread-item').first().boundingBox()).y;
  check(switcherY < listY, 'environment switcher comes before the thread list');
  await shot(m, 'mobile-threads');
  await m.getByRole('button', { name: 'Environments', exact: true }).click();
  await m.getByRole('dialog', { name: 'Environments' }).getByRole('button', { name: 'Create Environment' }).waitFor();
  await shot(m, 'mobile-environments-sheet');
  await m.getByRole('button', { name: 'Close' }).click();
  await m.locator('.thread-item').first().click();
  await m.locator('section.turn').first().waitFor();
  await shot(m, 'mobile-thread');
  await m.goto(threadUrl);
  await m.locator('section.turn').nth(3).locator('.task-foot .pill[data-status="completed"]').waitFor();
  await m.locator('section.turn').nth(3).scrollIntoViewIfNeeded();
  await shot(m, 'mobile-thread-agent');
  await m.getByRole('tab', { name: 'Terminal' }).click();
  await m.locator('.term-pane').getByRole('button', { name: 'New terminal' }).first().waitFor();
  await shot(m, 'mobile-terminal');
  await m.getByRole('tab', { name: 'Conversation' }).click();
  await m.goto(origin + '/environments/e2e-repo/mappings');
  await m.locator('section.binding .pill[data-status="ready"]').waitFor();
  await shot(m, 'mobile-mapping');
  await assertNoSecret(m, 'phone mapping');
  const overflow = await m.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  check(overflow <= 1, `the phone layout scrolls sideways by ${overflow}px`);

  // 12. A setup that fails shows Error with the failing step and the log up to the failure.
  await page.goto(origin + '/environments/new');
  await page.getByLabel('Name', { exact: true }).fill('broken-setup');
  await page.getByLabel('Repository URL').fill(`file://${repo}`);
  await page.getByLabel(/^Setup script/).fill('echo before-failure\nexit 3');
  await page.getByRole('button', { name: 'Create and map to a node' }).click();
  await page.getByRole('heading', { name: 'Mappings of broken-setup' }).waitFor();
  await page.getByRole('button', { name: 'Prepare Environment' }).click();
  await page.locator('section.binding .pill[data-status="error"]').waitFor();
  const failure = await page.locator('section.binding .error-box').innerText();
  check(failure.includes('Failed at setup'), `failure names the step: ${failure}`);
  await page.getByLabel('Setup log').filter({ hasText: 'before-failure' }).waitFor();
  check((await page.locator('.env-switch-row .pill').innerText()) === 'Error', 'sidebar pill says Error');
  await shot(page, 'desktop-mapping-error');

  check(consoleErrors.length === 0, `page errors: ${consoleErrors.join('\n')}`);

  await reconnectScenario(browser);
  log('all board checks passed; screenshots in', ARTIFACTS);
}

let failed = false;
try {
  await main();
} catch (e) {
  failed = true;
  console.error('[board] FAILED:', e);
} finally {
  for (const f of cleanups.reverse()) {
    try {
      await f();
    } catch {
      /* best effort */
    }
  }
  rmSync(tmp, { recursive: true, force: true });
}
process.exit(failed ? 1 : 0);
