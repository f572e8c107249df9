#!/bin/bash
# Start N SSH test hosts (default 3): network namespaces mh1..mhN on bridge mbr0,
# each with its own sshd at 10.200.0.1K. Idempotent. See README.md.
# Usage: start.sh [N]      State dir: ${MUSTER_SSH_STATE:-/tmp/muster-sshhosts}
. "$(dirname "$(readlink -f "$0")")/lib.sh"

N=${1:-3}
check_k "$N"
need_root
t0=$(date +%s%N)

# 1. packages
missing=
[ -x "$SSHD" ] || missing="$missing openssh-server"
command -v ssh >/dev/null && command -v ssh-keygen >/dev/null || missing="$missing openssh-client"
command -v ip >/dev/null || missing="$missing iproute2"
command -v unshare >/dev/null || missing="$missing util-linux"
command -v hostname >/dev/null || missing="$missing hostname"
if [ -n "$missing" ]; then
    say "installing$missing"
    # Without systemd, openssh-server's postinst would start a system-wide sshd
    # on port 22; forbid service starts unless a policy already exists.
    made_policy=
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        made_policy=1
    fi
    rc=0
    if [ -z "$(find /var/lib/apt/lists -name '*_Packages*' -print -quit 2>/dev/null)" ]; then
        apt-get update -qq || rc=$?
    fi
    # shellcheck disable=SC2086
    [ $rc -ne 0 ] || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
        --no-install-recommends $missing >/dev/null || rc=$?
    [ -z "$made_policy" ] || rm -f /usr/sbin/policy-rc.d
    [ $rc -eq 0 ] || die "apt-get failed installing$missing"
fi

# 2. client key and authorized_keys
mkdir -p "$STATE"
chmod 700 "$STATE"
if [ ! -s "$STATE/id_ed25519" ]; then
    rm -f "$STATE/id_ed25519.pub"
    ssh-keygen -q -t ed25519 -N '' -C muster-test -f "$STATE/id_ed25519" </dev/null
    say "client key $STATE/id_ed25519 created"
fi
[ -s "$STATE/id_ed25519.pub" ] || ssh-keygen -y -f "$STATE/id_ed25519" >"$STATE/id_ed25519.pub"
cp "$STATE/id_ed25519.pub" "$STATE/authorized_keys"

# 3. bridge (never one the machine has, nor a subnet it uses)
if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
    other=$(ip -o -4 addr show | awk -v b="$BRIDGE" '$4 ~ /^10\.200\.0\./ && $2 != b {print $2}' | head -n1)
    [ -z "$other" ] || die "10.200.0.0/24 is already used by $other on this machine: not creating $BRIDGE"
    ip link add "$BRIDGE" type bridge || die "cannot create bridge $BRIDGE"
    ip link set dev "$BRIDGE" alias "$MARK"
    say "bridge $BRIDGE created"
fi
link_ours "$BRIDGE" || die "a link named $BRIDGE exists that the test hosts did not make: not touching it"
ip addr replace "$BRIDGE_ADDR/24" dev "$BRIDGE"
ip link set "$BRIDGE" up

# 4. namespaces and links
for k in $(seq "$N"); do
    ns=$(host_ns "$k"); veth=$(host_veth "$k"); addr=$(host_ip "$k")
    if ! ns_exists "$k"; then
        ip netns add "$ns" || die "cannot create netns $ns"
        ip -n "$ns" link set dev lo alias "$MARK"
    fi
    ns_ours "$k" || die "a network namespace named $ns exists that the test hosts did not make: not touching it"
    if ! ip link show "$veth" >/dev/null 2>&1; then
        ip -n "$ns" link del eth0 2>/dev/null || true
        ip link add "$veth" type veth peer name eth0 netns "$ns" ||
            die "cannot create veth $veth into $ns"
        ip link set dev "$veth" alias "$MARK"
        say "h$k: namespace $ns, $veth <-> eth0, $addr"
    fi
    link_ours "$veth" || die "a link named $veth exists that the test hosts did not make: not touching it"
    ip link set "$veth" master "$BRIDGE" up
    ip -n "$ns" link set lo up
    ip -n "$ns" addr replace "$addr/24" dev eth0
    ip -n "$ns" link set eth0 up
    ip -n "$ns" route replace default via "$BRIDGE_ADDR" dev eth0
done

# 5. per-namespace /etc/hosts (ip netns exec bind-mounts /etc/netns/mhK/hosts
#    over /etc/hosts), so that hK resolves inside the hosts. Rewritten in place:
#    a running host's bind mount keeps seeing the same file.
hosts=$(existing_hosts)
for k in $hosts; do
    mkdir -p "/etc/netns/$(host_ns "$k")"
    {
        echo "127.0.0.1 localhost"
        echo "::1 localhost ip6-localhost ip6-loopback"
        echo "$BRIDGE_ADDR muster-gw"
        for j in $hosts; do echo "$(host_ip "$j") h$j"; done
    } >"/etc/netns/$(host_ns "$k")/hosts"
done

# 6. sshd per host, then client files
for k in $(seq "$N"); do start_sshd "$k"; done
write_client_files

# 7. wait until every host answers
waits=()
for k in $(seq "$N"); do wait_ssh "$k" 20 & waits+=($!); done
failed=0
for p in "${waits[@]}"; do wait "$p" || failed=1; done
[ "$failed" = 0 ] || die "not every host became reachable"
say "$N host(s) reachable in $(( ($(date +%s%N) - t0) / 1000000 )) ms: ssh -F $STATE/ssh_config h1"
