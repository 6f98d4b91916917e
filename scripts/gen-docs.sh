#!/usr/bin/env bash
# Regenerates docs/generated/ (dialect, ops, attributes, passes) from the ODS
# definitions. test/Docs/docs-up-to-date.test fails when they are stale.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh mlir-doc >/dev/null
rm -rf docs/generated
(cd build/docs && find . -name '*.md' -exec install -D -m 644 {} ../../docs/generated/{} \;)
echo "docs/generated/ updated:"
find docs/generated -name '*.md' | sort
