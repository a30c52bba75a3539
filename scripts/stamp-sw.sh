#!/usr/bin/env bash
# Stamp the service worker with the build it caches: each file's SHA-256 into HASHES, a hash of
# them all into BUILD (so a rebuilt page is a new service worker with its own cache). Run by
# trunk after each build (Trunk.toml's post_build hook, in its staging folder), or by hand on a
# built site: bash scripts/stamp-sw.sh dist
set -euo pipefail
dir="${TRUNK_STAGING_DIR:-${1:?usage: bash scripts/stamp-sw.sh SITE_DIR}}"
cd "$dir"
sha256() {
  if command -v sha256sum >/dev/null; then sha256sum "$1"; else shasum -a 256 "$1"; fi | cut -d' ' -f1
}
# The files sw.js caches (its ASSETS), in its order.
assets=(index.html style.css app.js viewer.js worker.js engine.js nvnet-web.js nvnet-web_bg.wasm
  nvnet-web-relaxed.js nvnet-web-relaxed_bg.wasm)
hashes="" all=""
for a in "${assets[@]}"; do
  h=$(sha256 "$a")
  hashes+="'$a': '$h', "
  all+="$h"
done
build=$(printf %s "$all" | { if command -v sha256sum >/dev/null; then sha256sum; else shasum -a 256; fi; } | cut -c1-16)
sed -i.bak -e "s|^const BUILD = '[0-9a-z]*';|const BUILD = '$build';|" \
  -e "s|^const HASHES = {.*};|const HASHES = { $hashes};|" sw.js
rm -f sw.js.bak
grep -q "^const BUILD = '$build';" sw.js || { echo "stamp-sw.sh: sw.js has no BUILD line" >&2; exit 1; }
