#!/bin/sh
# The kernel matrix scenarios: brokerwatch audits of bw-netprobe on loopback. Runs as
# /scenarios.sh in a QEMU guest, or on the host with IN="ip netns exec NS" (the probes then
# run inside a network namespace of the caller's). `cargo xtask vm-test` checks the output:
# each scenario is framed by "=== BEGIN name" and "=== END name rc=N".
BW=${BW:-brokerwatch}
P=${PROBE:-bw-netprobe}
IN=${IN:-}
CG=${CGROUP2:-/sys/fs/cgroup}
BW_CERT=${BW_CERT:-/etc/bw-cert.pem}
BW_KEY=${BW_KEY:-/etc/bw-key.pem}
# The run's files, in a directory of its own: a file left by an earlier run (on the host,
# /tmp outlives runs) would answer a wait for "ready" or "watching" before this run's
# process wrote it, and the scenario would act before brokerwatch watched.
T=$(mktemp -d /tmp/bw-vm.XXXXXX) || exit 1

scenario() {
    name=$1
    shift
    echo "=== BEGIN $name"
    "$@" 2>&1
    echo "=== END $name rc=$?"
}

$IN "$P" serve --dns 127.0.0.1:53 --record vm.tracker.test=127.0.0.5 \
    --tcp 127.0.0.1:4433 --tcp '[::1]:4433' --tcp 127.0.0.5:4433 --tcp 127.0.0.6:4433 \
    >$T/serve.out 2>&1 &
SERVE=$!
i=0
until grep -q ready $T/serve.out 2>/dev/null; do
    i=$((i + 1))
    if [ "$i" -gt 100 ]; then
        echo "=== SERVE-FAILED"
        cat $T/serve.out
        break
    fi
    sleep 0.1
done

scenario version "$BW" --version
scenario tcp "$BW" audit --json -- $IN "$P" tcp:127.0.0.1:4433 tcpnb:127.0.0.1:1
scenario tcp6 "$BW" audit --json -- $IN "$P" 'tcp:[::1]:4433'
scenario udp "$BW" audit --json -- $IN "$P" udp:127.0.0.1:9 'udpconnect:[::1]:9'
scenario grandchild "$BW" audit --json -- $IN "$P" --depth 2 tcp:127.0.0.1:4433
scenario short_lived "$BW" audit --json -- $IN "$P" --spawn 50 tcp:127.0.0.1:4433
scenario dns "$BW" audit --json -- $IN "$P" resolve:vm.tracker.test:4433
scenario tls "$BW" audit --json -- $IN "$P" tls:sni.vm.test@127.0.0.6:4433
scenario loss "$BW" audit --json --ring-size 4K --user-budget off -- $IN "$P" --repeat 3000 udpconnect:127.0.0.1:9
scenario budget "$BW" audit --json --ring-size 64K --user-budget 4K -- $IN "$P" --repeat 3000 udpconnect:127.0.0.1:9

scenario reexec "$BW" audit --json -- $IN "$P" --reexec tcp:127.0.0.1:4433

# Blocking: the DNS answer for a blocked name is read in the kernel (bw_dns_block, which
# needs bpf_loop), so the first connection to its address is denied; another goes through.
cat >$T/block.toml <<'EOF'
[[destination]]
id = "vm-tracker"
company = "VM Tracker"
category = "data-broker"
domains = ["tracker.test"]
source = "kernel matrix"

[[rule]]
id = "vm-block"
apps = "*"
category = "data-broker"
severity = "high"
action = "block"
EOF
scenario block "$BW" audit --json --enforce --policy $T/block.toml -- \
    $IN "$P" resolve:vm.tracker.test:4433 tcp:127.0.0.6:4433

# waits (up to 60 s) until file $2 contains $1
wait_for() {
    i=0
    until grep -q "$1" "$2" 2>/dev/null; do
        i=$((i + 1))
        if [ "$i" -gt 600 ]; then
            echo "timed out waiting for $1 in $2"
            cat "$2"
            return 1
        fi
        sleep 0.1
    done
}

# A Flatpak scope created while an audit watches Zoom: a process in it is Zoom, whatever
# its name. (On the host, outside the network namespace: ip netns exec hides cgroupfs.)
app_scope() {
    # A parent of its own per run: a directory left by an earlier run (same pid) would make
    # mkdir a no-op, and no cgroup would be created for the audit to see.
    parent="$CG/bwvm$$-$(date +%s%N)"
    scope="$parent/app-flatpak-us.zoom.Zoom-7.scope"
    if [ -e "$parent" ]; then
        echo "app_scope: $parent exists already"
        return 1
    fi
    "$BW" -v audit --json --app zoom --duration 120s >$T/scope.json 2>$T/scope.err &
    audit=$!
    wait_for "brokerwatch: watching" $T/scope.err &&
        mkdir "$parent" && mkdir "$scope" &&
        wait_for "app-flatpak-us.zoom.Zoom-7.scope (" $T/scope.err &&
        sh -c "echo \$\$ > '$scope/cgroup.procs' && exec '$P' tcp:127.0.0.1:9"
    kill -INT "$audit"
    wait "$audit"
    cat $T/scope.json
    rmdir "$scope" "$parent" 2>/dev/null
    return 0
}
scenario app_scope app_scope

# Plaintext (issue 25): what openssl s_client hands OpenSSL's SSL_write is read, decoded
# and searched; the address is reported by kind, form and place, never by value.
plaintext() {
    # -rev: the server answers what it reads and never closes on its own (a plain s_server
    # whose input ended sent close_notify after its tickets, and s_client then left without
    # writing the request, about one run in three).
    $IN openssl s_server -quiet -rev -accept 127.0.0.1:4443 -cert "$BW_CERT" -key "$BW_KEY" \
        >/dev/null 2>&1 &
    server=$!
    sleep 1
    printf 'POST /sales-api/match HTTP/1.1\r\nHost: sales.linkedin.com\r\nContent-Length: 28\r\n\r\n{"email":"vm@example.test"}\n' \
        >$T/plain.req
    "$BW" audit --json --email vm@example.test -- \
        $IN sh -c "exec openssl s_client -quiet -no_ign_eof -connect 127.0.0.1:4443 <'$T/plain.req'"
    kill "$server" 2>/dev/null
    wait "$server" 2>/dev/null
    return 0
}
scenario plaintext plaintext

kill "$SERVE" 2>/dev/null
wait "$SERVE" 2>/dev/null
rm -rf "$T"
exit 0
