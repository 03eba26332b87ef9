// Drives the cronwerk dashboard as an operator would, in headless Chromium
// (Debian's chromium package; Playwright's own browser download is not
// used): create a task through the form, see it run, switch it off, press
// Run now, follow the event log live, look at the plugins and the farm. Fails on any
// console error, page error or failed request. Started by tests/browser.rs,
// which runs `cronwerk serve` and passes:
//   CRONWERK_URL          base URL of the dashboard
//   CRONWERK_TOKEN        the API token
//   CRONWERK_SCREENSHOTS  folder for one screenshot per page
//   CRONWERK_CHROMIUM     the browser (default /usr/bin/chromium)

import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const base = process.env.CRONWERK_URL;
const token = process.env.CRONWERK_TOKEN;
const shots = process.env.CRONWERK_SCREENSHOTS;
if (!base || !token || !shots) {
  console.error('set CRONWERK_URL, CRONWERK_TOKEN and CRONWERK_SCREENSHOTS (tests/browser.rs does)');
  process.exit(2);
}
mkdirSync(shots, { recursive: true });

const TASK = 'Browser hello';
const problems = [];
const step = (what) => console.log(`browser: ${what}`);

const browser = await chromium.launch({
  executablePath: process.env.CRONWERK_CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: [
    '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
  ],
});

/** The API, with the token, from outside the page (to make things happen while watching). */
async function call(method, path, body) {
  const headers = { Authorization: `Bearer ${token}` };
  if (body) headers['Content-Type'] = 'application/json';
  const r = await fetch(base + path, { method, headers, body: body ? JSON.stringify(body) : undefined });
  if (!r.ok) throw new Error(`${method} ${path}: HTTP ${r.status} ${await r.text()}`);
  return r.json();
}

async function shot(page, name) {
  const path = join(shots, `${name}.png`);
  await page.screenshot({ path, fullPage: true });
  step(`screenshot ${path}`);
}

let failed = false;
try {
  const context = await browser.newContext({ viewport: { width: 1440, height: 900 }, colorScheme: 'light' });
  const page = await context.newPage();
  page.setDefaultTimeout(20000);
  page.on('console', (m) => {
    if (m.type() === 'error' || m.type() === 'assert') problems.push(`console ${m.type()}: ${m.text()}`);
  });
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  page.on('requestfailed', (r) => {
    // Leaving a page aborts its live streams: that is the design, not a failure.
    const why = r.failure() ? r.failure().errorText : '';
    if (!why.includes('ERR_ABORTED')) problems.push(`request failed: ${r.method()} ${r.url()} ${why}`);
  });
  page.on('response', (r) => {
    if (r.status() >= 400) problems.push(`HTTP ${r.status()} for ${r.request().method()} ${r.url()}`);
  });

  step('open the dashboard with the token in the address');
  await page.goto(`${base}/#token=${token}`);
  await page.getByRole('heading', { name: 'Scheduled tasks' }).waitFor();
  await page.getByText('No task configurations yet').waitFor();
  if (page.url().includes(token)) throw new Error('the token stayed in the address bar');
  await page.locator('#live.on').waitFor();
  await shot(page, '01-tasks-empty');

  step('create a task through the form');
  await page.getByRole('button', { name: 'New task' }).click();
  const dialog = page.locator('#task-dialog');
  await dialog.getByRole('heading', { name: 'New task' }).waitFor();
  await dialog.getByLabel('Name', { exact: true }).fill(TASK);
  await dialog.getByLabel('Implementation').fill('Acme.HelloScheduledTask');
  const interval = dialog.getByLabel('Interval');
  await interval.fill('0s');
  await dialog.locator('[data-error-for="schedule"]').getByText('interval must be at least 1s').waitFor();
  await shot(page, '02-task-form-validation');
  await interval.fill('2s');
  await dialog.locator('#preview').getByText('Every 2s').waitFor();
  await dialog.locator('#preview-times li').nth(4).waitFor();
  if (await dialog.locator('[data-error-for="schedule"]').textContent() !== '') throw new Error('the schedule error stayed after the fix');
  await dialog.getByLabel('Time limit').fill('5s');
  await dialog.getByLabel('Memory limit').fill('64MiB');
  await dialog.getByLabel('Properties').fill('greeting=hi from the browser');
  // The limit of runs at once is asked for only when runs may overlap.
  const overlap = dialog.getByLabel('While a run still goes on');
  const atOnce = dialog.getByLabel('Runs at once');
  await atOnce.waitFor({ state: 'hidden' });
  await overlap.selectOption('allow');
  await atOnce.fill('3');
  // A jitter longer than the interval is refused on the field, then fixed.
  const jitter = dialog.getByLabel('Jitter');
  await jitter.fill('1m');
  await dialog.locator('[data-error-for="jitter"]').getByText('shortest gap').waitFor();
  await jitter.fill('1s');
  await dialog.locator('[data-error-for="jitter"]').getByText('shortest gap').waitFor({ state: 'detached' });
  // A follow-up must name a configuration there is.
  const onFailure = dialog.getByLabel('On failure, run');
  await onFailure.fill('Nobody');
  await dialog.locator('[data-error-for="on_failure"]').getByText("no configuration named 'Nobody'").waitFor();
  await onFailure.fill('');
  await dialog.locator('[data-error-for="on_failure"]').getByText('Nobody').waitFor({ state: 'detached' });
  await shot(page, '03-task-form');
  await dialog.getByRole('button', { name: 'Create task' }).click();
  await dialog.waitFor({ state: 'hidden' });

  step('see it run on its schedule, without reloading');
  const row = page.locator(`tr[data-task="${TASK}"]`);
  await row.waitFor();
  await row.locator('td').nth(5).getByText('succeeded').waitFor();
  await row.locator('td').nth(3).getByText('every 2s').waitFor();
  await shot(page, '04-tasks');

  step('switch it off, then press Run now');
  await row.getByRole('checkbox', { name: `Enabled: ${TASK}` }).uncheck();
  await row.locator('td').nth(6).getByText('disabled').waitFor();
  await row.locator('.badge.running').waitFor({ state: 'detached' });
  const before = (await call('GET', `/api/tasks/${encodeURIComponent(TASK)}`)).run_count;
  await row.getByRole('button', { name: 'Run now' }).click();
  await page.locator('#toast').getByText(`“${TASK}” is running`).waitFor();
  await page.waitForFunction(
    ([name, n]) => {
      const cell = document.querySelector(`tr[data-task="${name}"] td:nth-child(8)`);
      return cell && Number(cell.textContent.replace(/,/g, '')) > n;
    },
    [TASK, before],
  );

  step('the task detail shows the manual run, limits and the chart');
  await row.getByRole('link', { name: TASK }).click();
  await page.getByRole('heading', { name: TASK }).waitFor();
  const manual = page.locator('table.runs tbody tr').filter({ hasText: 'manual' });
  await manual.first().locator('.badge.succeeded').waitFor();
  await page.getByText('hi from the browser').waitFor();
  await page.locator('dl.facts').getByText('64 MiB').waitFor();
  await page.locator('dl.facts').getByText('run beside it, up to 3 at once').waitFor();
  await page.locator('dl.facts').getByText(/^1s \(its slots: \+/).waitFor();
  await page.locator('svg.chart rect.bar').first().waitFor();
  await shot(page, '05-task-detail');

  step('a backfill of past slots is started from the task page and runs to its end');
  const local = (d) => new Date(d.getTime() - d.getTimezoneOffset() * 60000).toISOString().slice(0, 19);
  const now = Date.now();
  await page.getByRole('button', { name: 'Backfill…' }).click();
  const backfill = page.locator('#backfill-dialog');
  await backfill.getByLabel('From').fill(local(new Date(now - 10000)));
  await backfill.getByLabel('To').fill(local(new Date(now + 60000)));
  await backfill.getByRole('button', { name: 'Start backfill' }).click();
  await backfill.locator('[data-error-for="to"]').getByText('in the future').waitFor();
  await backfill.getByLabel('To').fill(local(new Date(now - 4000)));
  await backfill.getByRole('button', { name: 'Start backfill' }).click();
  await backfill.waitFor({ state: 'hidden' });
  const backfills = page.locator('table.backfills tbody tr');
  await backfills.first().locator('.badge.succeeded').getByText('done').waitFor();
  await shot(page, '05a-backfill');

  step('paused with a note, and the audit trail shows who changed what');
  await page.getByRole('button', { name: 'Enable' }).click();
  await page.getByRole('heading', { name: TASK }).locator('.badge', { hasText: 'enabled' }).waitFor();
  page.once('dialog', (d) => d.accept('waiting for the vendor fix'));
  await page.getByRole('button', { name: 'Disable' }).click();
  await page.locator('dl.facts').getByText('waiting for the vendor fix').waitFor();
  await page.getByRole('link', { name: 'History of changes' }).click();
  await page.getByRole('heading', { name: `Audit of “${TASK}”` }).waitFor();
  const audit = page.locator('table.audit tbody tr');
  await audit.first().getByText('disabled').waitFor();
  await audit.filter({ hasText: 'created' }).first().waitFor();
  await audit.filter({ hasText: 'the API token' }).first().waitFor();
  await shot(page, '05c-audit');
  await page.goto(`${base}/#/tasks/${encodeURIComponent(TASK)}`);
  await page.getByRole('heading', { name: TASK }).waitFor();

  step('a running run is stopped with its Stop button');
  const LONG = 'Long sleeper';
  await call('POST', '/api/tasks', {
    name: LONG, implementation: 'Cronwerk.Test.Misbehave', schedule: { every: '1h' },
    properties: { action: 'sleep', ms: '600000' },
  });
  await call('POST', `/api/tasks/${encodeURIComponent(LONG)}/run`);
  await page.goto(`${base}/#/tasks/${encodeURIComponent(LONG)}`);
  await page.getByRole('heading', { name: LONG }).waitFor();
  const running = page.locator('table.runs tbody tr').filter({ has: page.locator('.badge.running') });
  page.once('dialog', (d) => d.accept());
  await running.first().getByRole('button', { name: 'Stop' }).click();
  await page.locator('#toast').getByText(`Stopping the run of “${LONG}”`).waitFor();
  const stopped = page.locator('table.runs tbody tr').filter({ hasText: 'stopped by an API client' });
  await stopped.first().locator('.badge.cancelled').waitFor();
  await stopped.first().getByRole('button', { name: 'Stop' }).waitFor({ state: 'detached' });
  step('a run that ended without succeeding offers the command that replays it');
  await stopped.first().getByText('Replay against…').click();
  await stopped.first().locator('details.replay code')
    .getByText(/^cronwerk runs replay [0-9a-f-]{36} --component FILE$/).waitFor();
  await shot(page, '05b-run-stopped');

  step('the event log follows live');
  await page.getByRole('link', { name: 'Event log' }).click();
  await page.getByRole('heading', { name: 'Event log' }).waitFor();
  await page.locator('#filter-task').selectOption(TASK);
  // The filtered page's stream is open: what happens from now on arrives live.
  await page.locator(`table.events[data-following="${new URLSearchParams({ task: TASK })}"]`).waitFor();
  await page.locator('table.events tbody tr[data-event]').first().waitFor();
  const newest = async () => Number(await page.locator('table.events tbody tr[data-event]').first().getAttribute('data-event'));
  const seen = await newest();
  const run = await call('POST', `/api/tasks/${encodeURIComponent(TASK)}/run`);
  const fresh = page.locator('table.events tbody tr.fresh').filter({ hasText: run.run_id.slice(-8) });
  await fresh.first().waitFor();
  if (await newest() <= seen) throw new Error('no newer event arrived at the top of the log');
  await page.locator('#filter-level').selectOption('warning');
  await page.waitForURL(/level=warning/);
  // The filtered page replaces the unfiltered one (which has info events).
  await page.waitForFunction(() => {
    const rows = (level) => document.querySelectorAll(`table.events tbody tr.${level}`).length;
    return document.querySelector('#filter-level').value === 'warning' && rows('warning') > 0 && rows('info') === 0;
  });
  await shot(page, '06-events');

  step('the plugins page shows loaded and broken components');
  await page.getByRole('link', { name: 'Plugins' }).click();
  await page.getByRole('heading', { name: 'Plugins' }).waitFor();
  await page.locator('tr[data-file="hello.wasm"] .badge.succeeded').getByText('ok').waitFor();
  await page.locator('tr[data-file="broken.wasm"] .badge.failed').getByText('failed').waitFor();
  await page.locator('tr[data-file="broken.wasm"] .plugin-error').getByText('not a WebAssembly file').waitFor();
  await page.locator('tr[data-file="hello.wasm"] td.contract').getByText('0.2.0').waitFor();
  await page.getByRole('button', { name: 'Rescan now' }).click();
  await page.locator('#toast').getByText('Plugins folder rescanned').waitFor();
  await page.locator('tr[data-file="hello.wasm"] .badge.succeeded').getByText('ok').waitFor();
  await shot(page, '07-plugins');

  step('the farm page shows this instance and a broadcast delivered to it, live');
  await page.getByRole('link', { name: 'Farm' }).click();
  await page.getByRole('heading', { name: 'Farm' }).waitFor();
  await page.locator('table.instances tbody tr .badge.succeeded').getByText('live').first().waitFor();
  await page.locator('table.fleet tr[data-identifier="Acme.HelloScheduledTask"] td').nth(1).getByText('1.0.0').waitFor();
  const made = await call('POST', '/api/broadcasts', { identifier: 'Acme.HelloScheduledTask', target: 'all', text: 'from the browser test' });
  await page.locator(`tr[data-broadcast="${made.id}"] li .badge.succeeded`).first().waitFor();
  await shot(page, '08-farm');

  await context.close();
} catch (e) {
  failed = true;
  console.error(`browser: FAILED: ${e.stack || e}`);
} finally {
  await browser.close();
}

if (problems.length) {
  console.error(`browser: ${problems.length} problem(s) in the page:\n  ${problems.join('\n  ')}`);
  failed = true;
}
if (failed) process.exit(1);
step('all checks passed');
