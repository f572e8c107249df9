#!/bin/bash
# Build an image holding one binary on a tiny root (no shell, no package
# manager), e.g. the muster operator image, as a docker-save tar; optionally
# import it into the running test cluster's containerd.
#
# Usage: mkimage.sh --binary PATH --tag NAME:TAG [--out FILE.tar] [--import]
#                   [--name IN_IMAGE_NAME] [--user UID:GID] [--cmd JSON-LIST]
#   --binary  the executable; if it is dynamically linked, the shared libraries
#             `ldd` names (and the loader) are copied in as well
#   --tag     image reference, e.g. muster.test/muster-operator:dev (pods then use
#             imagePullPolicy: Never or IfNotPresent)
#   --out     default: $MUSTER_CACHE/kubernetes/images/custom/<name>-<tag>.tar
#   --import  ctr -n k8s.io images import into the running test cluster
#   --name    file name inside the image: /usr/local/bin/<name> (default: the
#             binary's basename); it is the image's entrypoint
#   --user    default 65532:65532 (a "nonroot" user, listed in /etc/passwd)
#   --cmd     default arguments, e.g. '["operator"]'
# The root has /etc/passwd, /etc/group, /etc/nsswitch.conf, /tmp (1777) and the
# host's CA bundle at /etc/ssl/certs/ca-certificates.crt.
. "$(dirname "$(readlink -f "$0")")/lib.sh"

binary= tag= out= import= name= user=65532:65532 cmd=
while [ $# -gt 0 ]; do
    case "$1" in
        --binary) binary=${2:?}; shift 2 ;;
        --tag) tag=${2:?}; shift 2 ;;
        --out) out=${2:?}; shift 2 ;;
        --import) import=1; shift ;;
        --name) name=${2:?}; shift 2 ;;
        --user) user=${2:?}; shift 2 ;;
        --cmd) cmd=${2:?}; shift 2 ;;
        *) die "mkimage.sh: unknown argument '$1' (see the usage at the top of $0)" ;;
    esac
done
[ -n "$binary" ] || die "mkimage.sh: --binary is required"
[ -n "$tag" ] || die "mkimage.sh: --tag is required"
[ -f "$binary" ] && [ -x "$binary" ] || die "mkimage.sh: --binary $binary is not an executable file"
case "$tag" in *:*) ;; *) die "mkimage.sh: --tag must be NAME:TAG, got '$tag'" ;; esac
[ -n "$name" ] || name=$(basename "$binary")
case "$name" in ''|*/*|.*) die "mkimage.sh: --name must be a plain file name, got '$name'" ;; esac
case "$user" in *[!0-9:]*|'') die "mkimage.sh: --user must be UID[:GID], got '$user'" ;; esac
if [ -z "$out" ]; then
    safe=$(printf '%s' "$tag" | tr -c 'A-Za-z0-9._-' '_')
    out="$KIMG/custom/$safe.tar"
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root="$work/rootfs"
mkdir -p "$root"/{usr/local/bin,etc/ssl/certs,tmp}
chmod 1777 "$root/tmp"
cp "$binary" "$root/usr/local/bin/$name"
chmod 755 "$root/usr/local/bin/$name"
uid=${user%%:*}; gid=${user#*:}; [ "$gid" != "$user" ] || gid=$uid
cat >"$root/etc/passwd" <<EOF
root:x:0:0:root:/root:/sbin/nologin
nonroot:x:$uid:$gid:nonroot:/tmp:/sbin/nologin
EOF
cat >"$root/etc/group" <<EOF
root:x:0:
nonroot:x:$gid:
EOF
echo "hosts: files dns" >"$root/etc/nsswitch.conf"
[ ! -f /etc/ssl/certs/ca-certificates.crt ] || cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/"

# a dynamically linked binary gets its libraries at the same paths
if ldd "$binary" >/dev/null 2>&1; then
    ldd "$binary" | grep -oE '/[^ ]+' | sort -u | while read -r lib; do
        [ -e "$lib" ] || continue
        mkdir -p "$root$(dirname "$lib")"
        cp -L "$lib" "$root$lib"
    done
    say "copied the shared libraries of $binary into the image"
fi

args=(--rootfs "$root" --tag "$tag" --out "$out" --entrypoint "[\"/usr/local/bin/$name\"]" --user "$user")
[ -z "$cmd" ] || args+=(--cmd "$cmd")
"$K8S_DIR/pack-image.py" "${args[@]}" >/dev/null
say "image $tag: $out ($(du -h "$out" | cut -f1))"

if [ -n "$import" ]; then
    need_root
    [ -S "$RUN/containerd/containerd.sock" ] || die "the test cluster is not running (start.sh)"
    ctr_k8s images import --snapshotter overlayfs "$out" >/dev/null || die "import of $out failed"
    say "imported $tag into the test cluster"
fi
echo "$out"
