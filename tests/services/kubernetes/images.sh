#!/bin/bash
# Build the test cluster's images as docker-save tars under
# $MUSTER_CACHE/kubernetes/images/, each skipped when its key is already built:
#   pause  - a tiny static C pause (the pod sandbox), key: the C source's hash;
#   dask   - Debian bookworm minbase + a venv with the dask/distributed pins of
#            tests/requirements.txt, key: those pins + the recipe version.
# start.sh imports them into the cluster's containerd (ctr -n k8s.io images import).
# Writes $KIMG/<name>.ref ("<name>-<key>.tar TAG...") next to $KIMG/<name>-<key>.tar.
# Usage: images.sh [--times FILE]
. "$(dirname "$(readlink -f "$0")")/lib.sh"
need_root

times_file=
[ "${1:-}" != --times ] || times_file=${2:?--times needs a file}
record() { # what start_ms
    local s=$(( ($(now_ms) - $2) / 1000 ))
    say "built image $1 in ${s}s"
    [ -z "$times_file" ] || echo "image-$1 $s" >>"$times_file"
}
mkdir -p "$KIMG"

# --- pause ------------------------------------------------------------------------------
PAUSE_C='/* The pod sandbox: holds the pod namespaces, reaps orphans, exits on a signal. */
#include <signal.h>
#include <stdio.h>
#include <sys/wait.h>
#include <unistd.h>

static void quit(int sig) { (void)sig; _exit(0); }

static void reap(int sig) {
    (void)sig;
    while (waitpid(-1, NULL, WNOHANG) > 0) {}
}

int main(void) {
    struct sigaction sa = {0};
    sa.sa_handler = quit;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sa.sa_handler = reap;
    sa.sa_flags = SA_NOCLDSTOP | SA_RESTART;
    sigaction(SIGCHLD, &sa, NULL);
    if (getpid() != 1) fprintf(stderr, "pause: not pid 1, reaping only my own children\n");
    for (;;) pause();
}
'

build_pause() {
    local key tar t0 work
    key=$(printf '%s' "$PAUSE_C" | sha256sum | cut -c1-12)
    tar="$KIMG/pause-$key.tar"
    if [ -s "$tar" ] && [ "$(cat "$KIMG/pause.ref" 2>/dev/null)" = "${tar##*/} $PAUSE_IMAGE" ]; then
        say "pause image cached ($tar)"; return
    fi
    command -v gcc >/dev/null && [ -e /usr/lib/x86_64-linux-gnu/libc.a ] || need_apt gcc libc6-dev
    t0=$(now_ms)
    work=$(mktemp -d)
    printf '%s' "$PAUSE_C" >"$work/pause.c"
    mkdir -p "$work/rootfs"
    gcc -Os -static -o "$work/rootfs/pause" "$work/pause.c" || { rm -rf "$work"; die "gcc pause failed"; }
    strip "$work/rootfs/pause"
    "$K8S_DIR/pack-image.py" --rootfs "$work/rootfs" --tag "$PAUSE_IMAGE" --out "$tar" \
        --entrypoint '["/pause"]' --user 65535:65535 >/dev/null
    rm -rf "$work"
    echo "${tar##*/} $PAUSE_IMAGE" >"$KIMG/pause.ref"
    find "$KIMG" -maxdepth 1 -name 'pause-*.tar' ! -name "${tar##*/}" -delete
    record pause "$t0"
}

# --- dask ---------------------------------------------------------------------------------
DASK_RECIPE=1   # bump when the recipe below changes, so the key changes
DEBIAN_SUITE=bookworm
DEBIAN_MIRROR=${MUSTER_DEBIAN_MIRROR:-http://deb.debian.org/debian}

dask_pins() {
    grep -E '^[[:space:]]*(dask(\[[^]]*\])?|distributed)[[:space:]]*==' "$REPO/tests/requirements.txt" |
        sed 's/[[:space:]]*#.*//; s/[[:space:]]//g' | sort
}

# Unmounts whatever a failed debootstrap left mounted under DIR, then removes DIR
# without crossing into another file system.
cleanup_build() {
    local m
    awk -v d="$1/" 'index($2, d) == 1 {print $2}' /proc/mounts | sort -r |
        while read -r m; do umount -l "$m" 2>/dev/null || true; done
    rm -rf --one-file-system "$1"
}

build_dask() {
    local pins key ver tar tags t0 work root
    pins=$(dask_pins)
    [ -n "$pins" ] || die "no dask pin found in tests/requirements.txt"
    ver=$(printf '%s\n' "$pins" | sed -n 's/^dask\(\[[^]]*\]\)\{0,1\}==//p' | head -1)
    [ -n "$ver" ] || ver=$(printf '%s\n' "$pins" | sed -n 's/^distributed==//p' | head -1)
    key=$(printf '%s\n%s\n%s\n' "$pins" "$DEBIAN_SUITE" "$DASK_RECIPE" | sha256sum | cut -c1-12)
    tar="$KIMG/dask-$key.tar"
    tags="muster.test/dask:$ver muster.test/dask:$ver-$key"
    if [ -s "$tar" ] && [ "$(cat "$KIMG/dask.ref" 2>/dev/null)" = "${tar##*/} $tags" ]; then
        say "dask image cached ($tar)"; return
    fi
    need_apt debootstrap
    t0=$(now_ms)
    work=$(mktemp -d "$KIMG/.dask-build-XXXXXX")
    root="$work/rootfs"
    # shellcheck disable=SC2064
    trap "cleanup_build '$work'" EXIT
    say "debootstrap $DEBIAN_SUITE minbase into $root (a few minutes cold)"
    nice -n 10 debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
        "$DEBIAN_SUITE" "$root" "$DEBIAN_MIRROR" >"$work/debootstrap.log" 2>&1 ||
        { tail -20 "$work/debootstrap.log" >&2; die "debootstrap failed (log above)"; }
    # pip inside the chroot needs a resolver and this machine's CA bundle
    cp /etc/resolv.conf "$root/etc/resolv.conf"
    cp /etc/ssl/certs/ca-certificates.crt "$root/tmp/host-ca.crt"
    say "installing $(echo "$pins" | tr '\n' ' ')into the image's venv (PyPI)"
    local pin_arr; mapfile -t pin_arr <<<"$pins"
    chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
        PIP_CERT=/tmp/host-ca.crt PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_DEFAULT_TIMEOUT=180 \
        sh -ec 'python3 -m venv /opt/dask
                /opt/dask/bin/pip install -q --no-cache-dir "$@"' sh "${pin_arr[@]}" ||
        die "pip install in the image failed"
    # import check with a /proc (psutil needs it), mounted in a private mount
    # namespace that vanishes with the command: nothing to unmount after
    unshare --mount --propagation private sh -ec 'mount -t proc proc "$1/proc"
        chroot "$1" /opt/dask/bin/python -c "import dask, distributed
print(\"image has dask\", dask.__version__, \"distributed\", distributed.__version__)"' sh "$root" >&2 ||
        die "dask does not import in the image"
    # what the runtime provides or the image does not need
    : >"$root/etc/resolv.conf"
    rm -rf "$root/tmp/host-ca.crt" "$root/var/cache/apt/archives/"*.deb \
        "$root/var/lib/apt/lists/"* "$root/usr/share/doc" "$root/usr/share/man" \
        "$root/usr/share/info" "$root/var/log/"*.log "$root/var/cache/debconf/"*-old
    # shellcheck disable=SC2086
    "$K8S_DIR/pack-image.py" --rootfs "$root" $(for t in $tags; do echo --tag "$t"; done) \
        --out "$tar" --env PATH=/opt/dask/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        --env LANG=C.UTF-8 --cmd '["python3"]' >/dev/null
    cleanup_build "$work"; trap - EXIT
    echo "${tar##*/} $tags" >"$KIMG/dask.ref"
    # older keys of the same image are garbage now
    find "$KIMG" -maxdepth 1 -name 'dask-*.tar' ! -name "dask-$key.tar" -delete
    record dask "$t0"
    say "dask image $tags: $(du -h "$tar" | cut -f1)"
}

build_pause
build_dask
