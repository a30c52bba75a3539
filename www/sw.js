// Offline after the first load: the page's own static files, cache first. Only GETs of this
// origin are ever handled; nothing is sent anywhere.
const CACHE = 'nvnet-v1';
const ASSETS = ['./', './index.html', './style.css', './app.js', './viewer.js', './worker.js',
  './nvnet-web.js', './nvnet-web_bg.wasm'];

self.addEventListener('install', (event) => {
  // force-cache: take what the first load just downloaded from the HTTP cache, so that going
  // offline-ready does not download the engine a second time.
  const requests = ASSETS.map((url) => new Request(url, { cache: 'force-cache' }));
  event.waitUntil(caches.open(CACHE).then((c) => c.addAll(requests)).then(() => self.skipWaiting()));
});

self.addEventListener('activate', (event) => {
  event.waitUntil(caches.keys()
    .then((keys) => Promise.all(keys.filter((k) => k !== CACHE).map((k) => caches.delete(k))))
    .then(() => self.clients.claim()));
});

self.addEventListener('fetch', (event) => {
  const url = new URL(event.request.url);
  if (event.request.method !== 'GET' || url.origin !== self.location.origin) return;
  // Network first (a rebuilt page is picked up), the cache when offline.
  event.respondWith(fetch(event.request).then((response) => {
    if (response.ok) {
      const copy = response.clone();
      caches.open(CACHE).then((c) => c.put(event.request, copy));
    }
    return response;
  }).catch(() => caches.match(event.request, { ignoreSearch: true })));
});
