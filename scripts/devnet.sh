#!/usr/bin/env bash
# A local bacnode network: N daemons on 127.0.0.1, each bootstrapped to its parent in a tree.
#
#   scripts/devnet.sh up [N]          start N nodes (default 3) and wait until all see each other
#   scripts/devnet.sh status          one line per node; exit 0 only when the devnet is healthy
#   scripts/devnet.sh env             the export lines pointing the CLI at node 1
#   scripts/devnet.sh down [--clean]  stop every node; --clean also deletes their data dirs
#
# Run with --help for the details (ports, directories, environment variables).
set -euo pipefail

readonly HOST=127.0.0.1
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
readonly REPO_ROOT
DEVNET_DIR=${BACNODE_DEVNET_DIR:-/tmp/bacnode-devnet}
P2P_BASE=${BACNODE_DEVNET_P2P_BASE:-4200}
API_BASE=${BACNODE_DEVNET_API_BASE:-21300}
if [[ -z ${BACNODE_DEVNET_PYTHON:-} && -x $REPO_ROOT/.venv/bin/python ]]; then
    PYTHON=$REPO_ROOT/.venv/bin/python  # where scripts/setup.sh installed bacnode
else
    PYTHON=${BACNODE_DEVNET_PYTHON:-python3}
fi
# boto3 asks the cloud metadata address for credentials when none are configured; the
# daemons of a devnet never send traffic off this machine.
export AWS_EC2_METADATA_DISABLED=true
UP_TIMEOUT=${BACNODE_DEVNET_TIMEOUT:-}
HEARTBEAT=${BACNODE_DEVNET_HEARTBEAT:-}
LOG_LEVEL=${BACNODE_DEVNET_LOG_LEVEL:-INFO}
readonly DOWN_GRACE=10
readonly MAX_NODES=200
# Children per node of the bootstrap tree. Every node bootstrapping to node 1 (a star) made
# node 1 relay every heartbeat to every other node: 50 daemons took 48 s to list each other
# and 100 never did. With at most 8 children and a parent a node keeps all its peers in its
# gossip mesh (gossipsub's D_high is 12), so each heartbeat reaches everyone by push.
readonly FANOUT=8
readonly START_BATCH=8

usage() {
    cat <<EOF
Usage: scripts/devnet.sh COMMAND

A devnet of bacnode daemons on ${HOST} (never mDNS, never another address).

Commands:
  up [N]          Start N nodes (default 3, at most ${MAX_NODES}). Node 1 starts with
                  '--peer none'; node i > 1 bootstraps to node (i-2)/${FANOUT}+1 (a tree:
                  nodes 2..$((FANOUT + 1)) to node 1, the next ${FANOUT} to node 2, ...), started
                  a level at a time, ${START_BATCH} nodes at once. Waits (at most
                  \$BACNODE_DEVNET_TIMEOUT s) until every node lists all N nodes
                  CONNECTED, then prints a summary (stderr) and, on stdout, the lines
                      export BACNODE_API_HOST=${HOST}
                      export BACNODE_API_PORT=<node 1's API port>
                  so that this points the CLI at node 1:
                      eval "\$(scripts/devnet.sh up 3 | grep ^export)"
                  If the same N-node devnet already runs, 'up' only checks it, restarts any
                  node that died, and prints the same output. If a devnet of another size
                  (or on other ports) runs, 'up' refuses: run 'down' first.
                  Ports must be free ('up' names their owner otherwise). Right after a
                  'down', a libp2p port may still have connections in TCP TIME_WAIT,
                  which the daemon refuses to listen over: 'up' then waits (<= 60 s).
                  If the devnet does not come up, 'up' shows the log tail of the failing
                  node(s), stops the nodes it started, and exits 1.
  status          One line per node: index, pid, alive, peer ID, ports, how many of the
                  devnet's nodes it sees CONNECTED. Exit 0 when every node is alive and
                  sees all others, 1 otherwise (or when no devnet runs).
  env             Print the export lines for node 1 (exit 1 when no devnet runs).
  down [--clean]  SIGTERM every node, SIGKILL whatever still runs after ${DOWN_GRACE} s;
                  exit 0 even when nothing runs. Data dirs (and so peer IDs) are kept
                  for the next 'up' unless --clean is given.
  -h, --help      This help.

Node i (1-based) gets:
  data dir   \$BACNODE_DEVNET_DIR/node-i   (key, state, serve.log, pid file)
  libp2p     /ip4/${HOST}/tcp/\$((BACNODE_DEVNET_P2P_BASE + i))
  API        http://${HOST}:\$((BACNODE_DEVNET_API_BASE + i))
  labels     zone=a for node 1, zone=b for node 2, ... (zone=aa after zone=z)

Environment (defaults in brackets):
  BACNODE_DEVNET_DIR        where the node dirs live [/tmp/bacnode-devnet]
  BACNODE_DEVNET_P2P_BASE   libp2p port of node i is BASE+i [4200]
  BACNODE_DEVNET_API_BASE   API port of node i is BASE+i [21300]
  BACNODE_DEVNET_TIMEOUT    seconds 'up' waits for the network [60, or 4 per node past 15]
  BACNODE_DEVNET_HEARTBEAT  --heartbeat-seconds for every node [the daemon's default, 15]
  BACNODE_DEVNET_LOG_LEVEL  --log-level for every node [INFO]
  BACNODE_DEVNET_PYTHON     interpreter that runs 'python -m node serve' [.venv/bin/python
                            when scripts/setup.sh made it, else python3]
Other BACNODE_* variables reach the daemons as usual (see node/config.py); the flags the
devnet passes (data dir, ports, peers, labels, --no-mdns) take precedence over them.
EOF
}

say() { printf '%s\n' "$*" >&2; }
die() {
    say "devnet: error: $*"
    exit 1
}

is_uint() { [[ $1 =~ ^[0-9]+$ ]]; }

check_settings() {
    is_uint "$P2P_BASE" || die "BACNODE_DEVNET_P2P_BASE=${P2P_BASE} is not a port number"
    is_uint "$API_BASE" || die "BACNODE_DEVNET_API_BASE=${API_BASE} is not a port number"
    [[ -z $UP_TIMEOUT ]] || is_uint "$UP_TIMEOUT" || die "BACNODE_DEVNET_TIMEOUT=${UP_TIMEOUT} is not a whole number of seconds"
    if [[ -n $HEARTBEAT && ! $HEARTBEAT =~ ^[0-9]*\.?[0-9]+$ ]]; then
        die "BACNODE_DEVNET_HEARTBEAT=${HEARTBEAT} is not a number of seconds"
    fi
    command -v "$PYTHON" >/dev/null || die "${PYTHON} not found (set BACNODE_DEVNET_PYTHON)"
    # An absolute path: the daemons run from the repo root.
    mkdir -p "$DEVNET_DIR"
    DEVNET_DIR=$(cd "$DEVNET_DIR" && pwd)
    STATE_FILE=$DEVNET_DIR/devnet.state
}

node_dir() { printf '%s/node-%d' "$DEVNET_DIR" "$1"; }
p2p_port() { echo $((P2P_BASE + $1)); }
api_port() { echo $((API_BASE + $1)); }

zone() { # 1 -> a, 26 -> z, 27 -> aa, ...
    local n=$1 letters=abcdefghijklmnopqrstuvwxyz out=""
    while ((n > 0)); do
        n=$((n - 1))
        out=${letters:n%26:1}$out
        n=$((n / 26))
    done
    printf '%s' "$out"
}

# --------------------------------------------------------------------------------------------
# Processes

pid_alive() { # a running (not zombie) process
    local pid=$1 stat
    [[ -n $pid ]] || return 1
    stat=$(cat "/proc/${pid}/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    [[ ${stat:0:1} != Z ]]
}

is_our_node() { # pid DIR: a live 'node serve' process with --data-dir DIR
    local pid=$1 dir=$2 cmdline
    pid_alive "$pid" || return 1
    cmdline=$(tr '\0' '\n' <"/proc/${pid}/cmdline" 2>/dev/null) || return 1
    grep -qxF serve <<<"$cmdline" && grep -qxF -- "$dir" <<<"$cmdline"
}

node_pid() { # the pid of node i when it runs, else nothing (and status 1)
    local dir pid
    dir=$(node_dir "$1")
    [[ -f $dir/pid ]] || return 1
    pid=$(<"$dir/pid")
    is_our_node "$pid" "$dir" || return 1
    printf '%s' "$pid"
}

stray_pids() { # every 'node serve' process whose data dir is one of ours, pid file or not
    local proc arg args
    for proc in /proc/[0-9]*; do
        [[ -r $proc/cmdline ]] || continue
        mapfile -d '' -t args <"$proc/cmdline" 2>/dev/null || continue
        [[ " ${args[*]-} " == *" node serve "* ]] || continue
        for arg in "${args[@]}"; do
            if [[ ${arg#"$DEVNET_DIR"/} =~ ^node-[0-9]+$ && $arg != "${arg#"$DEVNET_DIR"/}" ]]; then
                pid_alive "${proc#/proc/}" && printf '%s\n' "${proc#/proc/}"
                break
            fi
        done
    done
    return 0
}

node_indices() { # indices of every node dir, sorted
    local dir
    for dir in "$DEVNET_DIR"/node-*; do
        [[ -d $dir && ${dir##*/node-} =~ ^[0-9]+$ ]] && printf '%s\n' "${dir##*/node-}"
    done | sort -n
}

running_indices() {
    local i
    for i in $(node_indices); do
        node_pid "$i" >/dev/null && printf '%s\n' "$i"
    done
    return 0
}

# --------------------------------------------------------------------------------------------
# State: the size and ports of the devnet that 'up' last started

STATE_N="" STATE_P2P="" STATE_API=""

read_state() {
    STATE_N="" STATE_P2P="" STATE_API=""
    [[ -f $STATE_FILE ]] || return 1
    local key value
    while IFS='=' read -r key value; do
        case $key in
            nodes) STATE_N=$value ;;
            p2p_base) STATE_P2P=$value ;;
            api_base) STATE_API=$value ;;
        esac
    done <"$STATE_FILE"
    is_uint "$STATE_N" && is_uint "$STATE_P2P" && is_uint "$STATE_API"
}

write_state() {
    printf 'nodes=%s\np2p_base=%s\napi_base=%s\n' "$1" "$P2P_BASE" "$API_BASE" >"$STATE_FILE"
}

# --------------------------------------------------------------------------------------------
# HTTP and JSON: a small Python helper (python3 is there anyway: it runs the daemons)

helper() {
    DEVNET_HOST=$HOST "$PYTHON" - "$@" <<'PY'
import json, os, socket, sys, time, urllib.request

HOST = os.environ["DEVNET_HOST"]

def get(port, path, timeout=2.0):
    with urllib.request.urlopen(f"http://{HOST}:{port}{path}", timeout=timeout) as resp:
        return json.loads(resp.read())

def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, ValueError, IndexError):
        return False

def nodes(specs):  # "i:api_port:pid:peer_id" -> dicts
    out = []
    for spec in specs:
        i, port, pid, peer = spec.split(":")
        out.append({"i": int(i), "port": int(port), "pid": pid, "peer": peer})
    return out

def connected_ids(port):
    listing = get(port, "/api/v1/orchestrator/nodes")["Nodes"]
    return {n["Info"]["NodeID"] for n in listing if n["Connection"] == "CONNECTED"}

def ports_check(specs):
    """'p2p:PORT' / 'api:PORT' -> prints 'busy PORT' (someone listens) or 'timewait PORT'.

    The daemon probes its libp2p port with a bind without SO_REUSEADDR, which fails while
    old connections of that port sit in TCP TIME_WAIT (up to 60 s after a node stopped).
    """
    for spec in specs:
        kind, port = spec.split(":")
        for reuse in (1, 0) if kind == "p2p" else (1,):
            with socket.socket() as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, reuse)
                try:
                    sock.bind((HOST, int(port)))
                except OSError:
                    print("busy" if reuse else "timewait", port)
                    break

def wait_api(deadline, specs):
    """Wait until every API answers; print 'i peer_id' lines.

    On failure (exit 3: a node died, 4: timeout) the first line lists the failing nodes,
    the rest says what failed; so for wait_mesh.
    """
    pending = {n["i"]: n for n in nodes(specs)}
    found = {}
    while pending:
        for i, n in list(pending.items()):
            try:
                found[i] = get(n["port"], "/api/v1/agent/node", timeout=1.0)["NodeID"]
                del pending[i]
            except Exception:
                if not alive(n["pid"]):
                    print(i)
                    print(f"node {i} (pid {n['pid']}) exited before its API answered")
                    sys.exit(3)
        if pending and time.time() > deadline:
            print(*sorted(pending))
            waiting = ", ".join(str(i) for i in sorted(pending))
            print(f"the API of node(s) {waiting} did not answer in time")
            sys.exit(4)
        if pending:
            time.sleep(0.2)
    for i in sorted(found):
        print(i, found[i])

def wait_mesh(deadline, specs):
    """Wait until every node sees all nodes CONNECTED. Exit 3: a node died, 4: timeout."""
    ns = nodes(specs)
    ids = {n["peer"]: n["i"] for n in ns}
    started, last_report, missing = time.time(), time.time(), {}
    while True:
        missing = {}
        for n in ns:
            if not alive(n["pid"]):
                print(n["i"])
                print(f"node {n['i']} (pid {n['pid']}) exited")
                sys.exit(3)
            try:
                seen = connected_ids(n["port"])
            except Exception as exc:
                missing[n["i"]] = f"API not answering ({exc})"
                continue
            lacking = sorted(ids[p] for p in set(ids) - seen)
            if lacking:
                missing[n["i"]] = (f"sees {len(ids) - len(lacking)}/{len(ids)} CONNECTED; "
                                   f"missing node(s) {', '.join(map(str, lacking))}")
        if not missing:
            print(f"{time.time() - started:.1f}")
            return
        if time.time() > deadline:
            print(*sorted(missing))
            print(f"not every node sees all {len(ns)} nodes CONNECTED in time:")
            for i in sorted(missing):
                print(f"    node {i} {missing[i]}")
            sys.exit(4)
        if time.time() - last_report >= 5:
            last_report = time.time()
            print(f"devnet: waiting for membership: {len(ns) - len(missing)}/{len(ns)} nodes see "
                  "everyone", file=sys.stderr)
        time.sleep(0.5)

def status(specs):
    """A table of the nodes; exit 0 when all are alive and see each other."""
    ns = nodes(specs)
    rows, healthy = [], True
    info = {}
    for n in ns:
        try:
            info[n["i"]] = get(n["port"], "/api/v1/agent/node")
        except Exception:
            info[n["i"]] = None
    expected = {(info[n["i"]] or {}).get("NodeID") or n["peer"] for n in ns} - {"-"}
    for n in ns:
        running = n["pid"] != "-" and alive(n["pid"])
        me = info[n["i"]]
        peer = me["NodeID"] if me else (n["peer"] if n["peer"] != "-" else "?")
        labels = ",".join(f"{k}={v}" for k, v in sorted((me or {}).get("Labels", {}).items()))
        try:
            seen = connected_ids(n["port"]) & expected if running else None
        except Exception:
            seen = None
        connected = f"{len(seen)}/{len(ns)}" if seen is not None else "-"
        if not running or seen is None or len(seen) != len(ns):
            healthy = False
        api = "up" if me else "down"
        rows.append([str(n["i"]), n["pid"] if running else "-", "yes" if running else "no",
                     api, peer, str(n["port"]), labels or "-", connected])
    headers = ["NODE", "PID", "ALIVE", "API", "PEER ID", "API PORT", "LABELS", "CONNECTED"]
    widths = [max(len(r[c]) for r in [headers, *rows]) for c in range(len(headers))]
    for row in [headers, *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    sys.exit(0 if healthy else 1)

def main(command, args):
    if command == "ports-check":
        ports_check(args)
    elif command == "wait-api":
        wait_api(float(args[0]), args[1:])
    elif command == "wait-mesh":
        wait_mesh(float(args[0]), args[1:])
    elif command == "status":
        status(args)
    else:
        sys.exit(f"unknown helper command {command}")

try:
    main(sys.argv[1], sys.argv[2:])
except KeyboardInterrupt:
    sys.exit(130)
PY
}

# --------------------------------------------------------------------------------------------
# up

STARTED=()  # indices this invocation started: stopped again when 'up' fails

log_tail() { # node i's log, indented
    local log
    log=$(node_dir "$1")/serve.log
    say "---- node $1: last lines of ${log} (this run)"
    if [[ -s $log ]]; then
        # Only what the latest start wrote: each start begins with a '==== ' line.
        awk '/^==== /{n=0} {line[n++]=$0} END{for (i=(n>25?n-25:0); i<n; i++) print line[i]}' \
            "$log" | sed 's/^/    /' >&2
    else
        say "    (empty)"
    fi
}

STILL=()
wait_gone() { # TENTHS PID...: wait up to TENTHS/10 s for the PIDs to exit; STILL: the rest
    local tenths=$1 pid
    shift
    STILL=("$@")
    while ((${#STILL[@]} && tenths > 0)); do
        sleep 0.1
        tenths=$((tenths - 1))
        local alive=()
        for pid in "${STILL[@]}"; do
            if pid_alive "$pid"; then alive+=("$pid"); fi
        done
        STILL=("${alive[@]+"${alive[@]}"}")
    done
}

stop_pids() { # FIRST... [-- LAST...]: SIGTERM, SIGKILL whatever runs after DOWN_GRACE s
    # LAST (node 1) goes once FIRST has exited (or after half the grace): the nodes that
    # dialed it then close their connections first, so the TCP TIME_WAIT lands on their
    # ephemeral ports, not on node 1's listen port (which the daemon could not bind again
    # for 60 s; see the port check in 'up').
    local first=() last=() seen_dash=0 arg
    for arg in "$@"; do
        if [[ $arg == -- ]]; then
            seen_dash=1
        elif ((seen_dash)); then
            last+=("$arg")
        else
            first+=("$arg")
        fi
    done
    local left=()
    if ((${#first[@]})); then
        kill -TERM "${first[@]}" 2>/dev/null || true
        wait_gone $((DOWN_GRACE * 5)) "${first[@]}"
        left=("${STILL[@]+"${STILL[@]}"}")
    fi
    if ((${#last[@]})); then
        kill -TERM "${last[@]}" 2>/dev/null || true
        left+=("${last[@]}")
    fi
    ((${#left[@]})) || return 0
    wait_gone $((DOWN_GRACE * 5)) "${left[@]}"
    if ((${#STILL[@]})); then
        say "devnet: still running after ${DOWN_GRACE}s, sending SIGKILL: ${STILL[*]}"
        kill -KILL "${STILL[@]}" 2>/dev/null || true
        wait_gone 50 "${STILL[@]}"
    fi
}

stop_started() {
    local i pid pids=() last=()
    for i in "${STARTED[@]+"${STARTED[@]}"}"; do
        if ! pid=$(node_pid "$i"); then continue; fi
        if ((i == 1)); then last+=("$pid"); else pids+=("$pid"); fi
    done
    if ((${#pids[@]} + ${#last[@]})); then
        say "devnet: stopping the $((${#pids[@]} + ${#last[@]})) node(s) this 'up' started (logs are kept)"
        stop_pids "${pids[@]+"${pids[@]}"}" -- "${last[@]+"${last[@]}"}"
    fi
}

fail_up() { # MESSAGE [NODE...]: show the logs of NODEs, stop what we started, exit 1
    local message=$1 i
    shift
    say "devnet: error: ${message}"
    for i in "$@"; do log_tail "$i"; done
    stop_started
    say "devnet: 'up' failed; node logs are in ${DEVNET_DIR}/node-*/serve.log"
    exit 1
}

helper_failed() { # the helper's failure output: failing node indices, then the message
    local out=$1 bad=()
    read -ra bad <<<"${out%%$'\n'*}"
    fail_up "${out#*$'\n'}" "${bad[@]+"${bad[@]}"}"
}

on_interrupt() {
    trap - INT TERM
    say "devnet: interrupted"
    stop_started
    exit 130
}

start_node() { # i [bootstrap multiaddr]
    local i=$1 peer=${2:-none} dir log
    dir=$(node_dir "$i")
    log=$dir/serve.log
    mkdir -p "$dir"
    local args=(-m node serve --data-dir "$dir" --listen "/ip4/${HOST}/tcp/$(p2p_port "$i")"
        --peer "$peer" --api-host "$HOST" --api-port "$(api_port "$i")" --no-mdns
        --labels "zone=$(zone "$i")" --log-level "$LOG_LEVEL")
    if [[ -n $HEARTBEAT ]]; then args+=(--heartbeat-seconds "$HEARTBEAT"); fi
    printf '==== %s: %s %s\n' "$(date '+%F %T')" "$PYTHON" "${args[*]}" >>"$log"
    # Own session: a Ctrl-C meant for this script does not reach the daemons. The lock on
    # fd 9 stays with this script. setsid does not fork here (we are no group leader), so
    # $! is the daemon's pid.
    (cd "$REPO_ROOT" && exec setsid "$PYTHON" "${args[@]}" </dev/null >>"$log" 2>&1 9>&-) &
    local pid=$!
    printf '%s\n' "$pid" >"$dir/pid"
    STARTED+=("$i")
    # Until the subshell has exec'd, its command line is this script's, and node_pid would
    # call the node not running (which once made 'up' report it dead at birth).
    local tries
    for ((tries = 0; tries < 50; tries++)); do
        is_our_node "$pid" "$dir" || ! pid_alive "$pid" && break
        sleep 0.02
    done
}

bootstrap_of() { # i: the multiaddr of node i's parent in the tree (its peer ID known by now)
    local parent=$((($1 - 2) / FANOUT + 1))
    printf '/ip4/%s/tcp/%s/p2p/%s' "$HOST" "$(p2p_port "$parent")" "$(<"$(node_dir "$parent")/peer-id")"
}

spec() { # i:api_port:pid:peer_id for the helper
    local i=$1 pid peer=-
    pid=$(node_pid "$i") || pid=-
    [[ -f $(node_dir "$i")/peer-id ]] && peer=$(<"$(node_dir "$i")/peer-id")
    printf '%s:%s:%s:%s' "$i" "$(api_port "$i")" "$pid" "${peer:--}"
}

wait_apis() { # deadline i...: wait for their APIs, record their peer IDs
    local deadline=$1 out rc=0 i id specs=()
    shift
    for i in "$@"; do specs+=("$(spec "$i")"); done
    out=$(helper wait-api "$deadline" "${specs[@]}") || rc=$?
    if ((rc)); then helper_failed "$out"; fi
    while read -r i id; do
        printf '%s\n' "$id" >"$(node_dir "$i")/peer-id"
    done <<<"$out"
}

print_exports() {
    printf 'export BACNODE_API_HOST=%s\n' "$HOST"
    printf 'export BACNODE_API_PORT=%s\n' "$(api_port 1)"
}

status_table() { # N: the helper's table; status 0 when healthy
    local n=$1 i specs=()
    for ((i = 1; i <= n; i++)); do specs+=("$(spec "$i")"); done
    helper status "${specs[@]}"
}

cmd_up() {
    local n=${1:-3}
    if ! is_uint "$n" || ((n < 1 || n > MAX_NODES)); then
        die "'up' takes a node count from 1 to ${MAX_NODES}, not '${n}'"
    fi
    ((P2P_BASE + n <= 65535 && API_BASE + n <= 65535)) || die "ports past 65535: lower the port bases"

    local running
    running=$(running_indices | tr '\n' ' ')
    running=${running% }
    if [[ -n $running ]]; then
        local max=${running##* }
        if ! read_state || [[ $STATE_N != "$n" || $STATE_P2P != "$P2P_BASE" || $STATE_API != "$API_BASE" ]] \
            || ((max > n)); then
            local what="nodes ${running}"
            [[ -n $STATE_N ]] && what="a ${STATE_N}-node devnet (API ports $((STATE_API + 1))..$((STATE_API + STATE_N)); running: ${running})"
            die "${what} already runs in ${DEVNET_DIR}; run 'scripts/devnet.sh down' first (data dirs are kept), then 'up ${n}'"
        fi
    fi

    # Ports of the nodes to start must be free.
    local i to_start=() ports=()
    for ((i = 1; i <= n; i++)); do
        if ! node_pid "$i" >/dev/null; then
            to_start+=("$i")
            ports+=("p2p:$(p2p_port "$i")" "api:$(api_port "$i")")
        fi
    done
    local waited_since=$SECONDS told=0
    while ((${#to_start[@]})); do
        local checked busy timewait
        checked=$(helper ports-check "${ports[@]}")
        busy=$(sed -n 's/^busy //p' <<<"$checked" | tr '\n' ' ')
        timewait=$(sed -n 's/^timewait //p' <<<"$checked" | tr '\n' ' ')
        if [[ -n $busy ]]; then
            say "devnet: error: port(s) ${busy}on ${HOST} are in use by another process:"
            local port
            for port in $busy; do
                ss -Hltnp "sport = :${port}" 2>/dev/null | sed 's/^/    /' >&2 || true
            done
            die "free them, or choose other ports with BACNODE_DEVNET_P2P_BASE / BACNODE_DEVNET_API_BASE"
        fi
        [[ -n $timewait ]] || break
        if ((SECONDS - waited_since > 65)); then
            die "port(s) ${timewait}still have connections in TCP TIME_WAIT after 65s"
        fi
        if ((!told)); then
            told=1
            say "devnet: waiting for old connections on port(s) ${timewait}to leave TCP TIME_WAIT" \
                "(at most 60s; the daemon refuses to listen until then)"
        fi
        sleep 1
    done

    write_state "$n"
    # 100 daemons starting keep 2 cores busy for minutes.
    [[ -n $UP_TIMEOUT ]] || UP_TIMEOUT=$((n > 15 ? 4 * n : 60))
    trap on_interrupt INT TERM
    local t0=$SECONDS deadline
    deadline=$(($(date +%s) + UP_TIMEOUT))
    if ((${#to_start[@]})); then
        say "devnet: starting node(s) ${to_start[*]} of ${n} in ${DEVNET_DIR}"
    fi

    # A level of the tree at a time: a node needs its parent's peer ID.
    if ! node_pid 1 >/dev/null; then
        start_node 1 none
    fi
    wait_apis "$deadline" 1
    # At most START_BATCH at once: 64 daemons importing together on 2 cores starve the
    # ones already up, whose first heartbeats then go missing.
    local first=2 last=$((FANOUT + 1)) batch
    while ((first <= n)); do
        ((last > n)) && last=$n
        batch=()
        for ((i = first; i <= last; i++)); do
            if ! node_pid "$i" >/dev/null; then start_node "$i" "$(bootstrap_of "$i")"; fi
            batch+=("$i")
            if ((${#batch[@]} == START_BATCH || i == last)); then
                wait_apis "$deadline" "${batch[@]}"
                batch=()
            fi
        done
        first=$((last + 1)) last=$((last * FANOUT + 1))
    done

    local specs=() out rc=0
    for ((i = 1; i <= n; i++)); do specs+=("$(spec "$i")"); done
    out=$(helper wait-mesh "$deadline" "${specs[@]}") || rc=$?
    if ((rc)); then helper_failed "$out"; fi
    trap - INT TERM

    if ((${#to_start[@]})); then
        say "devnet: ${n} node(s) up, full membership after $((SECONDS - t0))s"
    else
        say "devnet: the ${n}-node devnet already runs and is healthy"
    fi
    status_table "$n" >&2 || true
    say ""
    say "Point the CLI at node 1:  eval \"\$(scripts/devnet.sh env)\""
    print_exports
}

# --------------------------------------------------------------------------------------------
# status, env, down

cmd_status() {
    if ! read_state; then
        local running
        running=$(running_indices | tr '\n' ' ')
        if [[ -n $running ]]; then
            say "devnet: nodes ${running}run in ${DEVNET_DIR} but ${STATE_FILE} is missing; run 'down'"
        else
            say "devnet: no devnet in ${DEVNET_DIR} (start one with 'scripts/devnet.sh up 3')"
        fi
        return 1
    fi
    P2P_BASE=$STATE_P2P API_BASE=$STATE_API
    local rc=0
    status_table "$STATE_N" || rc=$?
    if [[ -z $(running_indices) ]]; then
        say "devnet: no node runs (start them with 'scripts/devnet.sh up ${STATE_N}')"
    elif ((rc)); then
        say "devnet: not healthy ('scripts/devnet.sh up ${STATE_N}' restarts dead nodes)"
    fi
    return "$rc"
}

cmd_env() {
    if ! read_state || [[ -z $(running_indices) ]]; then die "no devnet runs in ${DEVNET_DIR}"; fi
    API_BASE=$STATE_API
    print_exports
}

cmd_down() {
    local clean=0 arg
    for arg in "$@"; do
        case $arg in
            --clean) clean=1 ;;
            *) die "'down' takes only --clean, not '${arg}'" ;;
        esac
    done
    local i pid pids=() last=()
    for i in $(node_indices); do
        if ! pid=$(node_pid "$i"); then continue; fi
        if ((i == 1)); then last+=("$pid"); else pids+=("$pid"); fi
    done
    # Daemons whose pid file is gone or stale: found by their data dir.
    for pid in $(stray_pids); do
        [[ " ${pids[*]-} ${last[*]-} " == *" ${pid} "* ]] || pids+=("$pid")
    done
    if ((${#pids[@]} + ${#last[@]})); then
        say "devnet: stopping $((${#pids[@]} + ${#last[@]})) node(s)"
        stop_pids "${pids[@]+"${pids[@]}"}" -- "${last[@]+"${last[@]}"}"
    else
        say "devnet: no node runs in ${DEVNET_DIR}"
    fi
    for i in $(node_indices); do rm -f "$(node_dir "$i")/pid"; done
    if ((clean)); then
        for i in $(node_indices); do rm -rf "$(node_dir "$i")"; done
        rm -f "$STATE_FILE" "$DEVNET_DIR/lock"
        rmdir "$DEVNET_DIR" 2>/dev/null || true
        say "devnet: removed the node data dirs in ${DEVNET_DIR}"
    else
        rm -f "$STATE_FILE"
    fi
}

main() {
    local command=${1:-}
    case $command in
        -h | --help | help)
            usage
            return 0
            ;;
        up | status | env | down) shift ;;
        "") die "a command is needed: up [N] | status | env | down [--clean] (see --help)" ;;
        *) die "unknown command '${command}' (see --help)" ;;
    esac
    check_settings
    # One devnet.sh at a time per devnet dir.
    exec 9>"$DEVNET_DIR/lock"
    if command -v flock >/dev/null && ! flock -w 120 9; then
        die "another scripts/devnet.sh holds ${DEVNET_DIR}/lock"
    fi
    case $command in
        up)
            (($# <= 1)) || die "'up' takes one argument, the node count"
            cmd_up "$@"
            ;;
        status) cmd_status ;;
        env) cmd_env ;;
        down) cmd_down "$@" ;;
    esac
}

main "$@"
