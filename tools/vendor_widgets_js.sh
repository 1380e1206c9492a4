#!/usr/bin/env bash
# Fetch the widget manager's JavaScript from the npm registry into book/_widgets_js/vendor/,
# so the HTML book renders widgets offline (myst-nb's default loads them from CDNs).
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
out="$top/book/_widgets_js/vendor"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cd "$tmp"
npm pack --silent @jupyter-widgets/html-manager@1.0.6 requirejs@2.3.7 >/dev/null
mkdir hm rq
tar xzf jupyter-widgets-html-manager-1.0.6.tgz -C hm
tar xzf requirejs-2.3.7.tgz -C rq
mkdir -p "$out/html-manager"
cp hm/package/dist/embed-amd.js hm/package/dist/*.{woff,woff2,ttf,eot,svg} "$out/html-manager/"
cp hm/package/LICENSE "$out/html-manager/LICENSE"
cp rq/package/require.js "$out/require.js"
echo "vendored into $out"
