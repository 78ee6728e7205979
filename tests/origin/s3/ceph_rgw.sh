#!/usr/bin/env bash
# Start and stop a real single-node Ceph cluster with its RADOS Gateway (S3) on
# 127.0.0.1, for tests.
#
#   ceph_rgw.sh install      apt-get Debian's Ceph (16.2 "pacific") if it is missing
#   ceph_rgw.sh start DIR    start mon + OSD + radosgw under DIR, write DIR/env, print the endpoint
#   ceph_rgw.sh stop DIR     kill what start started for DIR, remove DIR (safe to repeat)
#
# Environment for start (all optional):
#   CEPH_MON_PORT, CEPH_RGW_PORT  ports to use (default: free ones probed at random)
#   CEPH_MEMSTORE_BYTES           the OSD's in-memory "disk" size (default 4 GiB)
#   CEPH_START_TIMEOUT            seconds the whole start may take (default 60)
#
# DIR/env, for `set -a; . DIR/env` or a test's env parser:
#   S3_ENDPOINT=http://127.0.0.1:PORT
#   AWS_ACCESS_KEY_ID=...
#   AWS_SECRET_ACCESS_KEY=...
#   AWS_REGION=us-east-1
#
# Why it is built this way:
# - Everything (config, keyrings, mon store, OSD store, logs, sockets, pid files)
#   lives in DIR and every daemon and CLI call gets `-c DIR/ceph.conf`, so nothing
#   under /etc/ceph, /var/lib/ceph, /var/log/ceph or /var/run/ceph is shared and two
#   runs can only collide on ports. No systemd: the daemons run in the foreground
#   (-f), detached with setsid, and we record their pids ourselves.
# - One mon, one OSD, no mgr: the smallest cluster RGW will run on. The OSD keeps
#   its objects in memory (memstore), so there is no disk to format and stopping is
#   just killing; pools have one replica and CRUSH picks OSDs, not hosts.
# - `paxos propose interval` (default 1 s) is what every mon update waits for; at
#   0.01 s start takes 1-2.5 s (idle 2-core machine) instead of ~15 s. With that
#   and the CRUSH smoke test off, letting radosgw-admin/radosgw create RGW's pools
#   on demand (~0.2 s more on the first bucket) beats creating them up front with
#   the `ceph` CLI (+1 s: a Python start and 14 mon commands racing the OSD boot).
# - Ports are probed free, not reserved: two starts at once may pick the same one
#   (1 in 12000); the loser fails cleanly and can be retried.
# - RGW's garbage collector frees deleted objects' data only after
#   rgw_gc_obj_min_wait (2 h by default); it is cut to seconds so a test that
#   deletes data sees the memory come back.
set -euo pipefail

PROG=ceph_rgw.sh
MARKER=.ceph_rgw # written first into DIR; stop only removes a DIR that has it

usage() {
  sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

fail() { # one line of why, on stderr, then exit non-zero
  echo "$PROG: $*" >&2
  START_REPORTED=1
  exit 1
}

# --- install -----------------------------------------------------------------

cmd_install() {
  local missing=() b
  for b in ceph-mon ceph-osd radosgw radosgw-admin ceph ceph-authtool monmaptool; do
    command -v "$b" >/dev/null 2>&1 || missing+=("$b")
  done
  if [ ${#missing[@]} -eq 0 ]; then
    echo "ceph already installed: $(ceph --version 2>/dev/null | cut -d' ' -f1-3)"
    return 0
  fi
  [ "$(id -u)" -eq 0 ] || fail "install: not root, cannot apt-get install (missing: ${missing[*]})"
  command -v apt-get >/dev/null 2>&1 || fail "install: no apt-get on this machine (missing: ${missing[*]})"
  local log
  log=$(mktemp /tmp/ceph_rgw_install.XXXXXX)
  # ceph-common (ceph, radosgw-admin, ceph-authtool, monmaptool) comes as a dependency.
  if ! { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y \
    --no-install-recommends ceph-mon ceph-osd radosgw; } >"$log" 2>&1; then
    fail "install: apt-get failed: $(grep -E '^(E:|W:)' "$log" | tail -1) (full log: $log)"
  fi
  rm -f "$log"
  for b in ceph-mon ceph-osd radosgw radosgw-admin ceph; do
    command -v "$b" >/dev/null 2>&1 || fail "install: $b still missing after apt-get install"
  done
  echo "ceph installed: $(ceph --version | cut -d' ' -f1-3)"
}

# --- helpers -----------------------------------------------------------------

port_in_use() { # is anything listening on TCP port $1?
  if command -v ss >/dev/null 2>&1; then
    [ -n "$(ss -Hltn "sport = :$1" 2>/dev/null)" ]
  else
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
  fi
}

pick_port() { # a free port in 20000-31999: below Linux's ephemeral range (32768+)
  # and away from Ceph's own OSD range (6800-7300). $1: a port to avoid.
  local p
  for _ in $(seq 100); do
    p=$((20000 + RANDOM % 12000))
    [ "$p" != "${1:-}" ] && ! port_in_use "$p" && { echo "$p"; return 0; }
  done
  return 1
}

alive() { # is pid $1 running and started for directory $2? (guards against pid reuse)
  [ -n "$1" ] && [ -r "/proc/$1/cmdline" ] && tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -qF -- "$2/"
}

# Kill every process recorded in DIR/pid/*, wait until they are gone. SIGKILL
# straight away: the data is thrown away anyway, and a graceful OSD shutdown would
# first dump the whole memstore to disk. $2 = 1: a zombie counts as gone (start's
# own cleanup: the daemons are still its children and are reaped when it exits);
# otherwise wait up to 3 s for init to reap them too, so `ps` shows nothing after.
kill_all() {
  local dir=$1 zombie_ok=${2:-0} f pid pids=()
  [ -d "$dir/pid" ] || return 0
  for f in "$dir"/pid/*; do
    [ -f "$f" ] || continue
    pid=$(cat "$f" 2>/dev/null || true)
    if alive "$pid" "$dir"; then
      kill -KILL "$pid" 2>/dev/null || true
      pids+=("$pid")
    fi
  done
  for pid in "${pids[@]}"; do
    for _ in $(seq 30); do
      [ -e "/proc/$pid" ] || break
      if [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" = Z ]; then
        [ "$zombie_ok" = 1 ] && break
      fi
      sleep 0.1
    done
    # Still there and not a zombie after 3 s of SIGKILL: stuck in the kernel.
    if [ -e "/proc/$pid" ] && [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" != Z ]; then
      echo "$PROG: warning: pid $pid ($dir) did not die on SIGKILL" >&2
    fi
  done
  rm -f "$dir"/pid/*
}

# --- start -------------------------------------------------------------------

cmd_start() {
  [ $# -eq 1 ] || usage
  for b in ceph-mon ceph-osd radosgw radosgw-admin ceph ceph-authtool monmaptool curl setsid; do
    command -v "$b" >/dev/null 2>&1 || fail "start: $b not found (run: $0 install)"
  done
  mkdir -p "$1"
  local dir
  dir=$(cd "$1" && pwd -P) # absolute: daemons and the pid-reuse check need it
  [ -e "$dir/ceph.conf" ] && fail "start: $dir already holds a cluster (stop it first)"
  [ -z "$(ls -A "$dir")" ] || fail "start: $dir is not empty"
  : >"$dir/$MARKER"
  mkdir -p "$dir"/{pid,run,log,mon,osd,rgw,crash,tmp}

  # From here on, any failure kills what was started and says why in one line.
  START_DIR=$dir
  START_OK=0
  trap 'start_cleanup $?' EXIT
  trap 'exit 130' INT TERM HUP # so an interrupted start also runs the cleanup
  trap 'START_ERR="line $LINENO: $BASH_COMMAND"' ERR

  local conf="$dir/ceph.conf" keyring="$dir/keyring"
  local mon_port=${CEPH_MON_PORT:-} rgw_port=${CEPH_RGW_PORT:-}
  [ -n "$mon_port" ] || mon_port=$(pick_port "$rgw_port") || fail "start: no free port for the mon"
  [ -n "$rgw_port" ] || rgw_port=$(pick_port "$mon_port") || fail "start: no free port for radosgw"
  port_in_use "$mon_port" && fail "start: mon port $mon_port is already in use"
  port_in_use "$rgw_port" && fail "start: rgw port $rgw_port is already in use"
  START_TIMEOUT=${CEPH_START_TIMEOUT:-60}
  START_DEADLINE=$((SECONDS + START_TIMEOUT)) # one bound for the whole start
  local fsid
  fsid=$(cat /proc/sys/kernel/random/uuid)

  # $name expands per daemon/client (mon.a, osd.0, client.rgw.a, client.admin).
  cat >"$conf" <<EOF
[global]
fsid = $fsid
# msgr2 only, on the chosen port: one port per cluster to pick.
mon host = v2:127.0.0.1:$mon_port
public addr = 127.0.0.1
cluster addr = 127.0.0.1
ms bind msgr1 = false
ms bind ipv6 = false
ms bind retry count = 1
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
# Every path Ceph would otherwise put under /etc, /var/lib, /var/log, /var/run.
keyring = $keyring
admin socket = $dir/run/\$name.asok
pid file = $dir/run/\$name.pid
run dir = $dir/run
crash dir = $dir/crash
log file = $dir/log/\$name.log
mon cluster log file = $dir/log/cluster.log
mon data = $dir/mon/\$name
osd data = $dir/osd/\$name
rgw data = $dir/rgw/\$name
# Tiny cluster: one replica, CRUSH over OSDs (type 0) not hosts, no mgr.
osd pool default size = 1
osd pool default min size = 1
mon allow pool size one = true
mon allow pool delete = true
mon warn on pool no redundancy = false
osd crush chooseleaf type = 0
osd pool default pg autoscale mode = off
# RGW creates its pools (6, a 7th on the first multipart upload) as it needs
# them: 8 PGs each, not 32, is a quarter of the PGs for the one OSD to peer.
osd pool default pg num = 8
osd pool default pgp num = 8
# Every mon update waits this long (default 1 s); it dominates start time.
paxos propose interval = 0.01
paxos min wait = 0.001
# The mon sends a new pool's PG creations to the OSD on its tick if it could
# not at once (say the pool came before the OSD was up): a 5 s tick made start
# take anywhere from 1.7 to 9 s; at 1 s that wait is short.
mon tick interval = 1
# Pool creation would fork crushtool to test the CRUSH rule (~0.1 s a pool).
mon osd crush smoke test = false
# The mon stops itself when its disk has < 5% free (mon_data_avail_crit); a full
# /tmp should fail the test that filled it, not kill the cluster underneath.
mon data avail crit = 0
mon data avail warn = 1
mon warn on insecure global id reclaim allowed = false

[osd]
osd objectstore = memstore
memstore device bytes = ${CEPH_MEMSTORE_BYTES:-4294967296}
osd op num shards = 2
osd op num threads per shard = 1

[client.rgw.a]
rgw frontends = beast endpoint=127.0.0.1:$rgw_port tcp_nodelay=1
# Free deleted objects' data within seconds, not after 2 hours.
rgw gc obj min wait = 2
rgw gc processor period = 2
rgw gc processor max time = 2
rgw dynamic resharding = false
EOF

  # Keys: mon., client.admin (for the CLIs), client.rgw.a; osd.0's comes with `osd new`.
  ceph-authtool --create-keyring "$dir/tmp/mon.keyring" --gen-key -n mon. --cap mon 'allow *' >/dev/null
  ceph-authtool --create-keyring "$keyring" --gen-key -n client.admin \
    --cap mon 'allow *' --cap osd 'allow *' --cap mgr 'allow *' --cap mds 'allow *' >/dev/null
  ceph-authtool "$keyring" --gen-key -n client.rgw.a --cap mon 'allow rw' --cap osd 'allow rwx' \
    --cap mgr 'allow rw' >/dev/null
  ceph-authtool "$dir/tmp/mon.keyring" --import-keyring "$keyring" >/dev/null

  # The mon.
  monmaptool --create --fsid "$fsid" --addv a "[v2:127.0.0.1:$mon_port]" "$dir/tmp/monmap" >/dev/null
  ceph-mon -c "$conf" --mkfs -i a --monmap "$dir/tmp/monmap" --keyring "$dir/tmp/mon.keyring" \
    >"$dir/log/mkfs.log" 2>&1 || fail_log "ceph-mon --mkfs failed" "$dir/log/mkfs.log"
  launch mon.a ceph-mon -c "$conf" -f -i a

  # The OSD: register it (with its key) at the mon, make its store, start it.
  local osd_uuid osd_key osd_id
  osd_uuid=$(cat /proc/sys/kernel/random/uuid)
  osd_key=$(ceph-authtool --gen-print-key)
  printf '{"cephx_secret": "%s"}\n' "$osd_key" >"$dir/tmp/osd.json"
  step "the mon did not come up on 127.0.0.1:$mon_port" /dev/null \
    ceph -c "$conf" osd new "$osd_uuid" -i "$dir/tmp/osd.json"
  osd_id=$(cat "$dir/tmp/step.out")
  ceph-authtool "$keyring" --add-key "$osd_key" -n "osd.$osd_id" >/dev/null
  mkdir -p "$dir/osd/osd.$osd_id"
  ceph-osd -c "$conf" -i "$osd_id" --mkfs --osd-uuid "$osd_uuid" >>"$dir/log/mkfs.log" 2>&1 ||
    fail_log "ceph-osd --mkfs failed" "$dir/log/mkfs.log"
  launch "osd.$osd_id" ceph-osd -c "$conf" -f -i "$osd_id"

  # The S3 user, written straight to RADOS (radosgw-admin waits for the OSD).
  # Doing it before radosgw starts also lets radosgw-admin alone create the
  # default realm/zonegroup/zone, with no race against radosgw doing the same.
  local ak sk
  ak=$(od -An -N10 -tx1 /dev/urandom | tr -d ' \n' | tr a-f A-F) # 20 chars, like AWS's
  sk=$(od -An -N20 -tx1 /dev/urandom | tr -d ' \n')               # 40 chars
  step "radosgw-admin user create failed" /dev/null \
    radosgw-admin -c "$conf" user create --uid=tester --display-name=tester \
    --access-key="$ak" --secret-key="$sk"

  launch client.rgw.a radosgw -c "$conf" -f -n client.rgw.a

  # Wait until the S3 endpoint answers (any HTTP reply: RGW opens its port only
  # once it is ready), failing at once if a daemon died.
  local endpoint="http://127.0.0.1:$rgw_port"
  until curl -s -o /dev/null --max-time 2 "$endpoint/"; do
    check_daemons "S3 endpoint $endpoint not answering" "$dir/log/client.rgw.a.log"
    sleep 0.1
  done

  cat >"$dir/env" <<EOF
S3_ENDPOINT=$endpoint
AWS_ACCESS_KEY_ID=$ak
AWS_SECRET_ACCESS_KEY=$sk
AWS_REGION=us-east-1
EOF
  START_OK=1
  echo "$endpoint"
}

# Run a daemon in the foreground, detached (own session, no stdio tied to the
# caller, so a test harness reading our output is not held open), pid recorded.
# $1 is its Ceph name, so its log is log/$1.log.
launch() {
  local name=$1
  shift
  setsid "$@" </dev/null >>"$START_DIR/log/$name.out" 2>&1 &
  echo $! >"$START_DIR/pid/$name"
  disown $! # not this shell's job: no "Killed" notices when cleanup kills it
}

# Fail (with that daemon's log) if a daemon we launched has died, or with $1
# (and the logs named after it) once the start deadline has passed.
check_daemons() {
  local f name
  for f in "$START_DIR"/pid/*; do
    [ -f "$f" ] || continue
    name=$(basename "$f")
    alive "$(cat "$f")" "$START_DIR" ||
      fail_log "$name exited during start" "$START_DIR/log/$name.out" "$START_DIR/log/$name.log"
  done
  if [ "$SECONDS" -ge "$START_DEADLINE" ]; then
    local why=$1
    shift
    fail_log "$why (gave up after ${START_TIMEOUT}s)" "$@"
  fi
}

# Run a CLI step (stdin from $2, stdout to tmp/step.out, stderr to log/cli.log)
# and wait for it, polling so that a dead daemon or the deadline ends the wait at
# once instead of the CLI retrying for as long as it likes; on failure, $1.
step() {
  local why=$1 in=$2 pid rc=0
  shift 2
  echo "+ $*" >>"$START_DIR/log/cli.log"
  # timeout: a backstop should this script die without running its cleanup.
  timeout -k 1 "$START_TIMEOUT" "$@" <"$in" >"$START_DIR/tmp/step.out" 2>>"$START_DIR/log/cli.log" &
  pid=$!
  STEP_PID=$pid # killed by start_cleanup if start is interrupted meanwhile
  while kill -0 "$pid" 2>/dev/null; do
    if ! (check_daemons "$why" "$START_DIR/log/cli.log") 2>"$START_DIR/tmp/step.err"; then
      pkill -KILL -P "$pid" 2>/dev/null || true
      kill -KILL "$pid" 2>/dev/null || true
      wait "$pid" 2>/dev/null || true
      STEP_PID=
      cat "$START_DIR/tmp/step.err" >&2
      START_REPORTED=1
      exit 1
    fi
    sleep 0.05
  done
  wait "$pid" || rc=$?
  STEP_PID=
  [ "$rc" = 0 ] || fail_log "$why (exit $rc)" "$START_DIR/log/cli.log"
}

fail_log() { # one line of why, then the tail of the logs named, indented
  local why=$1 f
  shift
  echo "$PROG: start: $why (logs: $START_DIR/log)" >&2
  for f in "$@"; do
    [ -s "$f" ] || continue
    echo "  --- tail of $f:" >&2
    tail -n 15 "$f" | sed 's/^/  | /' >&2
  done
  START_REPORTED=1
  exit 1
}

start_cleanup() {
  local rc=$1
  [ "${START_OK:-0}" = 1 ] && return 0
  if [ "${START_REPORTED:-0}" != 1 ]; then
    echo "$PROG: start: failed at ${START_ERR:-an interrupt} (logs: $START_DIR/log)" >&2
  fi
  if [ -n "${STEP_PID:-}" ]; then # a CLI step still running (start interrupted)
    pkill -KILL -P "$STEP_PID" 2>/dev/null || true # the CLI under `timeout`
    kill -KILL "$STEP_PID" 2>/dev/null || true
  fi
  kill_all "$START_DIR" 1
  # DIR stays (with the logs) for the caller's `stop DIR`, which removes it.
  [ "$rc" != 0 ] || exit 1
}

# --- stop --------------------------------------------------------------------

cmd_stop() {
  [ $# -eq 1 ] || usage
  [ -e "$1" ] || return 0 # already stopped and removed
  [ -d "$1" ] || fail "stop: $1 is not a directory"
  local dir
  dir=$(cd "$1" && pwd -P)
  if [ ! -e "$dir/$MARKER" ]; then
    # Never rm -rf a directory this script did not start in, unless it is empty.
    rmdir "$dir" 2>/dev/null || fail "stop: $dir was not started by $PROG, not removing it"
    return 0
  fi
  kill_all "$dir"
  rm -rf "$dir"
}

case "${1:-}" in
install) shift; [ $# -eq 0 ] || usage; cmd_install ;;
start) shift; cmd_start "$@" ;;
stop) shift; cmd_stop "$@" ;;
*) usage ;;
esac
