#!/usr/bin/env bash
# The local AWS API emulator (moto server: Kinesis, DynamoDB and S3 on one
# endpoint, run by scripts/moto-server), installed into ./.venv and listening
# on 127.0.0.1 only.
#
#   scripts/emulator.sh install        # create .venv, install moto, boto3, mrjob (idempotent)
#   scripts/emulator.sh start [PORT]   # start it in the background (default 4566), wait until ready
#   scripts/emulator.sh stop [PORT]    # stop the one started here on that port
#
# kinesis-local (the kinesis-mock emulator from npm, which reshards like the
# service) for the resharding tests; its servers are kept on 127.0.0.1 by
# scripts/listen-localhost.js:
#   scripts/emulator.sh install-kinesis-local
#   scripts/emulator.sh start-kinesis-local [PORT]   # default 4568
#   scripts/emulator.sh stop-kinesis-local [PORT]
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.venv
MOTO_VERSION=5.2.1
# mrjob runs the Hadoop Streaming examples and test with its local runner.
MRJOB_VERSION=0.7.4
PORT=${2:-4566}
PIDFILE=target/moto-$PORT.pid
LOG=target/moto-$PORT.log

install() {
  if [ -x "$VENV/bin/moto_server" ] && "$VENV/bin/python" -c "import moto, flask, flask_cors, boto3, mrjob" 2>/dev/null; then
    return 0
  fi
  echo "emulator: installing moto $MOTO_VERSION and mrjob $MRJOB_VERSION into $VENV" >&2
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check \
    "moto[dynamodb,s3,server]==$MOTO_VERSION" flask flask-cors boto3 "mrjob==$MRJOB_VERSION"
}

start() {
  local port=$PORT
  install
  mkdir -p target
  if [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
    echo "emulator: already running (pid $(cat "$PIDFILE"))" >&2
    return 0
  fi
  # moto with DynamoDB writes applied one at a time (why: scripts/moto-server).
  "$VENV/bin/python" scripts/moto-server -H 127.0.0.1 -p "$port" >"$LOG" 2>&1 &
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
    local pid
    pid=$(cat "$PIDFILE")
    kill "$pid" 2>/dev/null || true
    # moto's server can outlive SIGTERM for a while (threads still serving):
    # give it 5 s, then end it, so that the port is free when stop returns.
    for _ in $(seq 1 50); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then kill -9 "$pid" 2>/dev/null || true; fi
    rm -f "$PIDFILE"
  fi
}

KL_VERSION=0.6.2
KL_DIR=.emulators/kinesis-local

install_kl() {
  if [ -f "$KL_DIR/node_modules/kinesis-local/main.js" ]; then
    return 0
  fi
  echo "emulator: installing kinesis-local $KL_VERSION into $KL_DIR" >&2
  mkdir -p "$KL_DIR"
  npm install --silent --no-audit --no-fund --prefix "$KL_DIR" "kinesis-local@$KL_VERSION" >&2
}

start_kl() {
  local port=${1:-4568}
  install_kl
  mkdir -p target
  local pidfile=target/kinesis-local-$port.pid log=target/kinesis-local-$port.log
  if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    return 0
  fi
  local main=$KL_DIR/node_modules/kinesis-local/main.js
  # SHARD_LIMIT: the account's open shards; the default 50 is reached when the
  # resharding tests run at once (the service's default is 200 or 500 a region).
  KINESIS_MOCK_CERT_PATH="$PWD/$KL_DIR/node_modules/kinesis-local/server.json" \
  KINESIS_MOCK_PLAIN_PORT="$port" KINESIS_MOCK_TLS_PORT=$((port + 1000)) \
  CREATE_STREAM_DURATION=10ms DELETE_STREAM_DURATION=10ms MERGE_SHARDS_DURATION=10ms \
  SPLIT_SHARD_DURATION=10ms UPDATE_SHARD_COUNT_DURATION=10ms UPDATE_STREAM_MODE_DURATION=10ms \
  REGISTER_STREAM_CONSUMER_DURATION=10ms DEREGISTER_STREAM_CONSUMER_DURATION=10ms \
  SHARD_LIMIT=1000 \
  START_STREAM_ENCRYPTION_DURATION=10ms STOP_STREAM_ENCRYPTION_DURATION=10ms \
  LOG_LEVEL=WARN node -r "$PWD/scripts/listen-localhost.js" "$main" >"$log" 2>&1 &
  echo $! >"$pidfile"
  for _ in $(seq 1 300); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "emulator: kinesis-local listening on http://127.0.0.1:$port (pid $(cat "$pidfile"))" >&2
      return 0
    fi
    sleep 0.1
  done
  echo "emulator: kinesis-local did not start on port $port; its log:" >&2
  cat "$log" >&2 || true
  return 1
}

stop_kl() {
  local pidfile=target/kinesis-local-${1:-4568}.pid
  if [ -f "$pidfile" ]; then
    kill "$(cat "$pidfile")" 2>/dev/null || true
    rm -f "$pidfile"
  fi
}

case "${1:-}" in
  install) install ;;
  install-kinesis-local) install_kl ;;
  start-kinesis-local) start_kl "${2:-4568}" ;;
  stop-kinesis-local) stop_kl "${2:-4568}" ;;
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 install|start [PORT]|stop [PORT]|install-kinesis-local|start-kinesis-local [PORT]|stop-kinesis-local [PORT]" >&2; exit 2 ;;
esac
