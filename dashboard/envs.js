// The dashboard's env pages: the env graph and one env. Loaded after app.js.
'use strict';

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
