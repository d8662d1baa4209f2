#!/usr/bin/env bash
# Set up (if needed), convert the bundled GPU-only example, and show it running on CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
mkdir -p out
export TF_CPP_MIN_LOG_LEVEL=3
echo "$ python -m graphfix examples/cudnn_lstm_gru.pb -o out/cudnn_lstm_gru_cpu.pb --force"
.venv/bin/python -m graphfix examples/cudnn_lstm_gru.pb -o out/cudnn_lstm_gru_cpu.pb --force
.venv/bin/python scripts/run_example.py examples/cudnn_lstm_gru.pb out/cudnn_lstm_gru_cpu.pb examples/cudnn_lstm_gru.npz
