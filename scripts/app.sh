#!/usr/bin/env bash
# Start the workbench on the shipped default model: bash scripts/app.sh [PORT]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/streamlit run streamlit_app.py --server.port "${1:-${PORT:-8501}}" --server.headless true
