#!/usr/bin/env bash
# Installs what the page needs, onnxruntime-web, from the npm registry at the version package-lock.json pins
# (web/node_modules, not committed). Then serve the repository and open the page:
#   python -m http.server 8000     (from the repository root)  ->  http://localhost:8000/web/
set -euo pipefail
cd "$(dirname "$0")"
command -v npm >/dev/null || { echo "error: npm (Node.js) is needed to install onnxruntime-web" >&2; exit 2; }
npm ci --no-audit --no-fund --ignore-scripts --loglevel=error
echo "web/: onnxruntime-web $(node -p 'require("./node_modules/onnxruntime-web/package.json").version') installed"
