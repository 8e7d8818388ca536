// The dashboard's sandbox pages: the list, and one sandbox (files, terminal,
// metrics, events). Loaded after app.js.
'use strict';

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
  let readFailed = false;  // the last read of the sandbox failed: its error is shown, its actions hidden
  // While an action runs (a pause, say), the page asks nothing of the sandbox's
  // own processes: the server would refuse them (409) until it is running again.
  let acting = 0;
  let asking = Promise.resolve();  // the processes request under way, if any
  async function act(label, fn) {
    error.replaceChildren();
    acting += 1;
    await asking;
    try { const r = await fn(); say(label + ': done'); await refresh(); return r; } catch (e) { error.replaceChildren(errorBox(e)); return null; } finally { acting -= 1; }
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
    // One heading, with its state, whether or not this read succeeds: a
    // failed read (a refresh racing a kill, say) must not leave a later one without it.
    if (!head.firstChild) head.append(h('h1', 'Sandbox ', h('span.mono', id), h('span', { id: 'sandbox-state' })));
    try { sbx = await api('GET', '/v1/sandboxes/' + id); } catch (e) { error.replaceChildren(errorBox(e)); actions.hidden = true; readFailed = true; return; }
    if (readFailed) { error.replaceChildren(); actions.hidden = false; readFailed = false; }
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
    if (!sbx || sbx.state !== 'running' || acting > 0) return;
    try {
      const request = api('GET', '/v1/sandboxes/' + id + '/processes');
      asking = request.catch(() => null);
      const ps = await request;
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
