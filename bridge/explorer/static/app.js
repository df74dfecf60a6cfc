// twinhub explorer. No build step, no dependencies: plain ES2020 modules'
// worth of code in one file, served by the hub from embedded files.
'use strict';

const $ = (sel, el = document) => el.querySelector(sel);
const main = () => $('#main');
const session = window.sessionStorage;

// ---- Sign-in and SAS tokens ------------------------------------------------

// parseConnectionString returns {host, keyName, key} or throws.
function parseConnectionString(s) {
  const f = {};
  for (const part of s.trim().split(';')) {
    if (!part) continue;
    const i = part.indexOf('=');
    if (i < 0) throw new Error(`part "${part}" has no "="`);
    f[part.slice(0, i)] = part.slice(i + 1);
  }
  if (!f.HostName || !f.SharedAccessKey) throw new Error('a connection string needs HostName and SharedAccessKey');
  if (f.DeviceId) throw new Error('this is a device connection string; sign in with a shared access policy (SharedAccessKeyName=…)');
  if (!f.SharedAccessKeyName) throw new Error('the connection string names no policy (SharedAccessKeyName)');
  return { host: f.HostName, keyName: f.SharedAccessKeyName, key: f.SharedAccessKey };
}

let tokenCache = { value: '', expires: 0 };

// sasToken signs a token for the hub with the policy key (HMAC-SHA256 over
// "<sr>\n<expiry>", as IoT Hub does), valid for an hour.
async function sasToken() {
  const now = Math.floor(Date.now() / 1000);
  if (tokenCache.value && tokenCache.expires - now > 300) return tokenCache.value;
  const conn = JSON.parse(session.getItem('twinhub.conn') || 'null');
  if (!conn) throw new SignedOut();
  if (!window.crypto || !crypto.subtle) {
    throw new Error('this page is not a secure context, so the browser cannot sign tokens: open the explorer over HTTPS or at http://127.0.0.1 / http://localhost');
  }
  const se = now + 3600;
  const sr = encodeURIComponent(conn.host);
  const raw = Uint8Array.from(atob(conn.key), (c) => c.charCodeAt(0));
  const key = await crypto.subtle.importKey('raw', raw, { name: 'HMAC', hash: 'SHA-256' }, false, ['sign']);
  const sig = new Uint8Array(await crypto.subtle.sign('HMAC', key, new TextEncoder().encode(sr + '\n' + se)));
  const b64 = btoa(String.fromCharCode(...sig));
  tokenCache = { value: `SharedAccessSignature sr=${sr}&sig=${encodeURIComponent(b64)}&se=${se}&skn=${encodeURIComponent(conn.keyName)}`, expires: se };
  return tokenCache.value;
}

class SignedOut extends Error { constructor() { super('signed out'); } }

// HubError is an error answer of the hub: status, IoT Hub error code, text.
class HubError extends Error {
  constructor(status, code, text) { super(text); this.status = status; this.code = code; }
}

// api calls the back-end API and returns {status, headers, body}; it throws
// HubError for error answers and an Error saying the hub is unreachable.
async function api(method, path, { body, headers = {}, signal = screenCtrl.signal } = {}) {
  const h = { Authorization: await sasToken(), ...headers };
  if (body !== undefined) h['Content-Type'] = 'application/json';
  let resp;
  try {
    resp = await fetch(path, { method, headers: h, body: body === undefined ? undefined : JSON.stringify(body), signal });
  } catch (e) {
    if (e.name === 'AbortError') throw e;
    showBanner('The hub is unreachable: ' + e.message + '. Check that twinhub runs, then retry.');
    throw new Error('the hub is unreachable');
  }
  if (resp.ok) {
    clearBanner();
    const text = await resp.text();
    if (signal.aborted) throw abortError();
    return { status: resp.status, headers: resp.headers, body: text ? JSON.parse(text) : null };
  }
  const err = await hubError(resp);
  if (signal.aborted) throw abortError();
  if (resp.status === 401) showBanner('Not authorised: ' + err.message);
  throw err;
}

async function hubError(resp) {
  let code = resp.headers.get('iothub-errorcode') || '', text = resp.statusText;
  try {
    const b = await resp.json();
    const m = /^ErrorCode:([^;]*);([\s\S]*)$/.exec(b.Message || '');
    if (m) { code = m[1]; text = m[2]; } else if (b.Message) text = b.Message;
  } catch (_) { /* not JSON */ }
  return new HubError(resp.status, code, text);
}

// A screen's requests end when the user leaves it; their answers are dropped.
let screenCtrl = new AbortController();
function abortError() { return new DOMException('the screen was left', 'AbortError'); }
function isAbort(e) { return e && e.name === 'AbortError'; }

function showBanner(text) { const b = $('#banner'); b.textContent = text; b.hidden = false; }
function clearBanner() { const b = $('#banner'); if (b.dataset.sticky !== '1') b.hidden = true; }

// ---- Screens ----------------------------------------------------------------

let leave = () => {};

function mount(templateId) {
  screenCtrl.abort();
  screenCtrl = new AbortController();
  leave();
  leave = () => {};
  const m = main();
  m.replaceChildren($(templateId).content.cloneNode(true));
  m.focus();
  for (const a of document.querySelectorAll('header nav a')) {
    if (location.hash.startsWith(a.getAttribute('href'))) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  return m;
}

function route() {
  const signedIn = !!session.getItem('twinhub.conn');
  $('#sign-out').hidden = !signedIn;
  const conn = JSON.parse(session.getItem('twinhub.conn') || 'null');
  $('#who').textContent = conn ? `${conn.keyName} @ ${conn.host}` : '';
  if (!signedIn) return signIn();
  const h = location.hash || '#/fleet';
  if (h.startsWith('#/twin/')) return twinScreen(decodeURIComponent(h.slice('#/twin/'.length)));
  if (h.startsWith('#/history/')) return historyScreen(decodeURIComponent(h.slice('#/history/'.length)));
  if (h.startsWith('#/live')) return liveScreen();
  if (h.startsWith('#/rollout')) return rolloutScreen();
  return fleetScreen();
}

function signIn() {
  mount('#t-signin');
  $('#conn').focus();
  $('#signin-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    try {
      const conn = parseConnectionString($('#conn').value);
      session.setItem('twinhub.conn', JSON.stringify(conn));
      tokenCache = { value: '', expires: 0 };
      await api('POST', '/devices/query', { body: { query: 'SELECT COUNT() AS n FROM devices' }, headers: { 'x-ms-max-item-count': '1' } });
      if (!location.hash || location.hash === '#/signin') location.hash = '#/fleet';
      route();
    } catch (e) {
      if (isAbort(e)) return;
      session.removeItem('twinhub.conn');
      $('#signin-error').textContent = 'Sign-in failed: ' + e.message;
    }
  });
}

// Fleet: a query box, its results a page at a time.
function fleetScreen() {
  mount('#t-fleet');
  const q = $('#query');
  q.value = session.getItem('twinhub.query') || q.value;
  let pages = [''];   // continuation token of each page shown so far
  let page = 0;

  async function run(p) {
    $('#query-error').textContent = '';
    session.setItem('twinhub.query', q.value);
    try {
      const r = await api('POST', '/devices/query', {
        body: { query: q.value },
        headers: { 'x-ms-max-item-count': $('#page-size').value, ...(pages[p] ? { 'x-ms-continuation': pages[p] } : {}) },
      });
      page = p;
      const next = r.headers.get('x-ms-continuation');
      pages = pages.slice(0, p + 1);
      if (next) pages.push(next);
      renderRows(r.body || []);
      $('#page-info').textContent = `Page ${page + 1} · ${(r.body || []).length} rows`;
      $('#prev-page').disabled = page === 0;
      $('#next-page').disabled = !next;
    } catch (e) {
      if (isAbort(e)) return;
      if (e instanceof HubError) $('#query-error').textContent = `${e.code || 'Error'} (${e.status}): ${e.message}`;
      else $('#query-error').textContent = e.message;
    }
  }
  $('#query-form').addEventListener('submit', (ev) => { ev.preventDefault(); pages = ['']; run(0); });
  q.addEventListener('keydown', (ev) => { if (ev.key === 'Enter' && (ev.ctrlKey || ev.metaKey)) { ev.preventDefault(); pages = ['']; run(0); } });
  $('#next-page').addEventListener('click', () => run(page + 1));
  $('#prev-page').addEventListener('click', () => run(page - 1));
  $('#save-query').addEventListener('click', () => {
    const saved = savedQueries();
    if (!saved.includes(q.value)) saved.unshift(q.value);
    localStorage.setItem('twinhub.saved', JSON.stringify(saved.slice(0, 20)));
    renderSaved();
  });
  function renderSaved() {
    const box = $('#saved');
    box.replaceChildren(...savedQueries().map((s) => {
      const b = document.createElement('button');
      b.type = 'button'; b.textContent = s; b.title = 'Run this saved query';
      b.addEventListener('click', () => { q.value = s; pages = ['']; run(0); });
      return b;
    }));
  }
  renderSaved();
  run(0);
}

function savedQueries() {
  try { return JSON.parse(localStorage.getItem('twinhub.saved') || '[]'); } catch (_) { return []; }
}

function renderRows(rows) {
  const thead = $('#results thead'), tbody = $('#results tbody');
  const twins = rows.length > 0 && rows.every((r) => typeof r.deviceId === 'string' && r.properties);
  let cols;
  if (twins) cols = ['deviceId', 'status', 'version', 'etag', 'desired', 'reported', 'tags'];
  else cols = [...new Set(rows.flatMap((r) => Object.keys(r)))];
  const tr = document.createElement('tr');
  tr.replaceChildren(...cols.map((c) => { const th = document.createElement('th'); th.textContent = c; th.scope = 'col'; return th; }));
  thead.replaceChildren(tr);
  tbody.replaceChildren(...rows.map((r) => {
    const row = document.createElement('tr');
    for (const c of cols) {
      const td = document.createElement('td');
      if (twins && c === 'deviceId') {
        const a = document.createElement('a');
        a.href = '#/twin/' + encodeURIComponent(r.deviceId); a.textContent = r.deviceId;
        td.append(a);
      } else {
        let v = r[c];
        if (twins && c === 'desired') v = r.properties.desired && r.properties.desired.$version;
        if (twins && c === 'reported') v = r.properties.reported && r.properties.reported.$version;
        td.textContent = typeof v === 'object' && v !== null ? JSON.stringify(v) : v === undefined ? '' : String(v);
        if (typeof v === 'object') td.className = 'json';
      }
      row.append(td);
    }
    return row;
  }));
}

// Device twin: the sections side by side, edits with the etag, live updates.
function twinScreen(id) {
  mount('#t-twin');
  $('#twin-id').textContent = id;
  $('#twin-history-link').href = '#/history/' + encodeURIComponent(id);
  let twin = null;
  const stripMeta = (o) => {
    if ($('#show-meta').checked || typeof o !== 'object' || o === null) return o;
    const out = Array.isArray(o) ? [] : {};
    for (const [k, v] of Object.entries(o)) if (k !== '$metadata') out[k] = stripMeta(v);
    return out;
  };
  function render() {
    const p = twin.properties || {};
    $('#twin-etag').textContent = twin.etag;
    $('#twin-version').textContent = twin.version;
    $('#desired-version').textContent = p.desired ? p.desired.$version : '';
    $('#reported-version').textContent = p.reported ? p.reported.$version : '';
    $('#twin-status').textContent = twin.status || '';
    $('#tags').textContent = JSON.stringify(stripMeta(twin.tags || {}), null, 2);
    $('#desired').textContent = JSON.stringify(stripMeta(p.desired || {}), null, 2);
    $('#reported').textContent = JSON.stringify(stripMeta(p.reported || {}), null, 2);
    const pending = Object.keys(p.desired || {}).filter((k) => !k.startsWith('$') &&
      JSON.stringify(stripAll(p.desired[k])) !== JSON.stringify(stripAll((p.reported || {})[k])));
    $('#pending').textContent = pending.length ? 'Desired but not reported back by the device: ' + pending.join(', ') : '';
    $('#desired').classList.toggle('pending-key', pending.length > 0);
  }
  async function load() {
    try {
      const r = await api('GET', '/twins/' + encodeURIComponent(id));
      twin = r.body;
      render();
    } catch (e) {
      if (isAbort(e)) return;
      $('#edit-error').textContent = e.message;
    }
  }
  $('#show-meta').addEventListener('change', () => twin && render());
  $('#edit-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    $('#edit-error').textContent = ''; $('#edit-status').textContent = '';
    let patch;
    try { patch = JSON.parse($('#patch').value); } catch (e) { $('#edit-error').textContent = 'The patch is not JSON: ' + e.message; return; }
    const body = $('#edit-section').value === 'tags' ? { tags: patch } : { properties: { desired: patch } };
    const etag = twin && twin.etag;
    try {
      const r = await api('PATCH', '/twins/' + encodeURIComponent(id), { body, headers: { 'If-Match': `"${etag}"` } });
      twin = r.body;
      render();
      $('#conflict').hidden = true;
      $('#edit-status').textContent = `Saved: etag ${twin.etag}`;
    } catch (e) {
      if (isAbort(e)) return;
      if (e instanceof HubError && e.status === 412) {
        $('#conflict-text').textContent = `the twin changed since you loaded it (your etag ${etag}). ${e.message}. Your patch is kept: reload the twin, check it, and save again.`;
        $('#conflict').hidden = false;
        $('#reload-merge').focus();
      } else {
        $('#edit-error').textContent = e instanceof HubError ? `${e.code} (${e.status}): ${e.message}` : e.message;
      }
    }
  });
  $('#reload-merge').addEventListener('click', async () => {
    await load();
    $('#conflict').hidden = true;
    $('#edit-status').textContent = `Reloaded: etag ${twin.etag}; your patch is unchanged, save to apply it on top`;
    $('#patch').focus();
  });
  load();
  // Reload the twin whenever a change of it arrives, unless the user
  // turned that off (to edit against the version on screen).
  let stop = () => {};
  const setLive = (on) => { const dot = $('#twin-live'); if (dot) dot.classList.toggle('on', on); };
  const startFollowing = () => { stop = follow({ deviceId: id }, () => load(), setLive); };
  $('#twin-follow').addEventListener('change', (ev) => {
    stop();
    setLive(false);
    if (ev.target.checked) { startFollowing(); load(); }
  });
  startFollowing();
  leave = () => stop();
}

function stripAll(o) {
  if (typeof o !== 'object' || o === null) return o;
  const out = {};
  for (const k of Object.keys(o).sort()) if (!k.startsWith('$')) out[k] = stripAll(o[k]);
  return out;
}

// follow reads GET /events (fetch, not EventSource, so the token goes in a
// header), calls onEvent(seq, event) for each change and reconnects after
// a cutoff or an error from the last sequence it got. It returns a stop
// function.
function follow(filter, onEvent, onState) {
  const ctrl = new AbortController();
  let next = 0;
  (async () => {
    while (!ctrl.signal.aborted) {
      try {
        const q = new URLSearchParams();
        for (const [k, v] of Object.entries(filter)) if (v) q.set(k, v);
        if (next) q.set('from', String(next));
        const resp = await fetch('/events?' + q, { headers: { Authorization: await sasToken() }, signal: ctrl.signal });
        if (!resp.ok) {
          const err = await hubError(resp);
          onState(false, `${err.code} (${err.status}): ${err.message}`);
          if (resp.status === 400 || resp.status === 401) return;
        } else {
          onState(true, 'following');
          const rd = resp.body.getReader();
          const dec = new TextDecoder();
          let buf = '';
          for (;;) {
            const { value, done } = await rd.read();
            if (done) break;
            buf += dec.decode(value, { stream: true });
            let i;
            while ((i = buf.indexOf('\n\n')) >= 0) {
              const frame = buf.slice(0, i); buf = buf.slice(i + 2);
              const ev = { id: 0, event: '', data: '' };
              for (const line of frame.split('\n')) {
                if (line.startsWith('id: ')) ev.id = Number(line.slice(4));
                else if (line.startsWith('event: ')) ev.event = line.slice(7);
                else if (line.startsWith('data: ')) ev.data += line.slice(6);
              }
              if (ev.event === 'change') { next = ev.id + 1; onEvent(ev.id, JSON.parse(ev.data)); }
              else if (ev.event === 'cutoff' || ev.event === 'shutdown') { const d = JSON.parse(ev.data); next = d.resumeFrom; onState(false, d.message); }
            }
          }
        }
      } catch (e) {
        if (ctrl.signal.aborted) return;
        onState(false, 'disconnected: ' + e.message + '; reconnecting');
      }
      await new Promise((r) => setTimeout(r, 1000));
    }
  })();
  return () => ctrl.abort();
}

// History: a device's changes from the hub's history (ClickHouse), a chart of
// a numeric reported property, and the twin as of a chosen change.
const historyPages = 20; // at most 20 pages of 1,000 events are read for one view

function historyScreen(id) {
  mount('#t-history');
  $('#history-id').textContent = id;
  $('#history-twin-link').href = '#/twin/' + encodeURIComponent(id);
  const local = (d) => new Date(d.getTime() - d.getTimezoneOffset() * 60000).toISOString().slice(0, 19);
  const now = new Date();
  $('#history-from').value = local(new Date(now.getTime() - 3600 * 1000));
  $('#history-to').value = local(new Date(now.getTime() + 60 * 1000));
  $('#history-path').value = session.getItem('twinhub.historyPath') || '';
  let chart = null;

  async function asOf(time) {
    $('#asof-time').textContent = time;
    try {
      const r = await api('GET', `/twins/${encodeURIComponent(id)}?asOf=${encodeURIComponent(time)}`);
      $('#asof').textContent = JSON.stringify(stripAll2(r.body), null, 2);
    } catch (e) {
      if (isAbort(e)) return;
      $('#asof').textContent = e instanceof HubError ? `${e.code} (${e.status}): ${e.message}` : e.message;
    }
  }

  async function load() {
    $('#history-error').textContent = '';
    $('#history-status').textContent = 'Loading…';
    session.setItem('twinhub.historyPath', $('#history-path').value);
    const from = new Date($('#history-from').value).toISOString();
    const to = new Date($('#history-to').value).toISOString();
    let events = [], token = '', pages = 0;
    try {
      do {
        const q = new URLSearchParams({ from, to, limit: '1000' });
        if (token) q.set('continuationToken', token);
        const r = await api('GET', `/twins/${encodeURIComponent(id)}/history?${q}`);
        events = events.concat(r.body.events || []);
        token = r.body.continuationToken || '';
        pages++;
      } while (token && pages < historyPages);
    } catch (e) {
      if (isAbort(e)) return;
      $('#history-status').textContent = '';
      if (e instanceof HubError && e.status === 503 && /history is off/.test(e.message)) {
        $('#history-error').textContent = 'History is off on this hub. ' + e.message;
      } else {
        $('#history-error').textContent = e instanceof HubError ? `${e.code} (${e.status}): ${e.message}` : e.message;
      }
      return;
    }
    $('#history-status').textContent = `${events.length} changes` + (token ? ` (the newest ${events.length}; narrow the time range for older ones)` : '');
    const tbody = $('#history-events tbody');
    tbody.replaceChildren(...events.map((e) => {
      const tr = document.createElement('tr');
      const b = document.createElement('button');
      b.type = 'button'; b.textContent = 'as of'; b.className = 'asof';
      b.setAttribute('aria-label', `the twin as of change ${e.sequence}`);
      b.addEventListener('click', () => asOf(e.time));
      const cells = [String(e.sequence), e.time, e.op, e.source, String(e.version), JSON.stringify(e.patch), b];
      tr.replaceChildren(...cells.map((c) => { const td = document.createElement('td'); td.append(c); return td; }));
      tr.children[5].className = 'json';
      return tr;
    }));
    drawChart(events.slice().reverse());
  }

  // drawChart plots the reported property at the path, oldest first: a point
  // where a change set it to a number, a gap where one removed it.
  function drawChart(events) {
    const path = $('#history-path').value.trim();
    if (chart) { chart.destroy(); chart = null; window.explorerChart = null; }
    $('#chart').replaceChildren();
    if (!path) return;
    const xs = [], ys = [], times = [];
    for (const e of events) {
      const rep = e.patch && e.patch.properties && e.patch.properties.reported;
      if (rep === undefined) continue;
      const v = lookup(rep, path.split('.'));
      if (v === undefined) continue;
      xs.push(Date.parse(e.time) / 1000);
      ys.push(typeof v === 'number' ? v : null);
      times.push(e.time);
    }
    if (xs.length === 0) { $('#chart').textContent = `No change in this range set reported.${path}.`; return; }
    const width = Math.max(320, $('#chart').clientWidth || 900);
    chart = new uPlot({
      width, height: 260,
      series: [{}, { label: 'reported.' + path, stroke: '#0b5cad', width: 2, points: { show: true, size: 6 }, spanGaps: false }],
      axes: [{}, {}],
    }, [xs, ys], $('#chart'));
    chart.over.addEventListener('click', () => {
      const i = chart.cursor.idx;
      if (i !== null && i !== undefined) asOf(times[i]);
    });
    window.explorerChart = { times, values: ys };
  }

  $('#history-form').addEventListener('submit', (ev) => { ev.preventDefault(); load(); });
  load();
}

// Rollout: one desired property's convergence across the fleet, computed
// by the hub from history (the browser gets one number per instant).
function rolloutScreen() {
  mount('#t-rollout');
  const local = (d) => new Date(d.getTime() - d.getTimezoneOffset() * 60000).toISOString().slice(0, 19);
  const now = new Date();
  $('#rollout-from').value = local(new Date(now.getTime() - 3600 * 1000));
  $('#rollout-to').value = local(new Date(now.getTime() + 60 * 1000));
  $('#rollout-path').value = session.getItem('twinhub.rolloutPath') || '';
  let chart = null;
  $('#rollout-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    $('#rollout-error').textContent = '';
    const path = $('#rollout-path').value.trim();
    session.setItem('twinhub.rolloutPath', path);
    const q = new URLSearchParams({ path, from: new Date($('#rollout-from').value).toISOString(),
      to: new Date($('#rollout-to').value).toISOString(), points: '60' });
    let points;
    try {
      points = (await api('GET', '/rollout?' + q)).body.points;
    } catch (e) {
      if (isAbort(e)) return;
      $('#rollout-error').textContent = e instanceof HubError && e.status === 503 && /history is off/.test(e.message)
        ? 'History is off on this hub. ' + e.message
        : e instanceof HubError ? `${e.code} (${e.status}): ${e.message}` : e.message;
      return;
    }
    const last = points[points.length - 1];
    $('#rollout-status').textContent = last.targeted
      ? `At ${last.time}: ${last.matching} of ${last.targeted} devices reported desired.${path} back (${Math.round(100 * last.matching / last.targeted)}%)`
      : `No device has desired.${path} set at ${last.time}`;
    if (chart) chart.destroy();
    const xs = points.map((p) => Date.parse(p.time) / 1000);
    const share = points.map((p) => (p.targeted ? 100 * p.matching / p.targeted : null));
    chart = new uPlot({
      width: Math.max(320, $('#rollout-chart').clientWidth || 900), height: 280,
      scales: { y: { range: [0, 100] } },
      series: [{}, { label: '% reported back', stroke: '#2da44e', width: 2, points: { show: true, size: 5 } }],
      axes: [{}, { values: (u, vals) => vals.map((v) => v + '%') }],
    }, [xs, share], $('#rollout-chart'));
    window.explorerRollout = { times: points.map((p) => p.time), matching: points.map((p) => p.matching), targeted: points.map((p) => p.targeted) };
  });
}

// lookup walks a merge patch; null on the way means the property was removed.
function lookup(o, keys) {
  for (const k of keys) {
    if (o === null) return null;
    if (typeof o !== 'object' || !(k in o)) return undefined;
    o = o[k];
  }
  return o;
}

function stripAll2(o) {
  if (typeof o !== 'object' || o === null || Array.isArray(o)) return o;
  const out = {};
  for (const [k, v] of Object.entries(o)) if (k !== '$metadata') out[k] = stripAll2(v);
  return out;
}

// Live: changes as they arrive, for one device or a filter.
function liveScreen() {
  mount('#t-live');
  let stop = () => {};
  const tbody = $('#live-events tbody');
  $('#live-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    stop();
    tbody.replaceChildren();
    const filter = { deviceId: $('#live-device').value.trim(), deviceIdPrefix: $('#live-prefix').value.trim(), sections: $('#live-sections').value };
    stop = follow(filter, (seq, e) => {
      const tr = document.createElement('tr');
      const link = document.createElement('a');
      link.href = '#/twin/' + encodeURIComponent(e.deviceId); link.textContent = e.deviceId;
      const cells = [String(seq), e.time, link, e.op, e.source, String(e.version), JSON.stringify(e.patch)];
      tr.replaceChildren(...cells.map((c) => { const td = document.createElement('td'); td.append(c); return td; }));
      tr.lastChild.className = 'json';
      tbody.prepend(tr);
      while (tbody.children.length > 500) tbody.lastChild.remove();
    }, (on, text) => { $('#live-status').textContent = text; });
    $('#live-stop').disabled = false;
    leave = stop;
  });
  $('#live-stop').addEventListener('click', () => { stop(); $('#live-status').textContent = 'stopped'; $('#live-stop').disabled = true; });
}

$('#sign-out').addEventListener('click', () => {
  session.removeItem('twinhub.conn');
  tokenCache = { value: '', expires: 0 };
  location.hash = '#/signin';
  route();
});
window.addEventListener('hashchange', route);
window.addEventListener('unhandledrejection', (ev) => {
  if (ev.reason instanceof SignedOut) { route(); ev.preventDefault(); }
  if (isAbort(ev.reason)) ev.preventDefault();
});
route();
