#!/usr/bin/env bash
# Runs one Apache Kafka node (broker + KRaft controller) on 127.0.0.1 for the demo and tests.
#
#   deploy/kafka/kafka.sh fetch    resolve the broker jars from Maven Central into the cache
#   deploy/kafka/kafka.sh start    fetch if needed, format storage, start, wait until ready
#   deploy/kafka/kafka.sh stop     stop the node this script started
#   deploy/kafka/kafka.sh status   exit 0 when the node answers
#
# Settings (environment): KAFKA_PORT (19092), KAFKA_CONTROLLER_PORT (19093),
# STREAMDETECT_CACHE (~/.cache/streamdetect: jars, shared between clones),
# KAFKA_RUN_DIR (<repo>/.run/kafka: data, log, pid), KAFKA_HEAP (1g, as upstream runs it).
# If KAFKA_BOOTSTRAP is set, an external broker is in use: start and stop do nothing.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
port="${KAFKA_PORT:-19092}"
controller_port="${KAFKA_CONTROLLER_PORT:-19093}"
cache="${STREAMDETECT_CACHE:-$HOME/.cache/streamdetect}"
pom_hash="$(sha256sum "$here/pom.xml" | cut -c1-12)"
jars="$cache/kafka-jars-$pom_hash"
run_dir="${KAFKA_RUN_DIR:-$repo/.run/kafka}"
pid_file="$run_dir/kafka.pid"
log_file="$run_dir/kafka.log"
ready_timeout="${KAFKA_READY_TIMEOUT:-90}"

log() { echo "kafka: $*" >&2; }

fetch() {
  if [ -f "$jars/.complete" ]; then return 0; fi
  log "resolving broker jars from Maven Central into $jars"
  rm -rf "$jars.tmp"
  mvn -q -B -f "$here/pom.xml" dependency:copy-dependencies \
    -DoutputDirectory="$jars.tmp" -DincludeScope=runtime
  touch "$jars.tmp/.complete"
  rm -rf "$jars"
  mv "$jars.tmp" "$jars"
}

java_opts=(-Xms"${KAFKA_HEAP:-1g}" -Xmx"${KAFKA_HEAP:-1g}"
  -Dlog4j2.configurationFile="$here/log4j2.properties" -cp "$jars/*")

write_config() {
  mkdir -p "$run_dir"
  cat >"$run_dir/server.properties" <<EOF
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:$controller_port
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$controller_port
advertised.listeners=PLAINTEXT://127.0.0.1:$port
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$run_dir/data
num.partitions=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
EOF
}

running_pid() {
  [ -f "$pid_file" ] || return 1
  local pid
  pid="$(cat "$pid_file")"
  kill -0 "$pid" 2>/dev/null && echo "$pid"
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; }

ready() {
  # The broker logs this line once it has joined the quorum and opened its listener.
  port_open && grep -q "Kafka Server started" "$log_file" 2>/dev/null
}

start() {
  if [ -n "${KAFKA_BOOTSTRAP:-}" ]; then log "KAFKA_BOOTSTRAP=$KAFKA_BOOTSTRAP set: using it"; return 0; fi
  if running_pid >/dev/null; then log "already running on 127.0.0.1:$port"; return 0; fi
  if port_open; then log "port $port is taken by another process; set KAFKA_PORT"; exit 1; fi
  fetch
  write_config
  if [ ! -f "$run_dir/data/meta.properties" ]; then
    local cluster_id
    cluster_id="$(java "${java_opts[@]}" kafka.tools.StorageTool random-uuid | tail -n1)"
    java "${java_opts[@]}" kafka.tools.StorageTool format --standalone -t "$cluster_id" \
      -c "$run_dir/server.properties" >"$run_dir/format.log" 2>&1
  fi
  : >"$log_file"
  nohup java "${java_opts[@]}" kafka.Kafka "$run_dir/server.properties" >>"$log_file" 2>&1 &
  echo $! >"$pid_file"
  local waited=0
  until ready; do
    if ! running_pid >/dev/null; then log "broker exited; last lines of $log_file:"; tail -n 30 "$log_file" >&2; exit 1; fi
    if [ "$waited" -ge "$ready_timeout" ]; then log "not ready after ${ready_timeout}s; see $log_file"; stop; exit 1; fi
    sleep 1; waited=$((waited + 1))
  done
  log "ready on 127.0.0.1:$port after ${waited}s (log: $log_file)"
}

stop() {
  if [ -n "${KAFKA_BOOTSTRAP:-}" ]; then return 0; fi
  local pid
  if ! pid="$(running_pid)"; then rm -f "$pid_file"; return 0; fi
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 30); do
    if ! kill -0 "$pid" 2>/dev/null && ! port_open; then break; fi
    sleep 1
  done
  kill -KILL "$pid" 2>/dev/null || true
  rm -f "$pid_file"
  log "stopped"
}

case "${1:-}" in
  fetch) fetch ;;
  start) start ;;
  stop) stop ;;
  status) ready ;;
  *) echo "usage: $0 fetch|start|stop|status" >&2; exit 2 ;;
esac
