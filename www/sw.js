// Offline after the first load: exactly the page's own files, kept as one set per build.
// The build (scripts/stamp-sw.sh, a trunk post_build hook) writes into BUILD a hash of the
// set and into HASHES each file's SHA-256: a rebuilt page is a new service worker with its own
// cache, installed whole (every file checked against its hash) or not at all, so the engine's
// glue (nvnet-web.js) and its wasm are never served from two builds. Nothing is sent anywhere.
// Of the engine's two builds it keeps the one this browser runs (engine.js, as the worker).
importScripts('./engine.js');
const BUILD = 'unstamped';
const HASHES = {};
const PREFIX = 'nvnet-';
const CACHE = PREFIX + BUILD;
const ASSETS = ['index.html', 'style.css', 'app.js', 'viewer.js', 'worker.js', 'engine.js',
  'nvnet-web.js', 'nvnet-web_bg.wasm', 'nvnet-web-relaxed.js', 'nvnet-web-relaxed_bg.wasm'];
// What the install fetches: the page's files and this browser's engine.
const KEPT = ASSETS.filter((name) => !name.startsWith('nvnet-web')
  || name === nvnetEngine.glue || name === nvnetEngine.wasm);

const scope = new URL(self.registration.scope);
// The asset a request of this origin names, or null ('' and 'index.html' are the page).
function assetOf(request) {
  const url = new URL(request.url);
  if (request.method !== 'GET' || url.origin !== scope.origin) return null;
  if (!url.pathname.startsWith(scope.pathname)) return null;
  const name = url.pathname.slice(scope.pathname.length) || 'index.html';
  return ASSETS.includes(name) ? name : null;
}

async function sha256(buffer) {
  const digest = new Uint8Array(await crypto.subtle.digest('SHA-256', buffer));
  return Array.from(digest, (b) => b.toString(16).padStart(2, '0')).join('');
}

// This build's copy of a file: from the HTTP cache when it holds this build's (the first load
// just downloaded it: the engine crosses the wire once), else from the server.
async function fetchChecked(name) {
  for (const cache of ['force-cache', 'reload']) {
    const response = await fetch(new URL(name, scope), { cache });
    if (!response.ok) throw new Error(`${name}: HTTP ${response.status}`);
    if (await sha256(await response.clone().arrayBuffer()) === HASHES[name]) return response;
  }
  throw new Error(`${name}: the server has another build's file`);
}

// Every file must be the one this build names; else the install fails, this worker is
// discarded and the previous one (and its cache) stays.
async function install() {
  if (BUILD === 'unstamped') throw new Error('sw.js was not stamped by the build');
  const files = [];
  for (const name of KEPT) files.push([name, await fetchChecked(name)]);
  const cache = await caches.open(CACHE);
  try {
    for (const [name, response] of files) await cache.put(new URL(name, scope), response);
  } catch (err) {
    await caches.delete(CACHE);
    throw err;
  }
}

// No skipWaiting: a page open on the previous build keeps that build's files (its worker may
// still load the engine) until every such page is closed; then this build takes over.
self.addEventListener('install', (event) => {
  event.waitUntil(install());
});

// Only nvnet's own caches of other builds are removed (other apps may share this origin).
self.addEventListener('activate', (event) => {
  event.waitUntil(caches.keys()
    .then((keys) => Promise.all(keys
      .filter((k) => k.startsWith(PREFIX) && k !== CACHE)
      .map((k) => caches.delete(k))))
    .then(() => self.clients.claim()));
});

// This build's files from this build's cache; everything else goes to the network untouched.
self.addEventListener('fetch', (event) => {
  const name = assetOf(event.request);
  if (name === null) return;
  event.respondWith(caches.open(CACHE)
    .then((cache) => cache.match(new URL(name, scope)))
    .then((hit) => hit || fetch(event.request)));
});
