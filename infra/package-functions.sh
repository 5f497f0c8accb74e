#!/usr/bin/env bash
# Package the Cloud Functions source: functions/main.py and its requirements, and the askflow core as a local package
# (./askflow_core) without the dev/ room (the local stack and the demo are never deployed).
# Writes build/functions/ (what `gcloud functions deploy --source` takes) and build/functions-source.zip (Terraform's).
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf build/functions build/functions-source.zip
mkdir -p build/functions/askflow_core
cp functions/main.py functions/requirements.txt build/functions/
cp -r askflow pyproject.toml README.md build/functions/askflow_core/
rm -rf build/functions/askflow_core/askflow/dev
find build/functions -name __pycache__ -type d -prune -exec rm -rf {} +
(cd build/functions && python3 -m zipfile -c ../functions-source.zip .)
echo "build/functions-source.zip"
