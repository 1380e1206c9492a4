#!/usr/bin/env bash
# Fetch the widget manager's JavaScript and MathJax from the npm registry into book/_widgets_js/vendor/,
# so the HTML book renders widgets and formulas offline (myst-nb and Sphinx load them from CDNs by default).
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
out="$top/book/_widgets_js/vendor"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cd "$tmp"
npm pack --silent @jupyter-widgets/html-manager@1.0.6 requirejs@2.3.7 mathjax@3.2.2 >/dev/null
mkdir hm rq mj
tar xzf jupyter-widgets-html-manager-1.0.6.tgz -C hm
tar xzf requirejs-2.3.7.tgz -C rq
tar xzf mathjax-3.2.2.tgz -C mj
mkdir -p "$out/html-manager"
cp hm/package/dist/embed-amd.js hm/package/dist/*.{woff,woff2,ttf,eot,svg} "$out/html-manager/"
cp hm/package/LICENSE "$out/html-manager/LICENSE"
cp rq/package/require.js "$out/require.js"
# MathJax: Sphinx's default component (TeX and MathML in, CommonHTML out), its fonts, and the TeX
# extensions it loads on demand (\require, autoloaded macros). The speech and braille (a11y, sre)
# options of its menu stay unavailable offline.
rm -rf "$out/mathjax"
mkdir -p "$out/mathjax/output/chtml/fonts" "$out/mathjax/input/tex"
cp mj/package/es5/tex-mml-chtml.js mj/package/LICENSE "$out/mathjax/"
cp -r mj/package/es5/output/chtml/fonts/woff-v2 "$out/mathjax/output/chtml/fonts/"
cp -r mj/package/es5/input/tex/extensions "$out/mathjax/input/tex/"
echo "vendored into $out"
