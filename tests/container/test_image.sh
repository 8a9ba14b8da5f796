#!/usr/bin/env bash
# Acceptance test of the Docker image (not part of the pytest run): builds it, then checks
#   * what the image is: non-root user, tini, a health check, no test data / logs / secrets / compilers;
#   * CLI mode, in both of the seed's Quick Start forms, on the bundled sample drop, and what an
#     unwritable --out gives;
#   * service mode: Dagster webserver + daemon become healthy, a drop copied into the inbox comes
#     out as reports/latest/summary.json with the CLI's figures, and `stop` ends it cleanly;
#   * downloads mode: a user added with `downloads add-user`, `downloads serve` answers /signin.
# Everything it starts is removed on exit.
#
#   tests/container/test_image.sh            # from the repo; as root (container-env.sh needs it)
#
# Environment: IMAGE (calo-log-analytics), ENGINE (podman; docker works too), SKIP_BUILD=1 to test an
# image already built, SERVICE_TIMEOUT seconds for the drop to come out as a report (300),
# CONTAINER_ENV (../shared/tools/container-env.sh, used to build with podman), SKIP_DOWNLOADS=1.
set -euo pipefail

cd "$(dirname "$0")/../.."
REPO=$PWD
IMAGE=${IMAGE:-calo-log-analytics}
ENGINE=${ENGINE:-podman}
CONTAINER_ENV=${CONTAINER_ENV:-$REPO/../shared/tools/container-env.sh}
SERVICE_TIMEOUT=${SERVICE_TIMEOUT:-300}
NAME=calo-test-service-$$
DOWNLOADS=calo-test-downloads-$$
VOLUME=calo-test-home-$$
WORK=$(mktemp -d "${TMPDIR:-/tmp}/calo-image-test.XXXXXX")
CURRENT=""  # the container under test, whose log is shown when a check fails
START=$SECONDS
CHECKS=0

step() { printf '\n== %s\n' "$*"; }
ok() { CHECKS=$((CHECKS + 1)); printf 'ok   %s\n' "$*"; }
fail() { printf 'FAIL %s\n' "$*" >&2; exit 1; }

cleanup() {
  local status=$?
  if [ "$status" -ne 0 ] && [ -n "$CURRENT" ] && "$ENGINE" container inspect "$CURRENT" >/dev/null 2>&1; then
    echo "--- last lines of the log of $CURRENT:" >&2
    "$ENGINE" logs --tail 40 "$CURRENT" >&2 2>&1 || true
  fi
  "$ENGINE" rm -f "$NAME" "$DOWNLOADS" >/dev/null 2>&1 || true
  "$ENGINE" volume rm -f "$VOLUME" >/dev/null 2>&1 || true
  rm -rf "$WORK" 2>/dev/null || "$ENGINE" unshare rm -rf "$WORK" 2>/dev/null || true
  if [ "$status" -eq 0 ]; then printf '\nPASS: %d checks in %ds\n' "$CHECKS" $((SECONDS - START))
  else printf '\nFAILED (exit %d) after %ds\n' "$status" $((SECONDS - START)) >&2; fi
}
trap cleanup EXIT

# One-shot containers: podman would try to put the health check on a systemd timer (none here).
# The service container keeps it and is polled with `podman healthcheck run`.
HEALTH_FLAGS=()
if [ "$ENGINE" = podman ]; then HEALTH_FLAGS=(--no-healthcheck); fi
run() { "$ENGINE" run "${HEALTH_FLAGS[@]}" "$@"; }

# Let the container's uid write into a host folder (chown as root, else world-writable).
give_to() {
  local uid=$1 dir=$2
  mkdir -p "$dir"
  if [ "$(id -u)" = 0 ]; then chown "$uid:$uid" "$dir"; else chmod 0777 "$dir"; fi
}

json_field() {  # json_field FILE KEY: a top-level value of a JSON file
  if command -v python3 >/dev/null; then
    python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$1" "$2"
  else
    run --rm -v "$(dirname "$1"):/json:ro" --entrypoint python "$IMAGE" \
      -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "/json/$(basename "$1")" "$2"
  fi
}

check_outputs() {  # check_outputs DIR FILE...: present, not empty, readable by everyone
  local dir=$1 f mode
  shift
  for f in "$@"; do
    [ -s "$dir/$f" ] || fail "$dir/$f is missing or empty"
    mode=$(stat -c %A "$dir/$f")
    [ "${mode:7:1}" = r ] || fail "$dir/$f is not world-readable ($mode)"
  done
  ok "$(basename "$dir"): $* present and world-readable ($(stat -c '%A, owner uid %u' "$dir/$1"))"
}

free_port() {
  if command -v python3 >/dev/null; then
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
  else echo $((20000 + RANDOM % 20000)); fi
}

http_get() {
  if command -v curl >/dev/null; then curl -fsS -m 5 "$1"
  else python3 -c 'import sys,urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())' "$1"; fi
}

# ---------------------------------------------------------------------------------------------
step "build $IMAGE"
if [ "${SKIP_BUILD:-}" = 1 ]; then
  echo "SKIP_BUILD=1: testing the image already built"
elif [ "$ENGINE" = podman ]; then
  # --format docker: the OCI format has no HEALTHCHECK
  "$CONTAINER_ENV" build --format docker -t "$IMAGE" . > "$WORK/build.log" 2>&1 \
    || { tail -30 "$WORK/build.log" >&2; fail "build failed"; }
else
  "$ENGINE" build -t "$IMAGE" . > "$WORK/build.log" 2>&1 || { tail -30 "$WORK/build.log" >&2; fail "build failed"; }
fi
ok "built $IMAGE in $((SECONDS - START))s; size $("$ENGINE" image inspect --format '{{.Size}}' "$IMAGE" \
  | awk '{printf "%.0f MB", $1 / 1e6}')"

# ---------------------------------------------------------------------------------------------
step "what the image is"
inspect=$("$ENGINE" image inspect "$IMAGE")
user=$("$ENGINE" image inspect --format '{{.Config.User}}' "$IMAGE")
[ "$user" = 10001:10001 ] || fail "image user is '$user', expected 10001:10001"
ok "image USER is $user"
uid=$(run --rm --entrypoint id "$IMAGE" -u)
[ "$uid" != 0 ] || fail "the container runs as root"
ok "id -u inside the container: $uid (not root)"
grep -q '"/usr/bin/tini"' <<<"$inspect" || fail "ENTRYPOINT does not start tini"
ok "ENTRYPOINT starts tini: $("$ENGINE" image inspect --format '{{.Config.Entrypoint}}' "$IMAGE")"
tr -d ' \n' <<<"$inspect" | grep -q '"Test":\["CMD","/app/docker/entrypoint.sh","healthcheck"\]' \
  || fail "no HEALTHCHECK in the image (podman: build with --format docker)"
ok "HEALTHCHECK runs entrypoint.sh healthcheck"

contents=$(run --rm --user 0 --entrypoint bash "$IMAGE" -c '
  find / -xdev \( -path /proc -o -path /sys -o -path /dev \) -prune -o \
    \( -path "*balance-sync*" -name "*.gz" -o -path "*balance-sync-logs*" -o -path "*real-logs*" \
       -o -name "000000" -o -name "000000.gz" -o -name ".env" -o -name ".env.*" -o -name "*.pem" -path "*/app/*" \
       -o -name "id_rsa*" -o -name "*.p12" -o -name ".git" -o -name ".pytest_cache" -o -name ".hypothesis" \
       -o -path "*/calo_assets/*" -name "test_*.py" -o -name "conftest.py" -path "*calo*" \
       -o -name "calo_testkit" -o -name "generator.py" -path "*calo*" -o -name calo-generate-logs \) -print
  for d in /app/tests /app/data /app/out /app/docs /app/benchmarks /app/.venv; do [ ! -e "$d" ] || echo "$d"; done
  for d in /data /out /inbox /reports /dagster_home; do [ -z "$(ls -A "$d")" ] || echo "$d is not empty"; done
  for c in gcc cc g++ clang make; do command -v "$c" || true; done
  [ ! -e /opt/venv/bin/pip ] || echo /opt/venv/bin/pip')
[ -z "$contents" ] || fail "the image holds what it should not: $contents"
ok "no test data, no logs (*.gz under balance-sync*), no .env/keys, no /app/tests or /app/data, no log generator, no compilers, no pip in the venv"
"$ENGINE" volume create "$VOLUME" >/dev/null
run --rm --user 4242:4242 -v "$VOLUME:/dagster_home" --entrypoint touch "$IMAGE" /dagster_home/probe \
  || fail "a fresh named volume on /dagster_home is not writable by --user 4242:4242"
"$ENGINE" volume rm -f "$VOLUME" >/dev/null
ok "a fresh named volume on /dagster_home is writable by any --user (4242:4242 tried)"
listing=$(run --rm --entrypoint ls "$IMAGE" -A /app | tr '\n' ' ')
[ "$listing" = "dagster.yaml docker workspace.yaml " ] || fail "/app holds: $listing"
ok "/app holds only: $listing"

# ---------------------------------------------------------------------------------------------
step "sample drop"
if [ -d "$REPO/data/inbox/sample" ] && [ -n "$(find "$REPO/data/inbox/sample" -type f -print -quit)" ]; then
  INBOX=$REPO/data/inbox
  DROP=$REPO/data/inbox/sample
  ok "using the bundled data/inbox ($(find "$INBOX" -type f | wc -l) files; drop data/inbox/sample)"
else
  INBOX=$WORK/data/inbox
  DROP=$INBOX/sample
  if [ -x "$REPO/.venv/bin/python" ]; then
    mkdir -p "$INBOX"
    PYTHONPATH="$REPO/testkit" "$REPO/.venv/bin/python" -m calo_testkit.generator "$DROP" --transactions 200 >/dev/null
  else  # the generator is not in the image: the image's Python runs it from the checkout (standard library only)
    give_to 10001 "$INBOX"
    run --rm -v "$INBOX:/gen" -v "$REPO/testkit:/testkit:ro" -e PYTHONPATH=/testkit --entrypoint python "$IMAGE" \
      -m calo_testkit.generator /gen/sample --transactions 200 >/dev/null
  fi
  ok "data/inbox/sample missing: generated a drop of 200 transactions ($(find "$DROP" -type f | wc -l) files)"
fi

# ---------------------------------------------------------------------------------------------
step "CLI mode"
help=$(run --rm "$IMAGE")
grep -q 'usage: calo-logs-analyzer' <<<"$help" || fail "no arguments should print the CLI's usage"
ok "no arguments: the CLI's --help"
hc=$(run --rm --entrypoint /app/docker/entrypoint.sh "$IMAGE" healthcheck) || fail "the health check fails in CLI mode"
ok "health check in CLI mode: exit 0 ($hc)"

OUT1=$WORK/out-quickstart
give_to 10001 "$OUT1"
echo "\$ $ENGINE run --rm -v $INBOX:/data -v $OUT1:/out $IMAGE --log_dir /data --out /out --excel-columns accounting --log-level INFO"
run --rm -v "$INBOX:/data:ro" -v "$OUT1:/out" "$IMAGE" \
  --log_dir /data --out /out --excel-columns accounting --log-level INFO > "$WORK/cli1.txt" 2>&1 \
  || { cat "$WORK/cli1.txt" >&2; fail "the Quick Start command failed"; }
sed -n '1,2p' "$WORK/cli1.txt" | sed 's/^/    /'
check_outputs "$OUT1" summary.json report.html report.xlsx
tx1=$(json_field "$OUT1/summary.json" transactions)
[ "$tx1" -gt 0 ] || fail "summary.json: transactions = $tx1"
ok "Quick Start form (default user 10001): summary.json transactions = $tx1"

OUT2=$WORK/out-positional
if [ "$(id -u)" = 0 ]; then HOST_IDS=4242:4242; else HOST_IDS="$(id -u):$(id -g)"; fi  # a host user
give_to "${HOST_IDS%%:*}" "$OUT2"
chmod 0755 "$OUT2"
echo "\$ $ENGINE run --rm --user $HOST_IDS -v $DROP:/data -v $OUT2:/out $IMAGE /data --out /out --raw-csv"
run --rm --user "$HOST_IDS" -v "$DROP:/data:ro" -v "$OUT2:/out" "$IMAGE" /data --out /out --raw-csv \
  > "$WORK/cli2.txt" 2>&1 || { cat "$WORK/cli2.txt" >&2; fail "the positional form failed"; }
check_outputs "$OUT2" summary.json report.html report.xlsx raw_parsed.csv
owner=$(stat -c %u:%g "$OUT2/summary.json")
[ "$owner" = "$HOST_IDS" ] || fail "--user $HOST_IDS wrote files owned by $owner"
ok "positional form with --user $HOST_IDS: files owned by $owner"
tx_drop=$(json_field "$OUT2/summary.json" transactions)
users_drop=$(json_field "$OUT2/summary.json" users)
[ "$tx_drop" -gt 0 ] || fail "summary.json: transactions = $tx_drop"
ok "positional form on the drop: transactions = $tx_drop, users = $users_drop"

RO=$WORK/out-unwritable
mkdir -p "$RO" && chmod 0555 "$RO"
status=0
run --rm -v "$DROP:/data:ro" -v "$RO:/out" "$IMAGE" --log_dir /data --out /out > "$WORK/cli3.txt" 2>&1 || status=$?
sed 's/^/    /' "$WORK/cli3.txt"
[ "$status" -ne 0 ] || fail "an unwritable /out exited 0"
grep -q 'error: cannot write to --out /out' "$WORK/cli3.txt" || fail "no clear message for an unwritable /out"
grep -q -- '--user' "$WORK/cli3.txt" || fail "no --user hint for an unwritable /out"
ok "/out not writable by uid 10001: exit $status, 'error: cannot write to --out /out' and the --user hint"
status=0
run --rm -v "$DROP:/data:ro" -v "$WORK/out-quickstart:/out:ro" "$IMAGE" /data --out /out > "$WORK/cli4.txt" 2>&1 || status=$?
sed 's/^/    /' "$WORK/cli4.txt"
if [ "$status" -eq 0 ] || ! grep -q 'error: cannot write to --out /out' "$WORK/cli4.txt"; then
  fail "a read-only /out mount: exit $status without the message"
fi
ok "/out mounted read-only: exit $status with the message"

# ---------------------------------------------------------------------------------------------
step "service mode"
mkdir -p "$WORK/inbox"
give_to 10001 "$WORK/reports"
"$ENGINE" volume create "$VOLUME" >/dev/null
PORT=$(free_port)
echo "\$ $ENGINE run -d -p $PORT:3000 -v $WORK/inbox:/inbox:ro -v $WORK/reports:/reports -v $VOLUME:/dagster_home $IMAGE serve"
CURRENT=$NAME
"$ENGINE" run -d --name "$NAME" -p "127.0.0.1:$PORT:3000" -e CALO_SETTLE_SECONDS=2 \
  -v "$WORK/inbox:/inbox:ro" -v "$WORK/reports:/reports" -v "$VOLUME:/dagster_home" "$IMAGE" serve \
  > "$WORK/service-run.txt" 2>&1 || { cat "$WORK/service-run.txt" >&2; fail "the service did not start"; }
if grep -q 'systemd connection' "$WORK/service-run.txt"; then
  echo "    (podman has no systemd here for its health-check timer: polling with 'podman healthcheck run')"
fi
t0=$SECONDS
until health=$("$ENGINE" exec "$NAME" /app/docker/entrypoint.sh healthcheck 2>&1); do
  [ "$("$ENGINE" inspect --format '{{.State.Running}}' "$NAME")" = true ] || fail "the service container exited"
  [ $((SECONDS - t0)) -lt 180 ] || fail "not healthy after 180s: $health"
  sleep 3
done
if [ "$ENGINE" = podman ]; then
  "$ENGINE" healthcheck run "$NAME" >/dev/null || fail "podman healthcheck run: unhealthy"
  ok "healthy after $((SECONDS - t0))s (podman healthcheck run): $health"
else
  until [ "$("$ENGINE" inspect --format '{{.State.Health.Status}}' "$NAME")" = healthy ]; do
    [ $((SECONDS - t0)) -lt 240 ] || fail "docker never marked the container healthy"; sleep 5; done
  ok "healthy after $((SECONDS - t0))s: $health"
fi
info=$(http_get "http://127.0.0.1:$PORT/server_info") || fail "/server_info not reachable on the published port $PORT"
ok "GET http://127.0.0.1:$PORT/server_info (published port): $info"
pid1=$("$ENGINE" exec "$NAME" cat /proc/1/cmdline | tr '\0' ' ')
[[ $pid1 == /usr/bin/tini* ]] || fail "PID 1 is '$pid1', not tini"
ok "PID 1 is: $pid1"
procs=$("$ENGINE" exec "$NAME" bash -c 'for p in /proc/[0-9]*; do tr "\0" " " < "$p/cmdline"; echo; done' | grep -c -E 'dagster-(daemon|webserver)' || true)
[ "$procs" -ge 2 ] || fail "dagster-daemon and dagster-webserver are not both running"
"$ENGINE" exec "$NAME" test -f /dagster_home/dagster.yaml || fail "no dagster.yaml in DAGSTER_HOME"
ok "dagster-daemon and dagster-webserver running; dagster.yaml copied into the named volume /dagster_home"
cuid=$("$ENGINE" exec "$NAME" id -u)
[ "$cuid" != 0 ] || fail "the service runs as root"
ok "the service runs as uid $cuid"

cp -r "$DROP" "$WORK/inbox/"
ok "copied the drop ($(find "$WORK/inbox" -type f | wc -l) files) into the inbox; waiting up to ${SERVICE_TIMEOUT}s for reports/latest/summary.json"
t0=$SECONDS
until [ -s "$WORK/reports/latest/summary.json" ]; do
  [ "$("$ENGINE" inspect --format '{{.State.Running}}' "$NAME")" = true ] || fail "the service container exited"
  [ $((SECONDS - t0)) -lt "$SERVICE_TIMEOUT" ] || fail "no reports/latest/summary.json after ${SERVICE_TIMEOUT}s"
  if [ $(((SECONDS - t0) % 30)) -lt 5 ] && [ $((SECONDS - t0)) -ge 5 ]; then
    echo "    ... $((SECONDS - t0))s, service log: $("$ENGINE" logs --tail 1 "$NAME" 2>&1 \
      | sed -e 's/\x1b\[[0-9;]*m//g' -e 's/^[0-9: +-]* - //' | cut -c1-140)"
  fi
  sleep 5
done
ok "reports/latest/summary.json after $((SECONDS - t0))s"
check_outputs "$WORK/reports/latest" summary.json report.html report.xlsx raw_parsed.csv
tx_svc=$(json_field "$WORK/reports/latest/summary.json" transactions)
users_svc=$(json_field "$WORK/reports/latest/summary.json" users)
[ "$tx_svc" -gt 0 ] || fail "service summary.json: transactions = $tx_svc"
if [ "$tx_svc" != "$tx_drop" ] || [ "$users_svc" != "$users_drop" ]; then
  fail "service: $tx_svc transactions / $users_svc users, CLI on the same drop: $tx_drop / $users_drop"
fi
ok "service summary.json: transactions = $tx_svc, users = $users_svc (the same as the CLI on this drop)"
"$ENGINE" exec "$NAME" test -d /dagster_home/storage || fail "no storage under /dagster_home"
ok "tables stored in the named volume (/dagster_home/storage)"

t0=$SECONDS
"$ENGINE" stop -t 30 "$NAME" >/dev/null
took=$((SECONDS - t0))
code=$("$ENGINE" inspect --format '{{.State.ExitCode}}' "$NAME")
[ "$code" = 0 ] || fail "stop: exit code $code"
[ "$took" -lt 30 ] || fail "stop took ${took}s: SIGTERM did not stop the service"
"$ENGINE" logs "$NAME" 2>&1 | grep -q 'calo-log-analytics: stopped' || fail "no 'stopped' in the service log"
ok "stop: SIGTERM ended webserver and daemon in ${took}s, exit code $code"

# ---------------------------------------------------------------------------------------------
step "downloads mode"
if [ "${SKIP_DOWNLOADS:-}" = 1 ]; then
  echo "SKIP_DOWNLOADS=1: skipped"
  exit 0
fi
echo 'a long enough test password' | run --rm -i -v "$VOLUME:/dagster_home" "$IMAGE" \
  downloads add-user tester --role accountant --password-stdin > "$WORK/adduser.txt" 2>&1 \
  || { cat "$WORK/adduser.txt" >&2; fail "downloads add-user failed"; }
ok "downloads add-user (password on stdin): $(cat "$WORK/adduser.txt")"
DPORT=$(free_port)
CURRENT=$DOWNLOADS
"$ENGINE" run -d --name "$DOWNLOADS" -p "127.0.0.1:$DPORT:3100" -v "$VOLUME:/dagster_home" \
  -e CALO_DOWNLOADS_SECRET="test-secret-$$-$RANDOM-that-is-long-enough-for-the-app-0123456789" \
  "$IMAGE" downloads serve > "$WORK/downloads-run.txt" 2>&1 || { cat "$WORK/downloads-run.txt" >&2; fail "downloads serve did not start"; }
t0=$SECONDS
until health=$("$ENGINE" exec "$DOWNLOADS" /app/docker/entrypoint.sh healthcheck 2>&1); do
  if [ "$("$ENGINE" inspect --format '{{.State.Running}}' "$DOWNLOADS")" != true ] || [ $((SECONDS - t0)) -ge 60 ] \
     || [[ $health == *"HTTP Error 5"* ]]; then
    fail "downloads app not healthy after $((SECONDS - t0))s: $health"
  fi
  sleep 2
done
ok "downloads app healthy after $((SECONDS - t0))s: $health"
http_get "http://127.0.0.1:$DPORT/signin" > "$WORK/signin.html" || fail "GET /signin on the published port $DPORT failed"
ok "GET http://127.0.0.1:$DPORT/signin (published port): $(wc -c < "$WORK/signin.html") bytes of HTML"
t0=$SECONDS
"$ENGINE" stop -t 30 "$DOWNLOADS" >/dev/null 2>&1
ok "downloads app stopped in $((SECONDS - t0))s, exit code $("$ENGINE" inspect --format '{{.State.ExitCode}}' "$DOWNLOADS")"
