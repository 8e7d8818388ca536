// Sprout's dashboard: one page, plain DOM, talking to the same /v1 API as
// every client. The API key lives in this tab's sessionStorage only: it goes
// in the X-API-Key header, and for the terminal's WebSocket in a subprotocol
// (a browser cannot set headers there; a URL would leak it into logs).
// Scripts share one global scope, loaded in order: this one (helpers, the
// API, sign in, routing), then sandboxes.js, envs.js, admin.js.
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

// The pages are defined by the scripts loaded after this one: looked up when a route is taken.
const routes = [
  [/^#\/sandboxes$/, () => sandboxesPage],
  [/^#\/sandboxes\/([\w-]+)$/, () => sandboxPage],
  [/^#\/envs$/, () => envsPage],
  [/^#\/envs\/([\w.-]+)$/, () => envPage],
  [/^#\/builds$/, () => buildsPage],
  [/^#\/builds\/([\w-]+)$/, () => buildPage],
  [/^#\/keys$/, () => keysPage],
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
  for (const [pattern, pageOf] of routes) {
    const m = hash.match(pattern);
    if (m) {
      view.replaceChildren();
      await pageOf()(...m.slice(1));
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

window.addEventListener('DOMContentLoaded', route);
