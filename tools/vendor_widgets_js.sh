#!/usr/bin/env bash
# Fetch MathJax from the npm registry into book/_widgets_js/vendor/, so the HTML book renders formulas offline
# (Sphinx loads MathJax from a CDN by default). The widgets need no vendored code: their page versions are drawn
# by segnotes/widgets/static/segnotes-widgets.js, the package's own script.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
out="$top/book/_widgets_js/vendor"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cd "$tmp"
npm pack --silent mathjax@3.2.2 >/dev/null
mkdir mj
tar xzf mathjax-3.2.2.tgz -C mj
# MathJax: Sphinx's default component (TeX and MathML in, CommonHTML out), its fonts, and the TeX
# extensions it loads on demand (\require, autoloaded macros). The speech and braille (a11y, sre)
# options of its menu stay unavailable offline.
rm -rf "$out/mathjax"
mkdir -p "$out/mathjax/output/chtml/fonts" "$out/mathjax/input/tex"
cp mj/package/es5/tex-mml-chtml.js mj/package/LICENSE "$out/mathjax/"
cp -r mj/package/es5/output/chtml/fonts/woff-v2 "$out/mathjax/output/chtml/fonts/"
cp -r mj/package/es5/input/tex/extensions "$out/mathjax/input/tex/"
echo "vendored into $out"
