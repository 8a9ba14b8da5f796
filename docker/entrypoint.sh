#!/usr/bin/env bash
# Entry point of the calo-log-analytics image; runs under tini (PID 1 reaps orphans, passes signals here).
#
#   ARGS...         the one-shot CLI: calo-logs-analyzer ARGS... (the default; no arguments: --help)
#   serve [ARGS]    the Dagster service: dagster-webserver on $CALO_HOST:$CALO_PORT (ARGS go to it)
#                   and dagster-daemon, both watched: when one stops, the other is stopped too
#   downloads ARGS  the report downloads app: python -m calo_assets.downloads ARGS; `downloads serve`
#                   listens on $CALO_HOST:$CALO_DOWNLOADS_PORT (default 3100) unless ARGS say otherwise
#   healthcheck     what HEALTHCHECK runs: asks the running service (Dagster: /server_info and a live
#                   daemon; downloads: /signin); in CLI mode there is no service and it succeeds
#
# Files are written world-readable (umask $CALO_UMASK, default 0022). On Linux, run with
# --user "$(id -u):$(id -g)" so the reports belong to you.
set -euo pipefail

umask "${CALO_UMASK:-0022}"
# Under --user with a uid the image does not know, HOME is "/": give Python a writable one.
if [ ! -w "${HOME:-/}" ]; then export HOME=/tmp; fi

WORKSPACE=/app/workspace.yaml
# Written by the long-running modes, read by `healthcheck`: "<kind> <pid> <pid or -> <port>".
STATE_FILE=/tmp/calo-service

say() { echo "calo-log-analytics: $*" >&2; }

hint_write() {
  echo "hint: the container runs as uid $(id -u) (gid $(id -g)); on Linux pass your own ids with" \
       "--user \"\$(id -u):\$(id -g)\", or make the folder writable by that uid (a named volume is)" >&2
}

# Run "$@" as a child, pass TERM/INT/HUP on to it, and return its exit status.
# (A background child of a non-interactive shell ignores SIGINT, so every stop request becomes SIGTERM;
# `<&0` keeps its stdin, which would otherwise be /dev/null.)
run_child() {
  "$@" <&0 &
  local child=$! status=0
  trap 'kill -TERM "$child" 2>/dev/null || true' TERM INT HUP
  wait "$child" || status=$?
  while kill -0 "$child" 2>/dev/null; do  # wait was cut short by a signal: wait for the real exit
    status=0
    wait "$child" || status=$?
  done
  trap - TERM INT HUP
  return "$status"
}

cli() {
  local status=0
  run_child calo-logs-analyzer "$@" || status=$?
  if [ "$status" -eq 4 ]; then hint_write; fi  # 4: the CLI cannot write to --out
  exit "$status"
}

writable_dir() {  # create the folder if needed and check this user can write into it
  local what=$1 dir=$2
  if mkdir -p "$dir" 2>/dev/null && [ -w "$dir" ] && [ -x "$dir" ]; then return 0; fi
  echo "error: cannot write to $what $dir" >&2
  hint_write
  exit 4
}

serve() {
  : "${DAGSTER_HOME:?DAGSTER_HOME must be set}"
  writable_dir DAGSTER_HOME "$DAGSTER_HOME"
  writable_dir CALO_STORAGE "$CALO_STORAGE"
  writable_dir CALO_REPORTS "$CALO_REPORTS"
  if [ ! -d "$CALO_INBOX" ]; then
    say "inbox $CALO_INBOX does not exist: creating it (mount your drop folder there)"
    mkdir -p "$CALO_INBOX" || { echo "error: cannot create CALO_INBOX $CALO_INBOX" >&2; exit 4; }
  fi
  # The image's instance settings (run monitoring, retries, the worker-checking launcher) always apply:
  # a volume from an older image must not keep a dagster.yaml without them.
  if ! cmp -s /app/dagster.yaml "$DAGSTER_HOME/dagster.yaml"; then
    cp /app/dagster.yaml "$DAGSTER_HOME/dagster.yaml"
    say "installed the image's dagster.yaml into $DAGSTER_HOME"
  fi
  say "inbox $CALO_INBOX, storage $CALO_STORAGE, reports $CALO_REPORTS, DAGSTER_HOME $DAGSTER_HOME"
  say "starting dagster-daemon, and dagster-webserver on $CALO_HOST:$CALO_PORT"

  local daemon web status=0 stopping=""
  dagster-daemon run -w "$WORKSPACE" &
  daemon=$!
  dagster-webserver -h "$CALO_HOST" -p "$CALO_PORT" -w "$WORKSPACE" "$@" &
  web=$!
  echo "dagster $daemon $web $CALO_PORT" > "$STATE_FILE"
  trap 'stopping=1; kill -TERM "$daemon" "$web" 2>/dev/null || true' TERM INT HUP

  wait -n "$daemon" "$web" || status=$?
  if [ -z "$stopping" ]; then  # one of the two stopped on its own: the service is not whole
    if kill -0 "$web" 2>/dev/null; then say "dagster-daemon exited ($status): stopping the webserver"
    else say "dagster-webserver exited ($status): stopping the daemon"; fi
    [ "$status" -ne 0 ] || status=1
    kill -TERM "$daemon" "$web" 2>/dev/null || true
  fi
  while kill -0 "$daemon" 2>/dev/null || kill -0 "$web" 2>/dev/null; do wait || true; done
  rm -f "$STATE_FILE"
  if [ -n "$stopping" ]; then say "stopped"; exit 0; fi
  exit "$status"
}

downloads() {
  local status=0
  if [ "${1:-}" != serve ]; then  # add-user, --help: one-shot
    run_child python -m calo_assets.downloads "$@" || status=$?
    exit "$status"
  fi
  shift
  local port=${CALO_DOWNLOADS_PORT:-3100} prev="" arg
  for arg in "$@"; do  # the port the app will listen on, for the health check
    case $arg in --port=*) port=${arg#--port=} ;; *) [ "$prev" != --port ] || port=$arg ;; esac
    prev=$arg
  done
  python -m calo_assets.downloads serve --host "$CALO_HOST" --port "${CALO_DOWNLOADS_PORT:-3100}" "$@" <&0 &
  local app=$! stopping=""
  echo "downloads $app - $port" > "$STATE_FILE"
  trap 'stopping=1; kill -TERM "$app" 2>/dev/null || true' TERM INT HUP
  wait "$app" || status=$?
  while kill -0 "$app" 2>/dev/null; do status=0; wait "$app" || status=$?; done
  rm -f "$STATE_FILE"
  if [ -n "$stopping" ] && [ "$status" -eq 143 ]; then status=0; fi  # uvicorn re-raises the SIGTERM it handled
  exit "$status"
}

healthcheck() {
  if [ ! -f "$STATE_FILE" ]; then echo "CLI mode: no service to check"; exit 0; fi
  local kind first port path
  read -r kind first _ port < "$STATE_FILE"
  case $kind in
    dagster)
      kill -0 "$first" 2>/dev/null || { echo "dagster-daemon (pid $first) is not running"; exit 1; }
      path=/server_info ;;
    *) path=/signin ;;
  esac
  exec python - "http://127.0.0.1:$port$path" <<'PY'
import json, sys, urllib.request
url = sys.argv[1]
try:
    with urllib.request.urlopen(url, timeout=8) as response:
        body = response.read()
except Exception as exc:
    print(f"{url}: {exc}")
    sys.exit(1)
try:
    info = json.loads(body)
    print(f"{url}: dagster-webserver {info['dagster_webserver_version']}, dagster {info['dagster_version']}")
except (ValueError, KeyError, TypeError):
    print(f"{url}: {response.status}")
PY
}

case "${1:-}" in
  serve) shift; serve "$@" ;;
  downloads) shift; downloads "$@" ;;
  healthcheck) healthcheck ;;
  "") cli --help ;;
  *) cli "$@" ;;
esac
