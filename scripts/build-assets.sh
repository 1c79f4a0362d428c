#!/usr/bin/env bash
# Vendors the dashboard's front-end libraries from the npm registry, at the versions
# pinned in src/tidal/dashboard/assets/package-lock.json, into
# src/tidal/dashboard/static/vendor/ (git-ignored). The dashboard loads them from there:
# it never fetches anything from a CDN, so it works offline.
set -euo pipefail
cd "$(dirname "$0")/.."
src=src/tidal/dashboard/assets
work=build/npm
out=src/tidal/dashboard/static/vendor
if ! command -v npm >/dev/null; then
  echo "assets: npm is needed to fetch the dashboard's libraries (Debian: apt-get install npm)" >&2
  exit 1
fi
mkdir -p "$work"
cp "$src/package.json" "$src/package-lock.json" "$work/"
# --ignore-scripts: no package runs code at install time.
npm ci --prefix "$work" --no-audit --no-fund --ignore-scripts --loglevel=error
modules="$work/node_modules"
rm -rf "$out.tmp"
mkdir -p "$out.tmp/licenses"
cp "$modules/@json-editor/json-editor/dist/jsoneditor.js" "$out.tmp/"
cp "$modules/chart.js/dist/chart.umd.min.js" "$out.tmp/"
cp "$modules/@json-editor/json-editor/LICENSE" "$out.tmp/licenses/json-editor.txt"
cp "$modules/@json-editor/json-editor/dist/jsoneditor.js.LICENSE.txt" "$out.tmp/licenses/json-editor-bundled.txt"
cp "$modules/chart.js/LICENSE.md" "$out.tmp/licenses/chart.js.md"
cp "$modules/core-js/LICENSE" "$out.tmp/licenses/core-js.txt"
rm -rf "$out"
mv "$out.tmp" "$out"
echo "assets: vendored $(cd "$out" && ls -- *.js | tr '\n' ' ')into $out"
