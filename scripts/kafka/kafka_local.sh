#!/usr/bin/env bash
# A local single-node Apache Kafka 4.x (KRaft, broker+controller in one JVM) on 127.0.0.1.
#
#   kafka_local.sh up      start it (or find it running); the LAST line of stdout is the bootstrap
#                          address, e.g. 127.0.0.1:9092. Everything else goes to stderr.
#   kafka_local.sh down    stop it cleanly (SIGTERM, then SIGKILL after KAFKA_STOP_TIMEOUT_S)
#   kafka_local.sh status  print the bootstrap address and exit 0 if running, else exit 3
#
# env:
#   KAFKA_LOCAL_DIR       state dir: server.properties, data/, logs/, kafka.pid, bootstrap
#                         (default <repo>/.kafka/local; the pytest fixture uses its own)
#   KAFKA_LIBS_DIR        broker jars from fetch_jars.sh (default <repo>/.kafka/libs)
#   KAFKA_LOCAL_PORT      preferred client port (default 9092; another free one if taken)
#   KAFKA_LOCAL_FRESH=1   wipe data/ before starting
#   KAFKA_HEAP_OPTS       JVM heap flags (default -Xmx512m -Xms256m)
#   KAFKA_START_TIMEOUT_S / KAFKA_STOP_TIMEOUT_S   (default 60 / 30)
#
# Data persists across down/up unless KAFKA_LOCAL_FRESH=1. The quorum is static
# (controller.quorum.voters), so the ports may change between runs without reformatting.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
state="${KAFKA_LOCAL_DIR:-$repo/.kafka/local}"
libs="${KAFKA_LIBS_DIR:-$repo/.kafka/libs}"
pidfile="$state/kafka.pid"
bootfile="$state/bootstrap"
start_timeout_s="${KAFKA_START_TIMEOUT_S:-60}"
stop_timeout_s="${KAFKA_STOP_TIMEOUT_S:-30}"

log() { echo "kafka_local: $*" >&2; }

running_pid() {
  # The pid from the pidfile if that process is alive and is our java broker.
  [ -f "$pidfile" ] || return 1
  local pid
  pid="$(cat "$pidfile")"
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q 'kafka.Kafka' || return 1
  echo "$pid"
}

port_free() {
  # True if nothing listens on 127.0.0.1:$1 (a connect that fails means free).
  ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

free_port() {
  # A port the kernel hands out as free right now (tiny race before the broker binds; acceptable
  # on a dev machine, and the readiness wait below fails loudly if it is lost).
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

write_properties() {
  local port="$1" cport="$2"
  cat >"$state/server.properties" <<EOF
# Written by scripts/kafka/kafka_local.sh on each start; edits are overwritten.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:${cport}
listeners=PLAINTEXT://127.0.0.1:${port},CONTROLLER://127.0.0.1:${cport}
advertised.listeners=PLAINTEXT://127.0.0.1:${port}
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
log.dirs=${state}/data
# One node: every internal topic has one replica. Few partitions keep the first consumer-group
# join and the first transaction quick on a small machine.
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=4
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
default.replication.factor=1
min.insync.replicas=1
num.partitions=1
# Topics must be created explicitly with the partition counts the config names (co-partitioned
# inputs); an auto-created one-partition topic would hide that mistake.
auto.create.topics.enable=false
group.initial.rebalance.delay.ms=0
num.network.threads=2
num.io.threads=2
num.recovery.threads.per.data.dir=1
log.retention.hours=24
log.segment.bytes=67108864
EOF
}

cmd_status() {
  local pid
  if pid="$(running_pid)"; then
    log "running (pid $pid), logs in $state/logs"
    cat "$bootfile"
    return 0
  fi
  log "not running"
  return 3
}

cmd_up() {
  local pid
  if pid="$(running_pid)"; then
    log "already running (pid $pid)"
    cat "$bootfile"
    return 0
  fi
  if ! compgen -G "$libs/kafka_2.13-*.jar" >/dev/null; then
    log "no broker jars in $libs; run scripts/kafka/fetch_jars.sh (make kafka-jars) first"
    return 1
  fi
  command -v java >/dev/null 2>&1 || { log "java not found (Java 17 needed)"; return 1; }

  mkdir -p "$state/logs"
  [ "${KAFKA_LOCAL_FRESH:-0}" = "1" ] && rm -rf "$state/data"
  local port="${KAFKA_LOCAL_PORT:-9092}" cport
  if ! port_free "$port"; then
    local taken="$port"
    port="$(free_port)"
    log "127.0.0.1:$taken is taken; using $port"
  fi
  cport="$(free_port)"
  while [ "$cport" = "$port" ]; do cport="$(free_port)"; done
  write_properties "$port" "$cport"

  local cp="$libs/*"
  local log_opts=(-Dlog4j2.configurationFile="$here/log4j2.properties" -Dkafka.logs.dir="$state/logs")
  if [ ! -f "$state/data/meta.properties" ]; then
    local cluster_id
    # What `StorageTool random-uuid` prints (16 random bytes, base64url, unpadded), without
    # paying a JVM start for it. base64url may begin with "-", which the tool's argument parser
    # then takes for an option (1 start in 64 failed): pass it as --cluster-id=VALUE.
    cluster_id="$(python3 -c 'import base64, uuid; print(base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("="))')"
    # A short-lived tool: C1 only and the serial GC start faster on a busy 2-core machine.
    java -XX:TieredStopAtLevel=1 -XX:+UseSerialGC -cp "$cp" "${log_opts[@]}" kafka.tools.StorageTool format \
      "--cluster-id=$cluster_id" \
      -c "$state/server.properties" --ignore-formatted >"$state/logs/format.log" 2>&1 \
      || { log "storage format failed:"; cat "$state/logs/format.log" >&2; return 1; }
  fi

  : >"$state/logs/server.log"
  # setsid: the broker outlives this script and is not hit by the terminal's Ctrl-C; `down`
  # stops it by pid.
  # shellcheck disable=SC2086
  setsid java ${KAFKA_HEAP_OPTS:--Xmx512m -Xms256m} -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
    -Djava.awt.headless=true "${log_opts[@]}" -cp "$cp" kafka.Kafka "$state/server.properties" \
    >"$state/logs/stdout.log" 2>&1 </dev/null &
  pid=$!
  echo "$pid" >"$pidfile"
  echo "127.0.0.1:$port" >"$bootfile"

  local t0=$SECONDS
  until grep -q 'Kafka Server started' "$state/logs/server.log" 2>/dev/null; do
    if ! kill -0 "$pid" 2>/dev/null; then
      log "broker exited during startup; last log lines:"
      tail -n 20 "$state/logs/server.log" "$state/logs/stdout.log" >&2 || true
      rm -f "$pidfile"
      return 1
    fi
    if [ $((SECONDS - t0)) -ge "$start_timeout_s" ]; then
      log "broker not ready after ${start_timeout_s}s; stopping it. Last log lines:"
      tail -n 20 "$state/logs/server.log" "$state/logs/stdout.log" >&2 || true
      cmd_down || true
      return 1
    fi
    sleep 0.2
  done
  # The log line comes once the socket server accepts; double-check the client port answers.
  until ! port_free "$port"; do sleep 0.1; done
  log "started (pid $pid) in $((SECONDS - t0))s; logs in $state/logs"
  echo "127.0.0.1:$port"
}

cmd_down() {
  local pid
  if ! pid="$(running_pid)"; then
    log "not running"
    rm -f "$pidfile"
    return 0
  fi
  kill -TERM "$pid" 2>/dev/null || true
  local t0=$SECONDS
  while kill -0 "$pid" 2>/dev/null; do
    if [ $((SECONDS - t0)) -ge "$stop_timeout_s" ]; then
      log "broker (pid $pid) still up after ${stop_timeout_s}s; killing it"
      kill -KILL "$pid" 2>/dev/null || true
      break
    fi
    sleep 0.2
  done
  rm -f "$pidfile"
  log "stopped (pid $pid)"
}

case "${1:-}" in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
