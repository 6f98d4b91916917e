#!/usr/bin/env bash
# Regenerates docs/generated/ (dialect, ops, attributes, passes) from the ODS
# definitions. test/Docs/docs-up-to-date.test fails when they are stale.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh mlir-doc >/dev/null
mkdir -p docs/generated
cp build/docs/Dialects/MoEDialect.md docs/generated/MoEDialect.md
cp build/docs/Passes/MoEPasses.md docs/generated/MoEPasses.md
echo "docs/generated/ updated"
