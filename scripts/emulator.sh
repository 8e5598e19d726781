#!/usr/bin/env bash
# The local AWS API emulator (moto server: Kinesis, DynamoDB and S3 on one
# endpoint), installed into ./.venv and listening on 127.0.0.1 only.
#
#   scripts/emulator.sh install        # create .venv and install moto (idempotent)
#   scripts/emulator.sh start [PORT]   # start it in the background (default 4566), wait until ready
#   scripts/emulator.sh stop [PORT]    # stop the one started here on that port
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.venv
MOTO_VERSION=5.2.1
PORT=${2:-4566}
PIDFILE=target/moto-$PORT.pid
LOG=target/moto-$PORT.log

install() {
  if [ -x "$VENV/bin/moto_server" ] && "$VENV/bin/python" -c "import moto, flask, flask_cors, boto3" 2>/dev/null; then
    return 0
  fi
  echo "emulator: installing moto $MOTO_VERSION into $VENV" >&2
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check \
    "moto[dynamodb,s3,server]==$MOTO_VERSION" flask flask-cors boto3
}

start() {
  local port=$PORT
  install
  mkdir -p target
  if [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
    echo "emulator: already running (pid $(cat "$PIDFILE"))" >&2
    return 0
  fi
  "$VENV/bin/moto_server" -H 127.0.0.1 -p "$port" >"$LOG" 2>&1 &
  echo $! >"$PIDFILE"
  for _ in $(seq 1 100); do
    if "$VENV/bin/python" -c "import socket,sys; socket.create_connection(('127.0.0.1', $port), 0.2)" 2>/dev/null; then
      echo "emulator: moto listening on http://127.0.0.1:$port (pid $(cat "$PIDFILE"))" >&2
      return 0
    fi
    sleep 0.1
  done
  echo "emulator: moto did not start on port $port; its log:" >&2
  cat "$LOG" >&2 || true
  return 1
}

stop() {
  if [ -f "$PIDFILE" ]; then
    kill "$(cat "$PIDFILE")" 2>/dev/null || true
    rm -f "$PIDFILE"
  fi
}

case "${1:-}" in
  install) install ;;
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 install|start [PORT]|stop [PORT]" >&2; exit 2 ;;
esac
