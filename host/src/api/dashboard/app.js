// The cronwerk dashboard: one ES module, no dependencies, no build step.
// Pages are routed by URL fragment (#/, #/tasks/NAME, #/events, #/plugins, #/farm),
// read the JSON API and stay live through its Server-Sent Events streams
// (/api/changes for "something changed", /api/events/stream for the log).
// Data is only ever put into the page as text nodes, never as HTML.

const TOKEN_KEY = 'cronwerk-token';
const main = document.getElementById('main');

// ---------------------------------------------------------------- helpers

/** Creates an element: h('td', {class: 'x', onclick: f}, 'text', child). */
function h(tag, attrs, ...children) {
  const svg = ['svg', 'rect', 'line', 'text', 'title', 'g', 'polyline'].includes(tag);
  const el = svg ? document.createElementNS('http://www.w3.org/2000/svg', tag) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.setAttribute('class', v);
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else if (k in el && !svg) el[k] = v;
    else el.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function token() { return localStorage.getItem(TOKEN_KEY) || ''; }

function authHeaders() {
  const t = token();
  return t ? { Authorization: `Bearer ${t}` } : {};
}

/** Calls the API; resolves to {ok, status, data}. Never throws for HTTP errors. */
async function api(method, path, body) {
  const write = method !== 'GET';
  if (write && path !== '/api/preview' && !token()) {
    askToken('Changes need the API token.');
    return { ok: false, status: 401, data: { error: 'no API token' }, unsent: true };
  }
  const init = { method, headers: { ...authHeaders() } };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (e) {
    return { ok: false, status: 0, data: { error: `the server does not answer (${e.message})` } };
  }
  const text = await response.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = text; }
  if (response.status === 401) askToken(data && data.error ? data.error : 'The API token is missing or wrong.');
  return { ok: response.ok, status: response.status, data };
}

function toast(message, kind = 'info') {
  const t = document.getElementById('toast');
  t.textContent = message;
  t.className = `show ${kind}`;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { t.className = ''; }, 4000);
}

const pad = (n) => String(n).padStart(2, '0');

/** Local time; the date only when it is not today. */
function when(iso) {
  if (!iso) return '–';
  const d = new Date(iso);
  const now = new Date();
  const time = `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  if (d.toDateString() === now.toDateString()) return time;
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${time}`;
}

/** "in 5s", "3m ago". */
function relative(iso) {
  if (!iso) return '';
  const s = Math.round((new Date(iso) - Date.now()) / 1000);
  const a = Math.abs(s);
  const text = a < 60 ? `${a}s` : a < 3600 ? `${Math.floor(a / 60)}m ${a % 60}s`
    : a < 86400 ? `${Math.floor(a / 3600)}h ${Math.floor((a % 3600) / 60)}m` : `${Math.floor(a / 86400)}d`;
  if (a === 0) return 'now';
  return s > 0 ? `in ${text}` : `${text} ago`;
}

/** A time cell that keeps its relative part fresh. */
function timeCell(iso, tag = 'td') {
  if (!iso) return h(tag, { class: 'muted' }, '–');
  return h(tag, { class: 'time', title: new Date(iso).toString() }, when(iso), ' ',
    h('span', { class: 'rel muted', dataset: { at: iso } }, relative(iso)));
}

function refreshRelativeTimes() {
  for (const el of document.querySelectorAll('.rel[data-at]')) el.textContent = relative(el.dataset.at);
}
setInterval(refreshRelativeTimes, 1000);

function duration(us) {
  if (us === null || us === undefined) return '–';
  if (us < 1000) return `${us} µs`;
  if (us < 1e6) return `${(us / 1000).toFixed(us < 1e4 ? 2 : 1)} ms`;
  return `${(us / 1e6).toFixed(2)} s`;
}

function bytes(n) {
  if (n === null || n === undefined) return '–';
  const units = ['B', 'KiB', 'MiB', 'GiB'];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i += 1; }
  return `${v.toFixed(v < 10 && i > 0 ? 1 : 0)} ${units[i]}`;
}

function count(n) { return n === null || n === undefined ? '–' : Number(n).toLocaleString('en'); }

function outcomeBadge(state, reason) {
  if (!state) return h('span', { class: 'muted' }, '–');
  return h('span', { class: `badge ${state}` }, reason ? `${state} (${reason})` : state);
}

// ------------------------------------------------------- live (SSE) streams

const live = document.getElementById('live');
let streamsOpen = 0;
function setLive() {
  live.textContent = streamsOpen > 0 ? 'live' : 'reconnecting…';
  live.className = streamsOpen > 0 ? 'live on' : 'live';
}

/**
 * Follows a text/event-stream with fetch (so the token can go in a header,
 * which EventSource cannot send). Calls onEvent({event, id, data}); retries
 * with Last-Event-ID until the returned stop() is called.
 */
function follow(path, onEvent, onOpen) {
  const controller = new AbortController();
  let lastId = null;
  let stopped = false;
  (async () => {
    while (!stopped) {
      let open = false;
      try {
        const headers = { Accept: 'text/event-stream', ...authHeaders() };
        if (lastId !== null) headers['Last-Event-ID'] = lastId;
        const response = await fetch(path, { headers, signal: controller.signal });
        if (!response.ok) throw new Error(`HTTP ${response.status}`);
        open = true;
        streamsOpen += 1;
        setLive();
        if (onOpen) onOpen();
        const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
        let buffer = '';
        let message = { event: 'message', id: null, data: [] };
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffer += value;
          let nl;
          while ((nl = buffer.indexOf('\n')) >= 0) {
            const line = buffer.slice(0, nl).replace(/\r$/, '');
            buffer = buffer.slice(nl + 1);
            if (line === '') {
              if (message.data.length) {
                if (message.id !== null) lastId = message.id;
                onEvent({ event: message.event, id: message.id, data: message.data.join('\n') });
              }
              message = { event: 'message', id: null, data: [] };
            } else if (!line.startsWith(':')) {
              const colon = line.indexOf(':');
              const field = colon < 0 ? line : line.slice(0, colon);
              const val = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
              if (field === 'data') message.data.push(val);
              else if (field === 'event') message.event = val;
              else if (field === 'id') message.id = val;
            }
          }
        }
      } catch (e) {
        if (stopped || e.name === 'AbortError') return;
      } finally {
        if (open) { streamsOpen -= 1; setLive(); }
      }
      if (!stopped) await new Promise((r) => setTimeout(r, 2000));
    }
  })();
  return () => { stopped = true; controller.abort(); };
}

/** Calls refresh() when the store changes, at most every 400 ms. */
function onChanges(refresh) {
  let pending = false;
  let last = 0;
  return follow('/api/changes', () => {
    if (pending) return;
    const wait = Math.max(0, 400 - (Date.now() - last));
    pending = true;
    setTimeout(async () => {
      last = Date.now();
      pending = false;
      await refresh();
    }, wait);
  });
}

// ---------------------------------------------------------------- routing

let cleanup = [];
let routeGen = 0;
/** Runs `f` when the page that started at `gen` is left (now, if it was). */
function onLeave(f, gen) {
  if (gen !== routeGen) f(); else cleanup.push(f);
}

function route() {
  for (const f of cleanup) f();
  cleanup = [];
  routeGen += 1;
  const hash = location.hash.replace(/^#/, '') || '/';
  const [path, query] = hash.split('?');
  const params = new URLSearchParams(query || '');
  let page = 'tasks';
  if (path.startsWith('/tasks/')) {
    page = 'tasks';
    taskPage(decodeURIComponent(path.slice('/tasks/'.length)));
  } else if (path === '/events') {
    page = 'events';
    eventsPage(params);
  } else if (path === '/plugins') {
    page = 'plugins';
    pluginsPage();
  } else if (path === '/farm') {
    page = 'farm';
    farmPage();
  } else if (path === '/audit') {
    page = 'audit';
    auditPage(params);
  } else {
    tasksPage();
  }
  for (const a of document.querySelectorAll('nav a')) {
    a.classList.toggle('current', a.dataset.page === page);
    if (a.dataset.page === page) a.setAttribute('aria-current', 'page'); else a.removeAttribute('aria-current');
  }
}

function render(...children) {
  main.replaceChildren(...children);
}

function errorBox(result) {
  const why = result.data && result.data.error ? result.data.error : `HTTP ${result.status}`;
  return h('p', { class: 'problem' }, why);
}

// ----------------------------------------------------------- tasks overview

let plugins = [];
async function loadPlugins() {
  const r = await api('GET', '/api/plugins');
  if (r.ok) plugins = r.data;
  return plugins;
}

function served(identifier) {
  return plugins.some((p) => p.identifier === identifier && p.serving);
}

async function runNow(name) {
  const r = await api('POST', `/api/tasks/${encodeURIComponent(name)}/run`);
  if (r.unsent) return;
  if (r.ok) toast(r.data.state === 'running' ? `“${name}” is running` : r.data.message, r.data.state === 'running' ? 'ok' : 'warn');
  else toast(r.data && r.data.error ? r.data.error : `Run now failed (HTTP ${r.status})`, 'bad');
}

async function stopRun(run) {
  if (!confirm(`Stop this run of “${run.task_name}”? It is asked to stop, gets its grace period, then is stopped; it is recorded cancelled.`)) return;
  const r = await api('POST', `/api/runs/${encodeURIComponent(run.id)}/stop`);
  if (r.unsent) return;
  if (r.ok) toast(r.data.status === 'stopping' ? `Stopping the run of “${run.task_name}”` : `The queued run of “${run.task_name}” is cancelled`, 'ok');
  else toast(r.data && r.data.error ? r.data.error : `Stop failed (HTTP ${r.status})`, 'bad');
}

async function setEnabled(name, enabled) {
  const r = await api('POST', `/api/tasks/${encodeURIComponent(name)}/${enabled ? 'enable' : 'disable'}`);
  if (r.ok) toast(`“${name}” ${enabled ? 'enabled' : 'disabled'}`, 'ok');
  else if (!r.unsent) toast(r.data && r.data.error ? r.data.error : `HTTP ${r.status}`, 'bad');
  return r.ok;
}

function lastResult(t) {
  if (!t.last_outcome) return h('td', { class: 'muted' }, 'not run yet');
  return h('td', { class: 'result' }, outcomeBadge(t.last_outcome),
    t.last_message ? h('span', { class: 'message', title: t.last_message }, ` ${t.last_message}`) : null);
}

function taskRow(t) {
  const toggle = h('input', {
    type: 'checkbox', class: 'switch', checked: t.enabled, 'aria-label': `Enabled: ${t.name}`,
    onchange: async (e) => {
      const wanted = e.target.checked;
      if (!(await setEnabled(t.name, wanted))) e.target.checked = !wanted;
    },
  });
  const missing = !served(t.implementation);
  return h('tr', { dataset: { task: t.name } },
    h('td', {}, h('a', { href: `#/tasks/${encodeURIComponent(t.name)}` }, t.name),
      t.running_run_id ? h('span', { class: 'badge running small' }, 'running') : null),
    h('td', {}, h('code', {}, t.implementation),
      missing ? h('span', { class: 'badge failed small', title: 'No loaded component implements this identifier: its runs fail until one is added to the plugins folder' }, 'missing') : null),
    h('td', { class: 'center' }, toggle),
    h('td', {}, t.schedule_text),
    timeCell(t.last_run_at),
    lastResult(t),
    t.enabled ? timeCell(t.next_run_at) : h('td', { class: 'muted' }, 'disabled'),
    h('td', { class: 'num' }, count(t.run_count)),
    h('td', { class: 'num' }, count(t.skipped_count)),
    h('td', { class: `num ${t.failed_count ? 'bad' : ''}` }, count(t.failed_count)),
    h('td', { class: 'actions' },
      h('button', { type: 'button', class: 'small', onclick: () => runNow(t.name) }, 'Run now'),
      h('button', { type: 'button', class: 'small secondary', onclick: () => openTaskForm(t) }, 'Edit')));
}

async function tasksPage() {
  const gen = routeGen;
  document.title = 'Scheduled tasks · cronwerk';
  const table = h('tbody');
  const body = h('section', {},
    h('div', { class: 'heading' },
      h('h1', {}, 'Scheduled tasks'),
      h('button', { type: 'button', onclick: () => openTaskForm(null) }, 'New task')),
    h('div', { class: 'scroll' },
      h('table', { class: 'tasks' },
        h('thead', {}, h('tr', {},
          ['Name', 'Implementation', 'Enabled', 'Schedule', 'Last run', 'Last result', 'Next run', 'Runs', 'Skipped', 'Failed', '']
            .map((c, i) => h('th', { class: i >= 7 && i <= 9 ? 'num' : i === 2 ? 'center' : '' }, c)))),
        table)),
    h('p', { class: 'muted', id: 'tasks-note' }));
  render(body);
  const refresh = async () => {
    await loadPlugins();
    const r = await api('GET', '/api/tasks');
    if (!r.ok) { table.replaceChildren(h('tr', {}, h('td', { colSpan: 11 }, errorBox(r)))); return; }
    if (r.data.length === 0) {
      table.replaceChildren(h('tr', {}, h('td', { colSpan: 11, class: 'empty' },
        'No task configurations yet. ', h('button', { type: 'button', class: 'link', onclick: () => openTaskForm(null) }, 'Create the first one'),
        ` — it runs a component from the plugins folder (${plugins.filter((p) => p.serving).map((p) => p.identifier).join(', ') || 'none loaded yet'}) on a schedule.`)));
    } else {
      table.replaceChildren(...r.data.map(taskRow));
    }
  };
  await refresh();
  onLeave(onChanges(refresh), gen);
}

// ------------------------------------------------------------- task detail

function definition(rows) {
  return h('dl', { class: 'facts' }, rows.filter(Boolean).flatMap(([k, v]) => [h('dt', {}, k), h('dd', {}, v)]));
}

/** Bars of run duration over time, oldest left; colour by outcome. */
function durationChart(runs) {
  const done = runs.filter((r) => r.duration_us !== null && r.started_at).reverse();
  if (done.length === 0) return h('p', { class: 'muted' }, 'No finished runs yet.');
  const W = 640;
  const H = 140;
  const m = { l: 56, r: 8, t: 10, b: 22 };
  const max = Math.max(...done.map((r) => r.duration_us), 1);
  // Bars keep a readable width; few runs stay at the left.
  const bw = Math.min((W - m.l - m.r) / done.length, 24);
  const y = (v) => m.t + (H - m.t - m.b) * (1 - v / max);
  const svg = h('svg', { viewBox: `0 0 ${W} ${H}`, class: 'chart', role: 'img', 'aria-label': `Duration of the last ${done.length} runs` },
    h('line', { x1: m.l, x2: W - m.r, y1: y(0), y2: y(0), class: 'axis' }),
    h('line', { x1: m.l, x2: W - m.r, y1: y(max), y2: y(max), class: 'grid' }),
    h('text', { x: m.l - 6, y: y(max) + 4, class: 'label end' }, duration(max)),
    h('text', { x: m.l - 6, y: y(0) + 4, class: 'label end' }, '0'),
    h('text', { x: m.l, y: H - 6, class: 'label' }, when(done[0].started_at)),
    bw * done.length > 150 ? h('text', { x: m.l + bw * done.length, y: H - 6, class: 'label end' }, when(done[done.length - 1].started_at)) : null,
    done.map((r, i) => {
      const top = y(r.duration_us);
      return h('rect', { x: m.l + i * bw + bw * 0.15, width: Math.max(bw * 0.7, 1), y: top, height: Math.max(y(0) - top, 1), class: `bar ${r.state}` },
        h('title', {}, `${when(r.started_at)} · ${r.state} · ${duration(r.duration_us)}`));
    }));
  return svg;
}

function runsTable(runs) {
  if (runs.length === 0) return h('p', { class: 'muted' }, 'No runs yet.');
  return h('div', { class: 'scroll' }, h('table', { class: 'runs' },
    h('thead', {}, h('tr', {}, ['Started', 'Trigger', 'Outcome', 'Duration', 'Fuel', 'Peak memory', 'Version', 'Message', 'Events']
      .map((c, i) => h('th', { class: i >= 3 && i <= 5 ? 'num' : '' }, c)))),
    h('tbody', {}, runs.map((r) => h('tr', { dataset: { run: r.id } },
      timeCell(r.started_at || r.queued_at || r.scheduled_for),
      h('td', {}, r.trigger, r.attempt > 1 ? ` #${r.attempt}` : ''),
      h('td', {}, outcomeBadge(r.state, r.reason),
        r.state === 'running' || r.state === 'queued'
          ? h('button', { type: 'button', class: 'small danger', onclick: () => stopRun(r) }, 'Stop')
          : null),
      h('td', { class: 'num' }, duration(r.duration_us)),
      h('td', { class: 'num' }, count(r.fuel)),
      h('td', { class: 'num' }, bytes(r.peak_memory_bytes)),
      h('td', {}, r.component_version || '–',
        r.component_sha256 ? h('span', { class: 'muted mono', title: r.component_sha256 }, ` ${r.component_sha256.slice(0, 8)}`) : null),
      h('td', { class: 'message', title: r.message }, r.message),
      h('td', {}, h('a', { href: `#/events?run=${encodeURIComponent(r.id)}` }, 'events'),
        replayHint(r)))))));
}

// For a run that ended without succeeding: the command that runs what it
// was given again, on the operator's machine, against a fixed component.
function replayHint(r) {
  if (!['failed', 'stopped', 'cancelled'].includes(r.state)) return null;
  return h('details', { class: 'replay' },
    h('summary', { title: 'Run this run again, with what it was given, against a fixed component' }, 'Replay against…'),
    h('code', { class: 'mono' }, `cronwerk runs replay ${r.id} --component FILE`),
    h('p', { class: 'muted small' }, 'Without --component it replays the component that ran. Clock, randomness, files and network are not reproduced.'));
}

async function taskPage(name) {
  const gen = routeGen;
  document.title = `${name} · cronwerk`;
  const holder = h('section', {}, h('p', { class: 'muted' }, 'Loading…'));
  render(holder);
  const refresh = async () => {
    await loadPlugins();
    const [tr, rr, br] = await Promise.all([
      api('GET', `/api/tasks/${encodeURIComponent(name)}`),
      api('GET', `/api/runs?task=${encodeURIComponent(name)}&limit=50`),
      api('GET', `/api/tasks/${encodeURIComponent(name)}/backfills`),
    ]);
    const backfills = br.ok ? br.data : [];
    if (!tr.ok) {
      holder.replaceChildren(h('h1', {}, name), errorBox(tr), h('p', {}, h('a', { href: '#/' }, '← All scheduled tasks')));
      return;
    }
    const t = tr.data;
    const runs = rr.ok ? rr.data : [];
    const plugin = plugins.find((p) => p.identifier === t.implementation && p.serving);
    holder.replaceChildren(
      h('p', { class: 'crumbs' }, h('a', { href: '#/' }, 'Scheduled tasks'), ' / '),
      h('div', { class: 'heading' },
        h('h1', {}, t.name, ' ', h('span', { class: `badge ${t.enabled ? 'succeeded' : 'skipped'}` }, t.enabled ? 'enabled' : 'disabled'),
          t.running_run_id ? h('span', { class: 'badge running' }, 'running') : null),
        h('div', { class: 'buttons' },
          h('button', { type: 'button', onclick: () => runNow(t.name) }, 'Run now'),
          h('button', {
            type: 'button', class: 'secondary',
            onclick: async () => {
              if (!t.enabled) { await setEnabled(t.name, true); return; }
              const note = prompt(`Why pause “${t.name}”? (optional; shown with it until it is enabled)`);
              if (note === null) return;
              const r = await api('POST', `/api/tasks/${encodeURIComponent(t.name)}/disable`, { note });
              if (r.ok) toast(`“${t.name}” disabled`, 'ok'); else if (!r.unsent) toast(r.data.error, 'bad');
            },
          }, t.enabled ? 'Disable' : 'Enable'),
          h('a', { class: 'button secondary', href: `#/audit?task=${encodeURIComponent(t.name)}` }, 'History of changes'),
          h('button', { type: 'button', class: 'secondary', onclick: () => openTaskForm(t) }, 'Edit'),
          h('button', { type: 'button', class: 'secondary', onclick: () => openBackfill(t.name) }, 'Backfill…'),
          h('button', {
            type: 'button', class: 'danger',
            onclick: async () => {
              if (!confirm(`Delete “${t.name}” and its state? Its run history goes too.`)) return;
              const r = await api('DELETE', `/api/tasks/${encodeURIComponent(t.name)}`);
              if (r.ok) { toast(`“${t.name}” deleted`, 'ok'); location.hash = '#/'; } else if (!r.unsent) toast(r.data.error, 'bad');
            },
          }, 'Delete'))),
      h('div', { class: 'cards' },
        h('div', { class: 'card' }, h('h2', {}, 'Configuration'), definition([
          ['Implementation', h('span', {}, h('code', {}, t.implementation),
            plugin ? h('span', { class: 'muted' }, ` ${plugin.display_name || ''} ${plugin.version || ''}`)
              : h('span', { class: 'badge failed small' }, 'no component loaded'))],
          ['Schedule', t.schedule_text],
          ['Next runs', t.upcoming.length ? h('ol', { class: 'times' }, t.upcoming.map((u) => h('li', {}, timeCell(u, 'span')))) : h('span', { class: 'muted' }, t.enabled ? 'none (a one-off that ran)' : 'none while disabled')],
          ['Last run', t.last_run_at ? timeCell(t.last_run_at, 'span') : h('span', { class: 'muted' }, 'not yet')],
          ['Last result', t.last_outcome ? h('span', {}, outcomeBadge(t.last_outcome), ' ', t.last_message || '') : h('span', { class: 'muted' }, '–')],
          ['Counters', `${count(t.run_count)} runs · ${count(t.skipped_count)} skipped · ${count(t.failed_count)} failed`],
          ['After downtime', { skip: 'skip missed runs', once: 'run once', all: `run every missed slot within ${t.catch_up}` }[t.misfire] || t.misfire],
          ['While a run goes on', {
            skip: 'skip the slot',
            allow: `run beside it, up to ${t.max_concurrent} at once`,
            replace: 'stop it, then run the slot',
            queue: 'queue one slot until it ends',
          }[t.on_overlap] || t.on_overlap],
          t.running_count > 1 ? ['Running now', `${t.running_count} runs`] : null,
          (!t.enabled && t.paused_by) ? ['Paused', h('span', {}, `by ${t.paused_by} `, timeCell(t.paused_at, 'span'),
            t.pause_note ? h('span', {}, ': ', h('q', {}, t.pause_note)) : null)] : null,
          (t.on_failure.length || t.on_success.length) ? ['Follow-ups', h('span', {},
            ...[['on failure', t.on_failure], ['on success', t.on_success]]
              .filter(([, list]) => list.length)
              .flatMap(([when, list], i) => [i ? ' · ' : '', `${when}: `,
                ...list.flatMap((n, j) => [j ? ', ' : '', h('a', { href: `#/tasks/${encodeURIComponent(n)}` }, n)])]))] : null,
          t.on_start ? ['On start', "runs once on every instance's start"] : null,
          t.jitter ? ['Jitter', `${t.jitter} (its slots: +${t.jitter_offset})`] : null,
          (t.start || t.until) ? ['Active', h('span', {},
            t.start ? timeCell(t.start, 'span') : 'always', ' to ',
            t.until ? timeCell(t.until, 'span') : 'no end')] : null,
          ['Runs on', t.roles.length
            ? h('span', {}, 'instances with role ', ...t.roles.flatMap((r, i) => [i ? ' and ' : '', h('code', {}, r)]))
            : h('span', { class: 'muted' }, 'any instance')],
          ['Retries', t.retries ? `${t.retries}, first after ${t.retry_backoff}, doubling` : 'none'],
          ['History kept', (t.keep_runs === null && t.keep_failed === null)
            ? h('span', { class: 'muted' }, "the instance's --keep-runs")
            : `${t.keep_runs ?? "the instance's --keep-runs"} runs, ${t.keep_failed ?? t.keep_runs ?? "the instance's --keep-runs"} failed apart`],
          t.retry_at ? ['Retry', `attempt ${t.retry_attempt} at ${when(t.retry_at)}`] : null,
          ['Properties', Object.keys(t.properties).length
            ? h('ul', { class: 'plain' }, Object.entries(t.properties).map(([k, v]) => h('li', {}, h('code', {}, k), ' = ', v)))
            : h('span', { class: 'muted' }, 'none')],
        ])),
        h('div', { class: 'card' }, h('h2', {}, 'Grants and limits'), definition([
          ['Time limit', t.timeout],
          ['Memory limit', bytes(t.memory)],
          ['Fuel limit', t.fuel ? count(t.fuel) : 'unlimited'],
          ['Directories', t.grants.length
            ? h('ul', { class: 'plain' }, t.grants.map((g) => h('li', {}, h('code', {}, g.host_path), ' as ', h('code', {}, g.guest_path || g.host_path), g.read_only ? ' (read-only)' : '')))
            : h('span', { class: 'muted' }, 'none: no files')],
          ['HTTP requests to', t.allow_http.length
            ? h('ul', { class: 'plain' }, t.allow_http.map((host) => h('li', {}, h('code', {}, host))))
            : h('span', { class: 'muted' }, 'none: no network')],
          ['Environment', h('span', { class: 'muted' }, 'none')],
          ['Capabilities asked for', plugin ? plugin.capabilities.join(', ') : '–'],
        ]))),
      backfills.length ? h('div', { class: 'card' }, h('h2', {}, 'Backfills'), backfillsTable(backfills)) : null,
      h('div', { class: 'card' }, h('h2', {}, 'Duration of recent runs'), durationChart(runs)),
      h('div', { class: 'card' }, h('h2', {}, `Last ${runs.length} runs`), runsTable(runs)),
    );
  };
  await refresh();
  onLeave(onChanges(refresh), gen);
}

function backfillsTable(list) {
  return h('table', { class: 'backfills' },
    h('thead', {}, h('tr', {}, ...['Window', 'State', 'Progress', 'Runs', 'Asked by', ''].map((c) => h('th', {}, c)))),
    h('tbody', {}, list.map((b) => h('tr', { 'data-backfill': b.id },
      h('td', {}, when(b.from), ' → ', when(b.to)),
      h('td', {}, h('span', { class: `badge ${{ active: 'running', done: 'succeeded', cancelled: 'cancelled' }[b.state] || ''}` }, b.state)),
      h('td', {}, h('progress', { max: String(b.total), value: String(b.done) }), ` ${b.done}/${b.total}`),
      h('td', {}, [`${b.succeeded} succeeded`, b.failed ? `${b.failed} failed` : '', b.running ? `${b.running} running` : '',
        b.already_ran ? `${b.already_ran} had run` : '', b.cancelled ? `${b.cancelled} cancelled` : ''].filter((x) => x).join(', ')),
      h('td', {}, b.requested_by),
      h('td', {}, b.state === 'active'
        ? h('button', {
          type: 'button', class: 'small danger',
          onclick: async () => {
            if (!confirm('Cancel this backfill? Slots not started are not run; runs going finish.')) return;
            const r = await api('POST', `/api/backfills/${encodeURIComponent(b.id)}/cancel`);
            if (r.ok) toast('Backfill cancelled', 'ok'); else if (!r.unsent) toast(r.data.error, 'bad');
          },
        }, 'Cancel')
        : '')))));
}

const backfillDialog = document.getElementById('backfill-dialog');
const backfillForm = document.getElementById('backfill-form');
let backfillTask = null;

function openBackfill(name) {
  backfillTask = name;
  backfillForm.reset();
  for (const el of backfillForm.querySelectorAll('.error')) el.textContent = '';
  document.getElementById('backfill-title').textContent = `Backfill “${name}”`;
  backfillDialog.showModal();
  backfillForm.elements.from.focus();
}

document.getElementById('backfill-cancel').addEventListener('click', () => backfillDialog.close());
backfillForm.addEventListener('submit', async (e) => {
  e.preventDefault();
  for (const el of backfillForm.querySelectorAll('.error')) el.textContent = '';
  const f = backfillForm.elements;
  const body = {
    from: toIso(f.from.value) || '',
    to: toIso(f.to.value) || '',
    concurrency: f.concurrency.value ? Number(f.concurrency.value) : undefined,
  };
  // What the page can tell at once; the API checks everything again.
  const problem = !body.from ? ['from', 'say where the window starts']
    : !body.to ? ['to', 'say where the window ends']
      : new Date(body.to) > new Date() ? ['to', 'is in the future: a backfill runs past slots (the schedule runs the coming ones)']
        : new Date(body.to) <= new Date(body.from) ? ['to', 'must be after From']
          : null;
  if (problem) {
    backfillForm.querySelector(`[data-error-for="${problem[0]}"]`).textContent = problem[1];
    return;
  }
  const r = await api('POST', `/api/tasks/${encodeURIComponent(backfillTask)}/backfills`, body);
  if (r.ok) {
    backfillDialog.close();
    toast(`Backfill of ${r.data.total} slot(s) started`, 'ok');
  } else if (!r.unsent) {
    const slot = r.data.field && backfillForm.querySelector(`[data-error-for="${r.data.field}"]`);
    (slot || document.getElementById('backfill-error')).textContent = r.data.error;
  }
});

// --------------------------------------------------------------- event log

const LEVELS = ['trace', 'debug', 'info', 'warning', 'error'];

function eventRow(e, fresh) {
  return h('tr', { class: `${e.level}${fresh ? ' fresh' : ''}`, dataset: { event: e.id } },
    h('td', { class: 'nowrap', title: new Date(e.at).toString() }, when(e.at), h('span', { class: 'muted' }, `.${String(new Date(e.at).getMilliseconds()).padStart(3, '0')}`)),
    h('td', {}, h('span', { class: `level ${e.level}` }, e.level)),
    h('td', {}, e.task_name ? h('a', { href: `#/tasks/${encodeURIComponent(e.task_name)}` }, e.task_name) : h('span', { class: 'muted' }, 'host')),
    h('td', { class: 'muted' }, e.source),
    h('td', {}, e.code ? h('code', {}, e.code) : ''),
    h('td', { class: 'message' }, e.message),
    h('td', {}, e.run_id ? h('a', { class: 'mono', href: `#/events?run=${encodeURIComponent(e.run_id)}`, title: e.run_id }, e.run_id.slice(-8)) : ''));
}

async function eventsPage(params) {
  const gen = routeGen;
  document.title = 'Event log · cronwerk';
  const tasks = await api('GET', '/api/tasks');
  if (gen !== routeGen) return;
  const filter = { task: params.get('task') || '', level: params.get('level') || '', run: params.get('run') || '' };
  const go = (change) => {
    const next = { ...filter, ...change };
    const q = new URLSearchParams(Object.entries(next).filter(([, v]) => v));
    location.hash = `#/events${q.toString() ? `?${q}` : ''}`;
  };
  const taskSelect = h('select', { id: 'filter-task', onchange: (e) => go({ task: e.target.value }) },
    h('option', { value: '' }, 'All tasks and the host'),
    (tasks.ok ? tasks.data : []).map((t) => h('option', { value: t.name, selected: t.name === filter.task }, t.name)));
  const levelSelect = h('select', { id: 'filter-level', onchange: (e) => go({ level: e.target.value }) },
    h('option', { value: '' }, 'All levels'),
    LEVELS.map((l) => h('option', { value: l, selected: l === filter.level }, `${l} and above`)));
  const runInput = h('input', { id: 'filter-run', value: filter.run, placeholder: 'run id', size: 38, onchange: (e) => go({ run: e.target.value.trim() }) });
  const rows = h('tbody');
  const counter = h('span', { class: 'muted', id: 'event-count' });
  render(h('section', {},
    h('div', { class: 'heading' }, h('h1', {}, 'Event log'), counter),
    h('div', { class: 'filters' },
      h('label', { for: 'filter-level' }, 'Level'), levelSelect,
      h('label', { for: 'filter-task' }, 'Task'), taskSelect,
      h('label', { for: 'filter-run' }, 'Run'), runInput,
      (filter.task || filter.level || filter.run) ? h('button', { type: 'button', class: 'link', onclick: () => go({ task: '', level: '', run: '' }) }, 'Clear filters') : null),
    h('div', { class: 'scroll' }, h('table', { class: 'events' },
      h('thead', {}, h('tr', {}, ['Time', 'Level', 'Task', 'Source', 'Code', 'Message', 'Run'].map((c) => h('th', {}, c)))),
      rows))));
  const q = new URLSearchParams(Object.entries(filter).filter(([, v]) => v));
  const first = await api('GET', `/api/events?${q}&limit=200`);
  if (gen !== routeGen) return;
  if (!first.ok) { rows.replaceChildren(h('tr', {}, h('td', { colSpan: 7 }, errorBox(first)))); return; }
  let shown = 0;
  const empty = h('tr', { class: 'empty-row' }, h('td', { colSpan: 7, class: 'empty' }, 'No events yet. They appear here as runs finish.'));
  const add = (e, fresh) => {
    if (empty.isConnected) empty.remove();
    rows.prepend(eventRow(e, fresh));
    shown += 1;
    while (rows.children.length > 500) rows.lastChild.remove();
    counter.textContent = `${shown} event${shown === 1 ? '' : 's'} · newest first · following live`;
  };
  if (first.data.length === 0) rows.append(empty);
  for (const e of first.data) add(e, false);
  if (shown === 0) counter.textContent = 'following live';
  const last = first.data.length ? first.data[first.data.length - 1].id : 0;
  q.set('after', last);
  const table = rows.closest('table');
  onLeave(follow(`/api/events/stream?${q}`, (m) => {
    try { add(JSON.parse(m.data), true); } catch { /* a keep-alive or foreign line */ }
  }, () => {
    // Which filter this table follows, once its stream is open.
    table.dataset.following = new URLSearchParams(Object.entries(filter).filter(([, v]) => v)).toString() || 'all';
  }), gen);
}

// ----------------------------------------------------------------- plugins

/** A value of the audit trail, short. */
function auditValue(v) {
  if (v === null || v === undefined) return '–';
  const text = typeof v === 'string' ? v : JSON.stringify(v);
  return text.length > 120 ? `${text.slice(0, 119)}…` : text;
}

async function auditPage(params) {
  const gen = routeGen;
  document.title = 'Audit · cronwerk';
  const task = params.get('task');
  const holder = h('div', {});
  render(h('section', {},
    h('div', { class: 'heading' }, h('h1', {}, task ? `Audit of “${task}”` : 'Audit')),
    h('p', { class: 'muted' }, 'Who changed which configuration, setting or API token, and the components swapped in the plugins folders; newest first.'),
    holder));
  const refresh = async () => {
    const r = await api('GET', `/api/audit?limit=200${task ? `&task=${encodeURIComponent(task)}` : ''}`);
    if (!r.ok) { holder.replaceChildren(errorBox(r)); return; }
    if (r.data.length === 0) { holder.replaceChildren(h('p', { class: 'empty' }, 'No changes recorded yet.')); return; }
    holder.replaceChildren(h('div', { class: 'scroll' }, h('table', { class: 'audit' },
      h('thead', {}, h('tr', {}, ['When', 'Who', 'What', 'Action', 'Changes'].map((c) => h('th', {}, c)))),
      h('tbody', {}, r.data.map((e) => h('tr', { 'data-audit': String(e.id) },
        timeCell(e.at),
        h('td', {}, e.actor),
        h('td', {}, `${e.kind} `, e.kind === 'configuration'
          ? h('a', { href: `#/tasks/${encodeURIComponent(e.subject)}` }, e.subject) : h('code', {}, e.subject)),
        h('td', {}, e.action),
        h('td', {}, e.changes.length ? h('ul', { class: 'plain' }, e.changes.map((c) => h('li', {},
          h('code', {}, c.field), ': ', auditValue(c.before), ' → ', auditValue(c.after)))) : h('span', { class: 'muted' }, '–'))))))));
  };
  await refresh();
  onLeave(onChanges(refresh), gen);
}

// A file's rows: one for what it serves, and, after an update that failed
// while the previous version serves on, one more for what failed, each
// with its own sha256.
function pluginRows(p) {
  const none = () => h('span', { class: 'muted' }, '–');
  const identity = p.identifier ? h('span', {}, h('code', {}, p.identifier), p.display_name ? h('div', { class: 'muted' }, p.display_name) : null) : none();
  const capabilities = p.capabilities.length ? p.capabilities.map((c) => h('span', { class: 'chip' }, c)) : none();
  const sha = (s) => h('td', { class: 'mono', title: s }, s.slice(0, 12));
  if (p.serving_sha256) {
    return [
      h('tr', { dataset: { file: p.file, row: 'serving' } },
        h('td', {}, h('code', {}, p.file)), h('td', {}, identity), h('td', {}, p.version || '–'),
        h('td', { class: 'contract' }, p.contract || '–'),
        h('td', { class: 'status' }, h('span', { class: 'badge succeeded' }, 'serving'),
          h('span', { class: 'muted' }, ' the version before the failed update')),
        h('td', {}, capabilities), sha(p.serving_sha256), h('td', {}, none())),
      h('tr', { dataset: { file: p.file, row: 'failed' } },
        h('td', {}, h('code', {}, p.file)), h('td', {}, none()), h('td', {}, none()), h('td', {}, none()),
        h('td', { class: 'status' }, h('span', { class: 'badge failed' }, 'failed'),
          p.error ? h('div', { class: 'plugin-error' }, p.error) : null),
        h('td', {}, none()), sha(p.sha256), timeCell(p.loaded_at)),
    ];
  }
  return [h('tr', { dataset: { file: p.file } },
    h('td', {}, h('code', {}, p.file)), h('td', {}, identity), h('td', {}, p.version || '–'),
    h('td', { class: 'contract' }, p.contract || '–'),
    h('td', { class: 'status' }, h('span', { class: `badge ${p.status === 'ok' ? 'succeeded' : p.status}` }, p.status),
      p.status === 'ok' && !p.serving ? h('span', { class: 'muted' }, ' not serving') : null,
      p.error ? h('div', { class: 'plugin-error' }, p.error) : null),
    h('td', {}, capabilities), sha(p.sha256), timeCell(p.loaded_at))];
}

async function pluginsPage() {
  const gen = routeGen;
  document.title = 'Plugins · cronwerk';
  const holder = h('div', {});
  // The folder as an answer (a read, or a rescan) lists it.
  const show = (r) => {
    if (!r.ok) { holder.replaceChildren(errorBox(r)); return; }
    if (r.data.length === 0) { holder.replaceChildren(h('p', { class: 'empty' }, 'The plugins folder is empty.')); return; }
    holder.replaceChildren(h('div', { class: 'scroll' }, h('table', { class: 'plugins' },
      h('thead', {}, h('tr', {}, ['File', 'Identifier', 'Version', 'Contract', 'Status', 'Capabilities asked for', 'sha256', 'Loaded'].map((c) => h('th', {}, c)))),
      h('tbody', {}, r.data.flatMap(pluginRows)))));
  };
  const refresh = async () => show(await api('GET', '/api/plugins'));
  // What SIGHUP and `cronwerk plugins reload` do: look at the folder now.
  const rescan = async () => {
    const r = await api('POST', '/api/plugins/reload');
    if (r.ok) { show(r); toast('Plugins folder rescanned', 'ok'); }
    else if (!r.unsent) toast(r.data && r.data.error ? r.data.error : `Rescan failed (HTTP ${r.status})`, 'bad');
  };
  render(h('section', {},
    h('div', { class: 'heading' }, h('h1', {}, 'Plugins'),
      h('button', { type: 'button', class: 'small secondary', onclick: rescan }, 'Rescan now')),
    h('p', { class: 'muted' }, 'The components in this instance\'s plugins folder. Drop a .wasm file in to add or update one; a file that fails to load never replaces a working version.'),
    holder));
  await refresh();
  onLeave(onChanges(refresh), gen);
}

// -------------------------------------------------------------------- farm

async function farmPage() {
  const gen = routeGen;
  document.title = 'Farm · cronwerk';
  const instances = h('div', {});
  const fleet = h('div', {});
  const broadcasts = h('div', {});
  render(h('section', {},
    h('div', { class: 'heading' }, h('h1', {}, 'Farm')),
    h('p', { class: 'muted' }, 'The instances sharing this store, and broadcasts: a task run once on every live instance (cronwerk farm broadcast, POST /api/broadcasts, or a task\'s farm.broadcast).'),
    h('h2', {}, 'Instances'), instances,
    h('h2', {}, 'Components on each instance'), fleet,
    h('h2', {}, 'Broadcasts'), broadcasts));
  const refresh = async () => {
    const [i, b, f] = await Promise.all([api('GET', '/api/instances'), api('GET', '/api/broadcasts?limit=50'), api('GET', '/api/fleet')]);
    if (!f.ok) fleet.replaceChildren(errorBox(f));
    else if (f.data.identifiers.length === 0) fleet.replaceChildren(h('p', { class: 'empty' }, 'No live instance serves a component.'));
    else fleet.replaceChildren(h('div', { class: 'scroll' }, h('table', { class: 'fleet' },
      h('thead', {}, h('tr', {}, h('th', {}, 'Identifier'), ...f.data.instances.map((n) => h('th', {}, n)), h('th', {}, ''))),
      h('tbody', {}, f.data.identifiers.map((row) => h('tr', { dataset: { identifier: row.identifier } },
        h('td', {}, h('code', {}, row.identifier)),
        ...row.served.map((c) => h('td', {}, c ? h('span', { title: c.sha256 }, c.version, h('span', { class: 'muted mono' }, ` ${c.sha256.slice(0, 8)}`)) : h('span', { class: 'muted' }, '–'))),
        h('td', {}, row.skew ? h('span', { class: 'badge failed small' }, 'skew') : '')))))));
    if (!i.ok) instances.replaceChildren(errorBox(i));
    else instances.replaceChildren(h('div', { class: 'scroll' }, h('table', { class: 'instances' },
      h('thead', {}, h('tr', {}, ['Instance', 'State', 'Roles', 'Version', 'Started', 'Last heartbeat'].map((c) => h('th', {}, c)))),
      h('tbody', {}, i.data.map((x) => h('tr', { dataset: { instance: x.name } },
        h('td', {}, x.name, x.this ? h('span', { class: 'muted' }, ' (this one)') : null),
        h('td', {}, h('span', { class: `badge ${x.live ? 'succeeded' : 'abandoned'}` }, x.live ? 'live' : 'gone')),
        h('td', {}, x.roles.length ? x.roles.map((r) => h('span', { class: 'chip' }, r)) : h('span', { class: 'muted' }, '–')),
        h('td', {}, x.version),
        timeCell(x.started_at),
        timeCell(x.heartbeat_at)))))));
    if (!b.ok) { broadcasts.replaceChildren(errorBox(b)); return; }
    if (b.data.length === 0) { broadcasts.replaceChildren(h('p', { class: 'empty' }, 'No broadcasts yet.')); return; }
    const delivery = (d) => h('li', { dataset: { instance: d.instance } },
      d.instance, ' ', outcomeBadge(d.state, d.reason),
      d.run_id ? h('a', { class: 'mono', href: `#/events?run=${encodeURIComponent(d.run_id)}` }, ' events') : null,
      d.message ? h('div', { class: 'muted' }, d.message) : null);
    const row = (x) => h('tr', { dataset: { broadcast: x.id } },
      timeCell(x.created_at),
      h('td', {}, h('code', {}, x.identifier)),
      h('td', {}, x.target || h('span', { class: 'muted' }, '–')),
      h('td', { class: 'muted' }, x.created_by),
      h('td', {}, h('ul', { class: 'plain' }, x.deliveries.map(delivery))));
    const head = h('thead', {}, h('tr', {}, ['Made', 'Type', 'Target', 'By', 'On each instance'].map((c) => h('th', {}, c))));
    broadcasts.replaceChildren(h('div', { class: 'scroll' }, h('table', { class: 'broadcasts' }, head, h('tbody', {}, b.data.map(row)))));
  };
  await refresh();
  onLeave(onChanges(refresh), gen);
}

// ------------------------------------------------------------- task form

const dialog = document.getElementById('task-dialog');
const form = document.getElementById('task-form');
const previewBox = document.getElementById('preview');
let editing = null;
let touched = new Set();
let submitted = false;

function kind() { return form.elements.kind.value; }

function showKind() {
  for (const el of form.querySelectorAll('.kind')) el.hidden = el.dataset.kind !== kind();
  // A limit of runs at once only means something when they may overlap.
  document.getElementById('max-concurrent-field').hidden = form.elements.on_overlap.value !== 'allow';
}

/** datetime-local value (local time) ↔ RFC 3339. */
function toIso(local) { return local ? new Date(local).toISOString() : undefined; }
function toLocal(iso) {
  if (!iso) return '';
  const d = new Date(iso);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

/** The form as API input, or {problem} for what only the page can see. */
function formInput() {
  const f = form.elements;
  const text = (name) => f[name].value.trim();
  const opt = (name) => text(name) || undefined;
  const names = (name) => text(name).split(',').map((n) => n.trim()).filter((n) => n);
  const schedule = {};
  if (kind() === 'every') schedule.every = text('every');
  if (kind() === 'cron') { schedule.cron = text('cron'); if (text('timezone')) schedule.timezone = text('timezone'); }
  if (kind() === 'at') schedule.at = toIso(text('at')) || '';
  if (kind() === 'run_on') {
    schedule.run_on = toIso(text('run_on')) || '';
    if (text('interval_seconds')) schedule.interval_seconds = Number(text('interval_seconds'));
  }
  const properties = {};
  for (const line of f.properties.value.split('\n').map((l) => l.trim()).filter(Boolean)) {
    const eq = line.indexOf('=');
    if (eq <= 0) return { problem: { field: 'properties', message: `'${line}' is not KEY=VALUE` } };
    properties[line.slice(0, eq).trim()] = line.slice(eq + 1);
  }
  const grants = [];
  for (let line of f.grants.value.split('\n').map((l) => l.trim()).filter(Boolean)) {
    let readOnly = false;
    if (line.endsWith(':ro')) { readOnly = true; line = line.slice(0, -3); } else if (line.endsWith(':rw')) line = line.slice(0, -3);
    const [host, guest] = line.split(':');
    grants.push({ host_path: host, guest_path: guest || host, read_only: readOnly });
  }
  const input = {
    name: text('name'),
    implementation: text('implementation'),
    enabled: f.enabled.checked,
    schedule,
    timeout: opt('timeout'),
    memory: opt('memory'),
    fuel: text('fuel') ? Number(text('fuel')) : undefined,
    retries: text('retries') ? Number(text('retries')) : undefined,
    retry_backoff: opt('retry_backoff'),
    misfire: f.misfire.value,
    on_overlap: f.on_overlap.value,
    jitter: opt('jitter'),
    start: toIso(text('start')),
    until: toIso(text('until')),
    on_start: f.on_start.checked,
    on_failure: names('on_failure'),
    on_success: names('on_success'),
    max_concurrent: f.on_overlap.value === 'allow' && text('max_concurrent')
      ? Number(text('max_concurrent')) : undefined,
    properties,
    grants,
  };
  // Kept as they are: the form has no fields for these (the CLI and API do).
  if (editing) {
    input.catch_up = editing.catch_up;
    input.allow_http = editing.allow_http;
    input.roles = editing.roles;
    input.keep_runs = editing.keep_runs;
    input.keep_failed = editing.keep_failed;
  }
  return { input };
}

/** Where an API field's message goes in the form. */
function errorSlot(field) {
  const top = field.startsWith('schedule') ? 'schedule' : field;
  return form.querySelector(`[data-error-for="${top}"]`) || document.getElementById('form-error');
}

function inputOf(field) {
  const name = field.startsWith('schedule.') ? field.slice('schedule.'.length) : field === 'schedule' ? { every: 'every', cron: 'cron', at: 'at', run_on: 'run_on' }[kind()] : field;
  return form.elements[name] instanceof Element ? form.elements[name] : null;
}

function clearErrors() {
  for (const el of form.querySelectorAll('.error')) el.textContent = '';
  for (const el of form.querySelectorAll('[aria-invalid]')) el.removeAttribute('aria-invalid');
}

function showError(field, message) {
  const slot = errorSlot(field);
  slot.textContent = slot.id === 'form-error' ? `${field}: ${message}` : message;
  const input = inputOf(field);
  if (input) input.setAttribute('aria-invalid', 'true');
}

function fieldTouched(field) {
  if (submitted) return true;
  const top = field.split('.')[0];
  return touched.has(field) || touched.has(top) || (top === 'schedule' && [...touched].some((t) => ['every', 'cron', 'timezone', 'at', 'run_on', 'interval_seconds', 'kind'].includes(t)));
}

let previewSeq = 0;
async function updatePreview() {
  const seq = ++previewSeq;
  const { input, problem } = formInput();
  clearErrors();
  if (problem) { if (fieldTouched(problem.field)) showError(problem.field, problem.message); return { valid: false }; }
  const r = await api('POST', '/api/preview', input);
  if (seq !== previewSeq) return null;
  if (!r.ok) {
    if (r.data && r.data.field && fieldTouched(r.data.field)) showError(r.data.field, r.data.error.replace(/^[^:]*: /, ''));
    previewBox.replaceChildren();
    return { valid: false };
  }
  const p = r.data;
  if (p.schedule_text) {
    previewBox.replaceChildren(
      h('strong', {}, p.schedule_text[0].toUpperCase() + p.schedule_text.slice(1)),
      p.next.length ? h('span', {}, ' — next: ') : h('span', { class: 'muted' }, ' — no coming fire time'),
      h('ol', { class: 'times inline', id: 'preview-times' }, p.next.map((t) => h('li', { title: new Date(t).toString() }, when(t)))));
  } else {
    previewBox.replaceChildren(h('span', { class: 'muted' }, 'The next five fire times show here once the schedule is valid.'));
  }
  if (!p.valid && fieldTouched(p.field)) showError(p.field, p.error);
  const impl = form.elements.implementation.value.trim();
  document.getElementById('implementation-hint').textContent = impl && !served(impl)
    ? `No loaded component implements '${impl}': runs will fail until one is added to the plugins folder.`
    : 'The identifier of a component in the plugins folder.';
  return p;
}

let previewTimer;
function schedulePreview() {
  clearTimeout(previewTimer);
  previewTimer = setTimeout(updatePreview, 250);
}

form.addEventListener('input', (e) => {
  if (e.target.name) touched.add(e.target.name);
  if (e.target.name === 'kind' || e.target.name === 'on_overlap') showKind();
  schedulePreview();
});
form.addEventListener('change', (e) => { if (e.target.name) touched.add(e.target.name); schedulePreview(); });

async function openTaskForm(task) {
  if (!token()) { askToken('Creating and editing tasks needs the API token.'); return; }
  editing = task;
  touched = new Set();
  submitted = false;
  form.reset();
  clearErrors();
  await loadPlugins();
  document.getElementById('implementations').replaceChildren(
    ...plugins.filter((p) => p.serving && p.identifier).map((p) => h('option', { value: p.identifier }, `${p.display_name || ''} ${p.version || ''}`)));
  document.getElementById('timezones').replaceChildren(
    ...(Intl.supportedValuesOf ? Intl.supportedValuesOf('timeZone') : ['UTC']).map((z) => h('option', { value: z })));
  const f = form.elements;
  document.getElementById('task-title').textContent = task ? `Edit “${task.name}”` : 'New task';
  document.getElementById('task-save').textContent = task ? 'Save changes' : 'Create task';
  if (task) {
    f.name.value = task.name;
    f.implementation.value = task.implementation;
    f.enabled.checked = task.enabled;
    const s = task.schedule;
    const k = s.every ? 'every' : s.cron ? 'cron' : s.at ? 'at' : 'run_on';
    f.kind.value = k;
    f.every.value = s.every || '';
    f.cron.value = s.cron || '';
    f.timezone.value = s.timezone || '';
    f.at.value = toLocal(s.at);
    f.run_on.value = toLocal(s.run_on);
    f.interval_seconds.value = s.interval_seconds || '';
    f.timeout.value = task.timeout;
    f.memory.value = bytes(task.memory).replace(' ', '');
    f.fuel.value = task.fuel || '';
    f.retries.value = task.retries || '';
    f.retry_backoff.value = task.retry_backoff;
    f.misfire.value = task.misfire;
    f.on_overlap.value = task.on_overlap;
    f.jitter.value = task.jitter || '';
    f.start.value = toLocal(task.start);
    f.until.value = toLocal(task.until);
    f.on_failure.value = task.on_failure.join(', ');
    f.on_start.checked = task.on_start;
    f.on_success.value = task.on_success.join(', ');
    f.max_concurrent.value = task.max_concurrent || '';
    f.properties.value = Object.entries(task.properties).map(([k2, v]) => `${k2}=${v}`).join('\n');
    f.grants.value = task.grants.map((g) => `${g.host_path}:${g.guest_path || g.host_path}${g.read_only ? ':ro' : ''}`).join('\n');
  } else {
    const first = plugins.find((p) => p.serving && p.identifier);
    if (first) f.implementation.value = first.identifier;
  }
  showKind();
  dialog.showModal();
  f.name.focus();
  await updatePreview();
}

form.addEventListener('submit', async (e) => {
  e.preventDefault();
  submitted = true;
  clearTimeout(previewTimer);
  const p = await updatePreview();
  if (!p || !p.valid) {
    document.getElementById('form-error').textContent = 'Please fix the fields marked above.';
    return;
  }
  const { input } = formInput();
  const r = editing
    ? await api('PUT', `/api/tasks/${encodeURIComponent(editing.name)}`, input)
    : await api('POST', '/api/tasks', input);
  if (r.ok) {
    dialog.close();
    const saved = editing ? `“${r.data.name}” saved` : `“${r.data.name}” created: next run ${when(r.data.next_run_at)}`;
    // Accepted, but worth a look: e.g. no instance has loaded the implementation.
    if (r.data.warnings && r.data.warnings.length) toast(`${saved}. ${r.data.warnings.join(' ')}`, 'warn');
    else toast(saved, 'ok');
    if (editing && editing.name !== r.data.name && location.hash.startsWith('#/tasks/')) location.hash = `#/tasks/${encodeURIComponent(r.data.name)}`;
    else route();
  } else if (!r.unsent) {
    clearErrors();
    const field = r.data && r.data.field;
    const message = r.data && r.data.error ? r.data.error.replace(/^[^:]*: /, '') : `HTTP ${r.status}`;
    if (field) showError(field, message); else document.getElementById('form-error').textContent = message;
  }
});
document.getElementById('task-cancel').addEventListener('click', () => dialog.close());

// ------------------------------------------------------------------ token

const tokenDialog = document.getElementById('token-dialog');
function askToken(why) {
  document.getElementById('token-why').textContent = why;
  document.getElementById('token-input').value = token();
  if (!tokenDialog.open) tokenDialog.showModal();
}
document.getElementById('token-form').addEventListener('submit', () => {
  const value = document.getElementById('token-input').value.trim();
  if (value) localStorage.setItem(TOKEN_KEY, value);
  updateTokenButton();
  toast('Token saved in this browser', 'ok');
  route();
});
document.getElementById('token-cancel').addEventListener('click', () => tokenDialog.close());
document.getElementById('token-forget').addEventListener('click', () => {
  localStorage.removeItem(TOKEN_KEY);
  updateTokenButton();
  tokenDialog.close();
});
document.getElementById('token-button').addEventListener('click', () => askToken('The token this browser sends with changes.'));

function updateTokenButton() {
  const b = document.getElementById('token-button');
  b.textContent = token() ? 'API token ✓' : 'Set API token';
  b.title = token() ? 'A token is saved in this browser' : 'Changes need the API token';
}

// ------------------------------------------------------------------ start

// `#token=…` (as `cargo xtask demo` prints it) saves the token and is
// removed from the address bar at once.
const fromUrl = location.hash.match(/^#token=([0-9a-fA-F]+)/);
if (fromUrl) {
  localStorage.setItem(TOKEN_KEY, fromUrl[1]);
  history.replaceState(null, '', `${location.pathname}#/`);
}
updateTokenButton();
api('GET', '/api/health').then((r) => {
  if (r.ok) document.getElementById('instance').textContent = `${r.data.instance} · v${r.data.version}`;
});
window.addEventListener('hashchange', route);
route();
