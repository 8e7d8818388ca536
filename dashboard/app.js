// Sprout's dashboard: one page, plain DOM, talking to the same /v1 API as
// every client. The API key lives in this tab's sessionStorage only: it goes
// in the X-API-Key header, and for the terminal's WebSocket in a subprotocol
// (a browser cannot set headers there; a URL would leak it into logs).
(function () {
  'use strict';

  const KEY = 'sprout.apiKey';
  const view = document.getElementById('view');
  const toast = document.getElementById('toast');
  let me = null;          // {keyID, team, admin}
  let cleanup = [];       // what the current page must stop when left

  // ---- small helpers -------------------------------------------------------

  /** h('tag.class', {attr: value, onclick: fn}, ...children): an element, text by textContent only. */
  function h(spec, attrs, ...children) {
    const [tag, ...classes] = spec.split('.');
    const el = document.createElement(tag || 'div');
    if (classes.length) el.className = classes.join(' ');
    if (attrs && (typeof attrs !== 'object' || attrs instanceof Node || Array.isArray(attrs))) { children.unshift(attrs); attrs = null; }
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
      else if (k === 'dataset') Object.assign(el.dataset, v);
      else if (k === 'style') el.style.cssText = v; // CSSOM: the page's CSP forbids style attributes
      else el.setAttribute(k, v === true ? '' : String(v));
    }
    append(el, children);
    return el;
  }
  function append(el, children) {
    for (const c of children.flat()) {
      if (c === null || c === undefined || c === false) continue;
      el.appendChild(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return el;
  }
  const SVG = 'http://www.w3.org/2000/svg';
  function s(tag, attrs) {
    const el = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
    return el;
  }
  function bytes(n) {
    if (n === undefined || n === null) return '—';
    const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let i = 0; let v = n;
    while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
    return (i === 0 ? v : v.toFixed(v < 10 ? 1 : 0)) + ' ' + units[i];
  }
  function ago(t) {
    if (!t) return '—';
    return duration(Date.now() / 1000 - t);
  }
  function duration(sec) {
    sec = Math.max(0, Math.round(sec));
    if (sec < 60) return sec + ' s';
    if (sec < 3600) return Math.floor(sec / 60) + ' min ' + (sec % 60) + ' s';
    if (sec < 86400) return Math.floor(sec / 3600) + ' h ' + Math.floor(sec % 3600 / 60) + ' min';
    return Math.floor(sec / 86400) + ' d ' + Math.floor(sec % 86400 / 3600) + ' h';
  }
  function when(t) { return t ? new Date(t * 1000).toLocaleString() : '—'; }
  function state(name) { return h('span.state.' + name, name); }
  function say(message) {
    toast.textContent = message;
    clearTimeout(say.timer);
    say.timer = setTimeout(() => { toast.textContent = ''; }, 5000);
  }
  function errorBox(err) { return h('p.error', { role: 'alert' }, err.message || String(err)); }
  function every(ms, fn) {
    let stopped = false; let timer = null;
    const tick = async () => {
      if (stopped) return;
      try { await fn(); } catch (e) { /* shown by fn */ }
      // Counted on the page, so a test can wait for a refresh to have happened.
      document.body.dataset.refreshes = String(Number(document.body.dataset.refreshes || 0) + 1);
      if (!stopped) timer = setTimeout(tick, ms);
    };
    tick();
    cleanup.push(() => { stopped = true; clearTimeout(timer); });
  }

  // ---- the API ------------------------------------------------------------

  class APIError extends Error {
    constructor(status, code, message) { super(message); this.status = status; this.code = code; }
  }

  async function api(method, path, body, options) {
    options = options || {};
    const headers = { 'X-API-Key': options.key || sessionStorage.getItem(KEY) || '' };
    let payload;
    if (body instanceof Blob) payload = body;
    else if (body !== undefined) { headers['Content-Type'] = 'application/json'; payload = JSON.stringify(body); }
    const response = await fetch(path, { method, headers, body: payload, signal: options.signal });
    if (!response.ok) {
      let code = 'http_' + response.status; let message = response.status + ' ' + response.statusText;
      try {
        const e = (await response.json()).error;
        if (e) { code = e.code; message = e.message; }
      } catch (_) { /* not JSON */ }
      if (response.status === 401 && !options.key) { signOut('Your API key is no longer accepted: ' + message); }
      throw new APIError(response.status, code, message);
    }
    if (options.raw) return response;
    const text = await response.text();
    return text ? JSON.parse(text) : null;
  }
  const enc = encodeURIComponent;

  // ---- sign in and navigation ----------------------------------------------

  function signOut(message) {
    sessionStorage.removeItem(KEY);
    me = null;
    document.getElementById('nav').hidden = true;
    document.getElementById('who').hidden = true;
    location.hash = '#/signin';
    if (message) setTimeout(() => say(message), 0);
    route();
  }
  document.getElementById('signout').addEventListener('click', () => signOut('Signed out.'));

  function signInPage() {
    const error = h('div', { id: 'signin-error' });
    const input = h('input', { id: 'api-key', name: 'api-key', type: 'password', autocomplete: 'off', required: true, spellcheck: 'false' });
    const form = h('form.panel.signin', {
      'aria-labelledby': 'signin-title',
      onsubmit: async (event) => {
        event.preventDefault();
        error.replaceChildren();
        const key = input.value.trim();
        if (!key) { error.append(errorBox(new Error('Enter an API key.'))); return; }
        try {
          me = await api('GET', '/v1/whoami', undefined, { key });
        } catch (e) {
          const why = e.status === 401 ? 'That API key was not accepted (' + e.message + ').' : 'Could not sign in: ' + e.message;
          error.append(errorBox(new Error(why)));
          input.focus();
          return;
        }
        sessionStorage.setItem(KEY, key);
        signedIn();
        location.hash = '#/sandboxes';
      },
    },
    h('h1', { id: 'signin-title' }, 'Sign in to Sprout'),
    h('p.sub', 'Use an API key (sprout server prints the first one, or see DATA/admin.key). It is kept in this tab only.'),
    h('p', h('label', { for: 'api-key' }, 'API key')), input, error,
    h('p', h('button.primary', { type: 'submit' }, 'Sign in')));
    view.replaceChildren(form);
    input.focus();
  }

  function signedIn() {
    document.getElementById('nav').hidden = false;
    document.getElementById('who').hidden = false;
    document.getElementById('nav-keys').hidden = !me.admin;
    document.getElementById('who-team').textContent = 'team ' + me.team + (me.admin ? ' · admin' : '');
  }

  const routes = [
    [/^#\/sandboxes$/, sandboxesPage],
    [/^#\/sandboxes\/([\w-]+)$/, sandboxPage],
    [/^#\/envs$/, envsPage],
    [/^#\/envs\/([\w.-]+)$/, envPage],
    [/^#\/builds$/, buildsPage],
    [/^#\/builds\/([\w-]+)$/, buildPage],
    [/^#\/keys$/, keysPage],
  ];

  async function route() {
    for (const stop of cleanup) { try { stop(); } catch (_) { /* already stopped */ } }
    cleanup = [];
    const hash = location.hash || '#/sandboxes';
    if (!sessionStorage.getItem(KEY)) { document.title = 'Sign in · Sprout'; signInPage(); return; }
    if (!me) {
      try { me = await api('GET', '/v1/whoami'); } catch (e) { return; }
      signedIn();
    }
    for (const a of document.querySelectorAll('nav a')) {
      if (hash.startsWith(a.getAttribute('href'))) a.setAttribute('aria-current', 'page'); else a.removeAttribute('aria-current');
    }
    for (const [pattern, page] of routes) {
      const m = hash.match(pattern);
      if (m) {
        view.replaceChildren();
        await page(...m.slice(1));
        // Counted on the page, so a test can wait for a view to have been drawn.
        document.body.dataset.routed = String(Number(document.body.dataset.routed || 0) + 1);
        return;
      }
    }
    location.hash = '#/sandboxes';
  }
  window.addEventListener('hashchange', () => { route(); document.getElementById('main').focus({ preventScroll: true }); });

  function page(title, ...content) {
    document.title = title + ' · Sprout';
    view.replaceChildren(...content);
  }

  // ---- sandboxes ----------------------------------------------------------

  async function sandboxesPage() {
    const stateFilter = h('select', { id: 'filter-state' },
      ['all', 'running', 'paused', 'creating', 'pausing', 'resuming', 'forking'].map((v) => h('option', { value: v }, v)));
    const envFilter = h('input', { id: 'filter-env', type: 'search', placeholder: 'env name or id' });
    const ended = h('input', { id: 'filter-ended', type: 'checkbox' });
    const body = h('tbody');
    const status = h('div', { id: 'sandboxes-error' });
    const envSelect = h('select', { id: 'new-env', required: true });
    const createError = h('div');
    const table = h('table', { id: 'sandboxes' },
      h('caption.sub', { style: 'text-align:left;caption-side:top;padding:4px 0' }, 'Sandboxes of team ' + me.team + ', refreshed every 2 s'),
      h('thead', h('tr', ['Sandbox', 'State', 'Env', 'Age', 'Timeout left', 'CPU', 'Memory'].map((t, i) => h('th', { scope: 'col', class: i >= 5 ? 'num' : null }, t)))),
      body);
    page('Sandboxes',
      h('h1', 'Sandboxes'),
      h('form.row', {
        'aria-label': 'Start a sandbox',
        onsubmit: async (e) => {
          e.preventDefault();
          createError.replaceChildren();
          try {
            const sbx = await api('POST', '/v1/sandboxes', { env: envSelect.value });
            location.hash = '#/sandboxes/' + sbx.id;
          } catch (err) { createError.append(errorBox(err)); }
        },
      }, h('label', { for: 'new-env' }, 'Start a sandbox from'), envSelect, h('button.primary', { type: 'submit' }, 'Start')),
      createError,
      h('div.row', { role: 'search', 'aria-label': 'Filter sandboxes' },
        h('label', { for: 'filter-state' }, 'State'), stateFilter,
        h('label', { for: 'filter-env' }, 'Env'), envFilter,
        h('label', ended, ' include ended')),
      status,
      h('div.scroll', { tabindex: 0, role: 'region', 'aria-label': 'Sandboxes table' }, table));
    api('GET', '/v1/envs').then((envs) => {
      envSelect.replaceChildren(...envs.filter((e) => e.published).map((e) => h('option', { value: e.id }, e.name + (e.id !== e.name ? ' (' + e.id + ')' : ''))));
      const debian = envs.find((e) => e.id === 'debian');
      if (debian) envSelect.value = 'debian';
    }).catch((e) => createError.append(errorBox(e)));

    let list = [];
    const usage = {};
    function draw() {
      const want = stateFilter.value; const text = envFilter.value.trim().toLowerCase();
      const rows = list.filter((x) => (want === 'all' || x.state === want) && (!text || x.env.toLowerCase().includes(text)));
      body.replaceChildren(...rows.map((x) => {
        const u = usage[x.id];
        return h('tr', { dataset: { sandbox: x.id } },
          h('td', h('a.mono', { href: '#/sandboxes/' + x.id }, x.id)),
          h('td', state(x.state)),
          h('td', h('a', { href: '#/envs/' + x.env }, x.env)),
          h('td', ago(x.createdAt)),
          h('td', x.expiresAt && !x.endedAt ? duration(x.expiresAt - Date.now() / 1000) : '—'),
          h('td.num', u ? u.cpuUsedPct.toFixed(0) + ' % of ' + u.cpuCount : x.cpu + ' CPU'),
          h('td.num', u ? bytes(u.memUsedBytes) + ' / ' + bytes(u.memTotalBytes) : x.memoryMB + ' MiB'));
      }));
      if (!rows.length) body.append(h('tr', h('td', { colspan: 7 }, list.length ? 'No sandbox matches the filters.' : 'No sandboxes yet.')));
    }
    stateFilter.addEventListener('change', draw);
    envFilter.addEventListener('input', draw);
    ended.addEventListener('change', () => refresh());
    async function refresh() {
      try {
        list = await api('GET', '/v1/sandboxes' + (ended.checked ? '?all=true' : ''));
        list.sort((a, b) => b.createdAt - a.createdAt);
        status.replaceChildren();
      } catch (e) { status.replaceChildren(errorBox(e)); return; }
      draw();
      // The newest sample of each running sandbox's metrics (at most 30 of them).
      await Promise.all(list.filter((x) => x.state === 'running').slice(0, 30).map(async (x) => {
        try {
          const samples = await api('GET', '/v1/sandboxes/' + x.id + '/metrics');
          if (samples.length) usage[x.id] = samples[samples.length - 1];
        } catch (_) { /* it may have just ended */ }
      }));
      draw();
    }
    every(2000, refresh);
  }

  async function sandboxPage(id) {
    const head = h('div');
    const error = h('div', { id: 'action-error' });
    const actions = h('div.actions', { role: 'group', 'aria-label': 'Sandbox actions' });
    const facts = h('dl.facts');
    const termBox = h('div');
    const filesBox = h('div');
    const procs = h('div');
    const charts = h('div.charts');
    const events = h('div');
    page('Sandbox ' + id,
      head, error, actions,
      h('div.grid2',
        h('section.panel', { 'aria-labelledby': 'facts-h' }, h('h2', { id: 'facts-h' }, 'Details'), facts),
        h('section.panel', { 'aria-labelledby': 'metrics-h' }, h('h2', { id: 'metrics-h' }, 'Metrics'), charts)),
      h('section.panel', { 'aria-labelledby': 'term-h' }, h('h2', { id: 'term-h' }, 'Terminal'), termBox),
      h('section.panel', { 'aria-labelledby': 'files-h' }, h('h2', { id: 'files-h' }, 'Files'), filesBox),
      h('div.grid2',
        h('section.panel', { 'aria-labelledby': 'procs-h' }, h('h2', { id: 'procs-h' }, 'Processes'), procs),
        h('section.panel', { 'aria-labelledby': 'events-h' }, h('h2', { id: 'events-h' }, 'Events'), events)));

    let sbx = null;
    async function act(label, fn) {
      error.replaceChildren();
      try { const r = await fn(); say(label + ': done'); await refresh(); return r; } catch (e) { error.replaceChildren(errorBox(e)); return null; }
    }
    const forkCount = h('input', { id: 'fork-count', type: 'number', min: 1, max: 100, value: 1 });
    const snapName = h('input', { id: 'snapshot-name', placeholder: 'env name', size: 12 });
    const extendBy = h('input', { id: 'extend-seconds', type: 'number', min: 1, value: 300 });
    const buttons = {
      pause: h('button', { type: 'button', id: 'btn-pause', onclick: () => act('Pause', () => api('POST', '/v1/sandboxes/' + id + '/pause', {})) }, 'Pause'),
      resume: h('button', { type: 'button', id: 'btn-resume', onclick: () => act('Resume', () => api('POST', '/v1/sandboxes/' + id + '/resume')) }, 'Resume'),
      kill: h('button.danger', {
        type: 'button', id: 'btn-kill',
        onclick: () => { if (confirm('Kill sandbox ' + id + '? Its processes and unsaved files are lost.')) act('Kill', () => api('DELETE', '/v1/sandboxes/' + id)); },
      }, 'Kill'),
    };
    actions.append(buttons.pause, buttons.resume,
      h('form', { 'aria-label': 'Fork', onsubmit: async (e) => {
        e.preventDefault();
        const r = await act('Fork', () => api('POST', '/v1/sandboxes/' + id + '/fork', { count: Number(forkCount.value) }));
        if (r) say('Forked: ' + r.sandboxes.map((x) => x.id).join(', '));
      } }, h('label', { for: 'fork-count' }, 'Forks'), forkCount, h('button', { type: 'submit', id: 'btn-fork' }, 'Fork')),
      h('form', { 'aria-label': 'Snapshot', onsubmit: async (e) => {
        e.preventDefault();
        const r = await act('Snapshot', () => api('POST', '/v1/sandboxes/' + id + '/snapshot', snapName.value ? { name: snapName.value } : {}));
        if (r) say('Snapshot: env ' + r.id);
      } }, h('label', { for: 'snapshot-name' }, 'Snapshot as'), snapName, h('button', { type: 'submit', id: 'btn-snapshot' }, 'Snapshot')),
      h('form', { 'aria-label': 'Extend timeout', onsubmit: (e) => {
        e.preventDefault();
        act('Timeout', () => api('POST', '/v1/sandboxes/' + id + '/timeout', { timeoutSeconds: Number(extendBy.value) }));
      } }, h('label', { for: 'extend-seconds' }, 'Timeout (s from now)'), extendBy, h('button', { type: 'submit', id: 'btn-timeout' }, 'Set')),
      buttons.kill);

    async function refresh() {
      try { sbx = await api('GET', '/v1/sandboxes/' + id); } catch (e) { head.replaceChildren(h('h1', 'Sandbox ', h('span.mono', id))); error.replaceChildren(errorBox(e)); actions.hidden = true; return; }
      if (!head.firstChild) head.append(h('h1', 'Sandbox ', h('span.mono', id), h('span', { id: 'sandbox-state' })));
      const shown = head.querySelector('#sandbox-state');
      if (shown.textContent !== sbx.state) shown.replaceChildren(state(sbx.state));
      const live = !sbx.endedAt;
      buttons.pause.disabled = sbx.state !== 'running';
      buttons.resume.disabled = sbx.state !== 'paused';
      buttons.kill.disabled = !live;
      facts.replaceChildren(...[
        h('dt', 'Env'), h('dd', h('a', { href: '#/envs/' + sbx.env }, sbx.env)),
        h('dt', 'Runtime'), h('dd', sbx.runtime),
        h('dt', 'Created'), h('dd', when(sbx.createdAt) + ' (' + ago(sbx.createdAt) + ' ago)'),
        h('dt', 'Timeout'), h('dd', sbx.expiresAt && live ? duration(sbx.expiresAt - Date.now() / 1000) + ' left' : '—'),
        h('dt', 'Limits'), h('dd', sbx.cpu + ' CPU, ' + sbx.memoryMB + ' MiB' + (sbx.diskMB ? ', ' + sbx.diskMB + ' MiB disk' : '')),
        h('dt', 'Internet'), h('dd', sbx.internet ? (sbx.egress ? 'only ' + sbx.egress.join(', ') : 'yes') : 'no'),
        h('dt', 'Address'), h('dd.mono', sbx.address || '—'),
        sbx.error ? [h('dt', 'Error'), h('dd', sbx.error)] : [],
      ].flat());
      termButton.disabled = sbx.state !== 'running';
    }

    // Terminal: xterm.js over the PTY WebSocket (binary both ways, JSON control as text).
    const termEl = h('div.term', { id: 'terminal' });
    const termState = h('span.sub', { id: 'terminal-state', role: 'status' }, 'not connected');
    const termButton = h('button.primary', { type: 'button', id: 'btn-terminal', onclick: () => connect() }, 'Open terminal');
    const copyButton = h('button', { type: 'button', onclick: () => copySelection() }, 'Copy selection');
    const pasteButton = h('button', { type: 'button', onclick: () => pasteClipboard() }, 'Paste');
    termBox.append(h('div.term-bar', termButton, copyButton, pasteButton, termState), termEl);
    let term = null; let ws = null;
    function connect() {
      if (ws) ws.close();
      if (!term) {
        term = new window.Terminal({ cursorBlink: true, fontSize: 14, rendererType: 'dom', fontFamily: '"DejaVu Sans Mono", monospace', screenReaderMode: true });
        term.open(termEl);
        if (term.textarea) term.textarea.setAttribute('aria-label', 'Terminal input');
        // xterm 3.8's screen-reader rows are list items in a container with no list role (fixed upstream later).
        const tree = termEl.querySelector('.xterm-accessibility-tree');
        if (tree) { tree.setAttribute('role', 'list'); tree.setAttribute('aria-label', 'Terminal output'); }
        const onResize = () => { try { term.fit(); } catch (_) { /* hidden */ } };
        window.addEventListener('resize', onResize);
        cleanup.push(() => window.removeEventListener('resize', onResize));
        term.on('data', (d) => { if (ws && ws.readyState === 1) ws.send(new TextEncoder().encode(d)); });
        term.on('resize', (size) => { if (ws && ws.readyState === 1) ws.send(JSON.stringify({ resize: { cols: size.cols, rows: size.rows } })); });
        cleanup.push(() => term.dispose());
      }
      try { term.fit(); } catch (_) { /* not laid out yet */ }
      const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
      const url = proto + '//' + location.host + '/v1/sandboxes/' + id + '/pty?cols=' + term.cols + '&rows=' + term.rows;
      const decoder = new TextDecoder();
      ws = new WebSocket(url, ['sprout', 'sprout.key.' + sessionStorage.getItem(KEY)]);
      ws.binaryType = 'arraybuffer';
      termState.textContent = 'connecting…';
      ws.onopen = () => { termState.textContent = 'connected'; term.focus(); };
      ws.onmessage = (m) => {
        if (typeof m.data === 'string') {
          const control = JSON.parse(m.data);
          if (control.exit) term.write('\r\n[exited' + (control.exit.code !== undefined ? ' with ' + control.exit.code : '') + ']\r\n');
          if (control.error) term.write('\r\n[error: ' + (control.error.message || control.error) + ']\r\n');
        } else {
          term.write(decoder.decode(new Uint8Array(m.data), { stream: true }));
        }
      };
      ws.onclose = () => { termState.textContent = 'disconnected'; };
      ws.onerror = () => { termState.textContent = 'could not connect (is the sandbox running?)'; };
      const mine = ws;
      cleanup.push(() => mine.close());
    }
    async function copySelection() {
      if (!term || !term.hasSelection()) { say('Select text in the terminal first.'); return; }
      try { await navigator.clipboard.writeText(term.getSelection()); say('Copied.'); } catch (e) { say('Copying needs clipboard access: ' + e.message); }
    }
    async function pasteClipboard() {
      if (!ws || ws.readyState !== 1) { say('Open the terminal first.'); return; }
      try { ws.send(new TextEncoder().encode(await navigator.clipboard.readText())); } catch (e) { say('Pasting needs clipboard access: ' + e.message); }
    }

    // Files: list a folder, go into folders, download, upload, delete.
    let dir = '/root';
    const pathInput = h('input', { id: 'files-path', value: dir, size: 32 });
    const fileRows = h('tbody');
    const fileError = h('div');
    const upload = h('input', { id: 'upload-file', type: 'file' });
    filesBox.append(
      h('form.row', { 'aria-label': 'Folder', onsubmit: (e) => { e.preventDefault(); listDir(pathInput.value); } },
        h('label', { for: 'files-path' }, 'Folder'), pathInput, h('button', { type: 'submit' }, 'List'),
        h('button', { type: 'button', onclick: () => listDir(dir.replace(/\/[^/]+\/?$/, '') || '/') }, 'Up')),
      h('form.row', { 'aria-label': 'Upload', onsubmit: async (e) => {
        e.preventDefault();
        const file = upload.files[0];
        if (!file) { fileError.replaceChildren(errorBox(new Error('Choose a file to upload.'))); return; }
        await listing; // a folder just typed in is "this folder" once its listing answers
        const target = (dir.endsWith('/') ? dir : dir + '/') + file.name;
        try {
          await api('PUT', '/v1/sandboxes/' + id + '/files?path=' + enc(target), file);
          say('Uploaded ' + target);
          upload.value = '';
          listDir(dir);
        } catch (err) { fileError.replaceChildren(errorBox(err)); }
      } }, h('label', { for: 'upload-file' }, 'Upload to this folder'), upload, h('button', { type: 'submit', id: 'btn-upload' }, 'Upload')),
      fileError,
      h('div.scroll', { tabindex: 0, role: 'region', 'aria-label': 'Files table' },
        h('table', { id: 'files' }, h('thead', h('tr', ['Name', 'Size', 'Modified', 'Owner', 'Actions'].map((t) => h('th', { scope: 'col' }, t)))), fileRows)));
    // Listings can overlap (a typed folder, an upload's refresh): only the latest one is drawn,
    // and an upload waits for it, so it lands in the folder the page shows.
    let listing = Promise.resolve(); let listed = 0;
    function listDir(path) { listing = listOnce(path, ++listed); return listing; }
    async function listOnce(path, seq) {
      fileError.replaceChildren();
      try {
        const list = await api('GET', '/v1/sandboxes/' + id + '/files/list?path=' + enc(path));
        if (seq !== listed) return;
        dir = path; pathInput.value = path;
        const entries = list.entries.sort((a, b) => (a.type === 'dir' ? 0 : 1) - (b.type === 'dir' ? 0 : 1) || a.name.localeCompare(b.name));
        fileRows.replaceChildren(...entries.map((f) => h('tr', { dataset: { file: f.name } },
          h('td', f.type === 'dir'
            ? h('button.quiet', { type: 'button', onclick: () => listDir(f.path) }, f.name + '/')
            : h('span.mono', f.name)),
          h('td.num', f.type === 'dir' ? '—' : bytes(f.size)),
          h('td', when(f.mtime)),
          h('td', f.owner || f.uid),
          h('td',
            f.type === 'file' ? h('button', { type: 'button', 'aria-label': 'Download ' + f.name, onclick: () => download(f) }, 'Download') : null, ' ',
            h('button.danger', { type: 'button', 'aria-label': 'Delete ' + f.name, onclick: () => remove(f) }, 'Delete')))));
        if (!entries.length) fileRows.append(h('tr', h('td', { colspan: 5 }, 'Empty folder.')));
      } catch (e) { if (seq === listed) fileError.replaceChildren(errorBox(e)); }
    }
    async function download(f) {
      try {
        const response = await api('GET', '/v1/sandboxes/' + id + '/files?path=' + enc(f.path), undefined, { raw: true });
        const url = URL.createObjectURL(await response.blob());
        const a = h('a', { href: url, download: f.name });
        document.body.append(a); a.click(); a.remove();
        setTimeout(() => URL.revokeObjectURL(url), 10000);
      } catch (e) { fileError.replaceChildren(errorBox(e)); }
    }
    async function remove(f) {
      if (!confirm('Delete ' + f.path + (f.type === 'dir' ? ' and everything in it' : '') + '?')) return;
      try {
        await api('DELETE', '/v1/sandboxes/' + id + '/files?path=' + enc(f.path) + (f.type === 'dir' ? '&recursive=true' : ''));
        say('Deleted ' + f.path);
        listDir(dir);
      } catch (e) { fileError.replaceChildren(errorBox(e)); }
    }

    async function refreshLive() {
      if (!sbx || sbx.state !== 'running') return;
      try {
        const ps = await api('GET', '/v1/sandboxes/' + id + '/processes');
        procs.replaceChildren(ps.length ? h('div.scroll', { tabindex: 0, role: 'region', 'aria-label': 'Processes table' }, h('table', { id: 'processes' },
          h('thead', h('tr', ['Id', 'PID', 'Command', 'Started', 'Status'].map((t) => h('th', { scope: 'col' }, t)))),
          h('tbody', ps.map((p) => h('tr',
            h('td', p.id), h('td', p.pid), h('td.mono', p.cmd.join(' ').slice(0, 80)), h('td', ago(p.startedAt) + ' ago'),
            h('td', p.exit ? 'exited ' + (p.exit.code !== undefined ? p.exit.code : 'by signal ' + p.exit.signal) : 'running'))))))
          : h('p.sub', 'No processes started through the API yet (the terminal is one once opened).'));
      } catch (_) { /* shown by refresh */ }
      try {
        const samples = await api('GET', '/v1/sandboxes/' + id + '/metrics');
        charts.replaceChildren(
          chart('CPU used, %', samples.map((x) => x.cpuUsedPct), 100, (v) => v.toFixed(0) + ' %'),
          chart('Memory used', samples.map((x) => x.memUsedBytes), samples.length ? samples[0].memTotalBytes : 1, bytes),
          chart('Disk used', samples.map((x) => x.diskUsedBytes), null, bytes));
      } catch (_) { /* no metrics yet */ }
    }
    async function refreshEvents() {
      try {
        const list = await api('GET', '/v1/sandboxes/' + id + '/events');
        events.replaceChildren(h('ol', { id: 'events' }, list.slice(-15).reverse().map((e) => h('li', h('strong', e.kind), ' ', e.message || '', h('span.sub', ' · ' + when(e.at))))));
      } catch (_) { /* shown by refresh */ }
    }
    await refresh();
    if (sbx) listDir(dir);
    every(2000, async () => { await refresh(); await refreshLive(); await refreshEvents(); });
  }

  /** A small line chart of `values` (newest last), scaled to `max` (or their largest). */
  function chart(title, samples, max, format) {
    let values = samples;
    const w = 260; const hgt = 64;
    const top = max || Math.max(1, ...values);
    const svg = s('svg', { class: 'spark', viewBox: '0 0 ' + w + ' ' + hgt, role: 'img', 'aria-label': title + ': ' + (values.length ? format(values[values.length - 1]) : 'no samples') });
    if (values.length === 1) values = [values[0], values[0]];
    if (values.length > 1) {
      const pts = values.map((v, i) => (i * w / (values.length - 1)).toFixed(1) + ',' + (hgt - 2 - (v / top) * (hgt - 4)).toFixed(1));
      svg.append(s('polyline', { points: pts.join(' ') }));
    }
    return h('figure.chart', svg, h('figcaption', title + ' — now ' + (values.length ? format(values[values.length - 1]) : '—')));
  }

  // ---- envs: the graph ------------------------------------------------------

  /**
   * Lays envs out like `git log --graph`: newest first, one row each; a
   * child keeps a lane open down to its parent's row, parents share lanes
   * with their first child. Returns rows [{env, lane}] and edges.
   */
  function layout(envs) {
    const byID = new Map(envs.map((e) => [e.id, e]));
    const children = new Map();
    for (const e of envs) if (e.parent && byID.has(e.parent)) (children.get(e.parent) || children.set(e.parent, []).get(e.parent)).push(e);
    // Newest first, but always every child above its parent (a topological order).
    const sorted = envs.slice().sort((a, b) => (b.createdAt || 0) - (a.createdAt || 0) || a.id.localeCompare(b.id));
    const rows = []; const lanes = [];
    for (const e of orderTopDown(sorted)) {
      let lane = lanes.indexOf(e.id);
      if (lane === -1) { lane = lanes.indexOf(null); if (lane === -1) { lane = lanes.length; lanes.push(null); } }
      for (let i = 0; i < lanes.length; i++) if (lanes[i] === e.id) lanes[i] = null;
      lanes[lane] = e.parent && byID.has(e.parent) ? e.parent : null;
      rows.push({ env: e, lane, row: rows.length });
    }
    const rowOf = new Map(rows.map((r) => [r.env.id, r]));
    const edges = rows.filter((r) => r.env.parent && rowOf.has(r.env.parent)).map((r) => ({ from: r, to: rowOf.get(r.env.parent) }));
    return { rows, edges, lanes: Math.max(1, lanes.length) };

    // Children before parents, newest first where free: repeatedly take the
    // newest env whose children are all placed.
    function orderTopDown(all) {
      const left = new Set(all.map((e) => e.id)); const out = [];
      const pending = new Map(all.map((e) => [e.id, (children.get(e.id) || []).length]));
      while (left.size) {
        let best = null;
        for (const e of sorted) if (left.has(e.id) && pending.get(e.id) === 0) { best = e; break; }
        if (!best) best = sorted.find((e) => left.has(e.id)); // a cycle cannot happen; be safe
        left.delete(best.id); out.push(best);
        if (best.parent && pending.has(best.parent)) pending.set(best.parent, pending.get(best.parent) - 1);
      }
      return out;
    }
  }

  function graph(envs, selected) {
    const { rows, edges, lanes } = layout(envs);
    const rowH = 34; const laneW = 18; const width = lanes * laneW + 12;
    const svg = s('svg', { class: 'lanes', width, height: rows.length * rowH, 'aria-hidden': 'true' });
    const x = (lane) => 10 + lane * laneW; const y = (row) => row * rowH + rowH / 2;
    for (const e of edges) {
      const x1 = x(e.from.lane); const y1 = y(e.from.row); const x2 = x(e.to.lane); const y2 = y(e.to.row);
      const d = x1 === x2 ? `M${x1},${y1} L${x2},${y2}` : `M${x1},${y1} L${x1},${y2 - rowH / 2} Q${x1},${y2} ${x2},${y2}`;
      svg.append(s('path', { class: 'edge', d, 'data-from': e.from.env.id, 'data-to': e.to.env.id }));
    }
    for (const r of rows) {
      const color = r.env.builtin ? '#57606a' : r.env.warm ? '#b35c00' : '#1d6b35';
      svg.append(s('circle', { class: 'node', cx: x(r.lane), cy: y(r.row), r: r.env.id === selected ? 7 : 5.5, fill: color, 'data-env': r.env.id }));
    }
    const list = h('ol', { style: 'padding-left:' + width + 'px', 'aria-label': 'Envs, newest first' }, rows.map((r) => {
      const e = r.env;
      return h('li', { dataset: { env: e.id } },
        h('a', { href: '#/envs/' + e.id, 'aria-current': e.id === selected ? 'true' : null }, e.published ? h('span.badge.label', e.name) : e.name),
        e.id !== e.name ? h('span.id.mono', e.id) : null,
        e.builtin ? h('span.badge', 'built-in') : null,
        !e.published ? h('span.badge.draft', 'draft') : null,
        e.warm ? h('span.badge.warm', 'warm') : null,
        e.parent ? h('span.sub', '← ' + e.parent) : null,
        !e.builtin ? h('span.size', bytes(e.ownBytes) + ' own · ' + bytes(e.totalBytes) + ' total') : null);
    }));
    return h('div.graph', { id: 'env-graph' }, svg, list);
  }

  async function envsPage() {
    page('Envs', h('h1', 'Envs ', h('span.sub', 'every env is a commit: parents below, children above')), h('p.sub', 'Loading…'));
    try {
      const envs = await api('GET', '/v1/envs');
      view.replaceChildren(view.firstChild, h('p.sub', envs.length + ' envs. Green: built; orange: warm (starts from a memory image); grey: built-in.'), graph(envs));
    } catch (e) { view.append(errorBox(e)); }
  }

  async function envPage(id) {
    page('Env ' + id, h('h1', 'Env ', h('span.mono', id)));
    let env;
    try { env = await api('GET', '/v1/envs/' + enc(id)); } catch (e) { view.append(errorBox(e)); return; }
    const startError = h('div');
    view.append(
      h('div.actions',
        h('button.primary', { type: 'button', id: 'btn-start', onclick: async () => {
          startError.replaceChildren();
          try { const sbx = await api('POST', '/v1/sandboxes', { env: env.id }); location.hash = '#/sandboxes/' + sbx.id; } catch (e) { startError.append(errorBox(e)); }
        } }, 'Start a sandbox')),
      startError,
      h('section.panel', { 'aria-labelledby': 'env-facts' }, h('h2', { id: 'env-facts' }, 'Details'), h('dl.facts',
        h('dt', 'Name'), h('dd', env.name + (env.published ? ' (published: the name points here)' : ' (draft)')),
        h('dt', 'Parent'), h('dd', env.parent ? h('a', { href: '#/envs/' + env.parent }, env.parent) : '—'),
        h('dt', 'Base'), h('dd', env.base),
        h('dt', 'Layers'), h('dd', String(env.layers.length)),
        h('dt', 'Size'), h('dd', bytes(env.ownBytes) + ' own, ' + bytes(env.totalBytes) + ' with its chain'),
        h('dt', 'Warm'), h('dd', env.warm ? 'yes: sandboxes restore a memory image' : 'no'),
        h('dt', 'Created'), h('dd', when(env.createdAt)))));
    const configBox = h('section.panel', { 'aria-labelledby': 'env-config' }, h('h2', { id: 'env-config' }, 'Config'));
    const logBox = h('section.panel', { 'aria-labelledby': 'env-log' }, h('h2', { id: 'env-log' }, 'Build log'));
    const graphBox = h('section.panel', { 'aria-labelledby': 'env-tree' }, h('h2', { id: 'env-tree' }, 'History'));
    view.append(configBox, logBox, graphBox);
    try {
      const [all, builds] = await Promise.all([api('GET', '/v1/envs'), api('GET', '/v1/builds?env=' + enc(env.id) + '&limit=1')]);
      // The env's own line: its ancestors and descendants.
      const tree = await api('GET', '/v1/envs/' + enc(env.id) + '/tree');
      const keep = new Set([env.id, ...tree.ancestors, ...tree.descendants.map((d) => d.id)]);
      graphBox.append(graph(all.filter((e) => keep.has(e.id)), env.id));
      if (!builds.length) {
        configBox.append(h('p.sub', env.builtin ? 'A built-in env: no config of its own.' : 'Not made by a push (a snapshot of a sandbox): no config or build log.'));
        logBox.hidden = true;
        return;
      }
      const build = await api('GET', '/v1/builds/' + builds[0].id);
      const c = build.config;
      configBox.append(c ? h('pre.log', { id: 'env-config-text' }, configText(c)) : h('p.sub', 'This build kept no config.'));
      logBox.append(h('p', h('a', { href: '#/builds/' + build.id }, 'Build ' + build.id), ' ', state(build.status)));
      const log = await api('GET', '/v1/builds/' + build.id + '/logs', undefined, { raw: true });
      logBox.append(h('pre.log', await log.text()));
    } catch (e) { configBox.append(errorBox(e)); }
  }

  /** The pushed config, written back as sprout.toml. */
  function configText(c) {
    const q = (v) => JSON.stringify(v);
    const lines = ['from = ' + q(c.from)];
    if (c.run && c.run.length) lines.push('run = [', ...c.run.map((r) => '  ' + q(r) + ','), ']');
    if (c.start) lines.push('start = ' + q(c.start));
    if (c.ready) lines.push('ready = ' + q(c.ready));
    if (c.cpu) lines.push('cpu = ' + c.cpu);
    if (c.memoryMB) lines.push('memory_mb = ' + c.memoryMB);
    if (c.timeoutSeconds) lines.push('timeout = ' + c.timeoutSeconds);
    if (c.files && c.files.length) lines.push('', '# files (' + c.files.length + ')', ...c.files.slice(0, 200).map((f) => '#   ' + f.path + '  ' + f.sha256.slice(0, 12)));
    return lines.join('\n');
  }

  // ---- builds --------------------------------------------------------------

  async function buildsPage() {
    const body = h('tbody');
    const error = h('div');
    page('Builds', h('h1', 'Builds'), error,
      h('div.scroll', { tabindex: 0, role: 'region', 'aria-label': 'Builds table' }, h('table', { id: 'builds' },
        h('thead', h('tr', ['Build', 'Env', 'Status', 'Steps', 'Started', 'Took'].map((t) => h('th', { scope: 'col' }, t)))), body)));
    every(2000, async () => {
      try {
        const builds = await api('GET', '/v1/builds?limit=100');
        error.replaceChildren();
        body.replaceChildren(...builds.map((b) => h('tr', { dataset: { build: b.id } },
          h('td', h('a.mono', { href: '#/builds/' + b.id }, b.id)),
          h('td', h('a', { href: '#/envs/' + b.envID }, b.envID)),
          h('td', state(b.status)),
          h('td', b.steps + (b.cachedSteps ? ' (' + b.cachedSteps + ' cached)' : '')),
          h('td', when(b.createdAt)),
          h('td', b.finishedAt ? duration(b.finishedAt - b.createdAt) : 'running for ' + ago(b.createdAt)))));
        if (!builds.length) body.append(h('tr', h('td', { colspan: 6 }, 'No builds yet: sprout env push makes one.')));
      } catch (e) { error.replaceChildren(errorBox(e)); }
    });
  }

  async function buildPage(id) {
    const head = h('div'); const pre = h('pre.log', { id: 'build-log', 'aria-live': 'off' });
    page('Build ' + id, h('h1', 'Build ', h('span.mono', id)), head, h('section.panel', { 'aria-labelledby': 'log-h' }, h('h2', { id: 'log-h' }, 'Log'), pre));
    let build;
    try { build = await api('GET', '/v1/builds/' + id); } catch (e) { head.append(errorBox(e)); return; }
    const describe = (b) => head.replaceChildren(h('p', 'Env ', h('a', { href: '#/envs/' + b.envID }, b.envID), ' ', h('span', { id: 'build-status' }, state(b.status)),
      b.error ? h('span.error', ' ' + b.error) : null,
      b.status === 'running' ? h('button.danger', { type: 'button', onclick: async () => {
        try { describe(await api('DELETE', '/v1/builds/' + id)); } catch (e) { head.append(errorBox(e)); }
      } }, 'Cancel') : null));
    describe(build);
    // Follow the log while it runs (the server ends the stream with the build).
    const abort = new AbortController();
    cleanup.push(() => abort.abort());
    try {
      const response = await api('GET', '/v1/builds/' + id + '/logs?follow=true', undefined, { raw: true, signal: abort.signal });
      const reader = response.body.getReader(); const decoder = new TextDecoder();
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        const stick = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
        pre.append(decoder.decode(value, { stream: true }));
        if (stick) pre.scrollTop = pre.scrollHeight;
      }
      describe(await api('GET', '/v1/builds/' + id));
    } catch (e) { if (e.name !== 'AbortError') head.append(errorBox(e)); }
  }

  // ---- keys (admins) --------------------------------------------------------

  async function keysPage() {
    if (!me.admin) { page('Keys', h('h1', 'Keys'), errorBox(new Error('Managing keys needs an admin key.'))); return; }
    const body = h('tbody'); const error = h('div'); const shown = h('div', { id: 'new-secret' });
    const name = h('input', { id: 'key-name', required: true, size: 14 });
    const team = h('input', { id: 'key-team', value: me.team, size: 12 });
    const admin = h('input', { id: 'key-admin', type: 'checkbox' });
    page('Keys', h('h1', 'API keys'),
      h('form.row.panel', { 'aria-label': 'Create a key', onsubmit: async (e) => {
        e.preventDefault();
        error.replaceChildren(); shown.replaceChildren();
        try {
          const made = await api('POST', '/v1/keys', { name: name.value, team: team.value || me.team, admin: admin.checked });
          shown.append(h('div.secret', { role: 'alert' }, h('strong', 'Key ' + made.key.id + ' — copy its secret now, it is not shown again: '), h('code', { id: 'secret-text' }, made.secret)));
          name.value = '';
          load();
        } catch (err) { error.append(errorBox(err)); }
      } },
      h('label', { for: 'key-name' }, 'Name'), name, h('label', { for: 'key-team' }, 'Team'), team,
      h('label', admin, ' admin'), h('button.primary', { type: 'submit' }, 'Create key')),
      shown, error,
      h('div.scroll', { tabindex: 0, role: 'region', 'aria-label': 'Keys table' }, h('table', { id: 'keys' },
        h('thead', h('tr', ['Key', 'Name', 'Team', 'Secret starts', 'Admin', 'Created', 'Status', ''].map((t, i) => h('th', { scope: 'col' }, t || h('span', { class: 'sub' }, 'Actions'))))), body)));
    async function load() {
      try {
        const keys = await api('GET', '/v1/keys');
        body.replaceChildren(...keys.map((k) => h('tr', { dataset: { key: k.id } },
          h('td.mono', k.id), h('td', k.name), h('td', k.team), h('td.mono', k.prefix + '…'), h('td', k.admin ? 'yes' : 'no'),
          h('td', when(k.createdAt)), h('td', k.revokedAt ? 'revoked ' + when(k.revokedAt) : 'active'),
          h('td', k.revokedAt || k.id === me.keyID ? (k.id === me.keyID ? h('span.sub', 'this key') : null) : h('button.danger', {
            type: 'button', 'aria-label': 'Revoke ' + k.name,
            onclick: async () => {
              if (!confirm('Revoke key ' + k.name + '? Everything using it stops at once.')) return;
              try { await api('DELETE', '/v1/keys/' + k.id); say('Revoked ' + k.name); load(); } catch (err) { error.replaceChildren(errorBox(err)); }
            },
          }, 'Revoke')))));
      } catch (e) { error.replaceChildren(errorBox(e)); }
    }
    load();
  }

  route();
})();
