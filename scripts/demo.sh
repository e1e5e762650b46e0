#!/usr/bin/env bash
# Serve the embedded default model (SmolLM2-135M-Instruct on llama.cpp) offline, ask it one question,
# then keep serving until Ctrl-C. DEMO_ONCE=1 stops after the answer.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
PORT="${PORT:-8000}"
export AIRLOCK_HOME="${AIRLOCK_HOME:-$PWD/.airlock-demo}"
export HF_HUB_OFFLINE=1

KEY="$($BIN/airlock keys create "demo-$(date +%s)" --quiet)"
$BIN/airlock serve --port "$PORT" &
SERVER=$!
trap 'kill -TERM $SERVER 2>/dev/null; wait $SERVER 2>/dev/null' EXIT INT TERM

for _ in $(seq 1 120); do
  curl -sf "http://127.0.0.1:$PORT/ready" >/dev/null && break
  kill -0 $SERVER 2>/dev/null || { echo "airlock serve exited" >&2; exit 1; }
  sleep 0.5
done

QUESTION="What is the capital of France? Answer in one sentence."
echo
echo "> $QUESTION"
curl -sf "http://127.0.0.1:$PORT/v1/chat/completions" \
  -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' \
  -d "{\"model\": \"default\", \"temperature\": 0, \"max_tokens\": 48,
       \"messages\": [{\"role\": \"user\", \"content\": \"$QUESTION\"}]}" \
  | $BIN/python -c 'import json,sys; r=json.load(sys.stdin); print(r["choices"][0]["message"]["content"].strip()); print("[%s; %d prompt + %d completion tokens]" % (r["model"], r["usage"]["prompt_tokens"], r["usage"]["completion_tokens"]))'
echo
if [[ "${DEMO_ONCE:-0}" == "1" ]]; then exit 0; fi
echo "Serving on http://127.0.0.1:$PORT/v1 with the key: $KEY"
echo "  curl http://127.0.0.1:$PORT/v1/chat/completions -H 'Authorization: Bearer $KEY' -H 'Content-Type: application/json' -d '{\"model\": \"default\", \"messages\": [{\"role\": \"user\", \"content\": \"Hello\"}]}'"
echo "Ctrl-C stops."
wait $SERVER
