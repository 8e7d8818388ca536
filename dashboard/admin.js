// The dashboard's build pages and (for admins) API keys. Loaded after app.js.
'use strict';

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
