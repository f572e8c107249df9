#!/bin/bash
# Build the test cluster's binaries from the Go module proxy, each cached under
# $MUSTER_CACHE/kubernetes/bin/<tool>-<version>/ and skipped when already there:
#   kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl
#   (k8s.io/kubernetes, through a wrapper module), etcd (a tiny main over etcdmain),
#   crictl, coredns, helm, kubeconform; and kubeconform's JSON schemas for the
#   Kubernetes kinds (kube-schemas.py), in $MUSTER_CACHE/kubernetes/schemas/.
# Sequential and niced: the machine's CPUs are shared. See README.md.
# Usage: build.sh [--times FILE]   (appends "tool seconds" lines to FILE)
. "$(dirname "$(readlink -f "$0")")/lib.sh"

times_file=
[ "${1:-}" != --times ] || times_file=${2:?--times needs a file}

# a non-login shell may lack the toolchain's usual place on PATH
command -v go >/dev/null || [ ! -x /usr/local/go/bin/go ] || PATH="/usr/local/go/bin:$PATH"
command -v go >/dev/null || die "go not found (Go >= 1.26 is needed to build Kubernetes $K8S_VERSION)"
gov=$(go env GOVERSION); gov=${gov#go}
[ "${gov%%.*}" -gt 1 ] || { m=${gov#*.}; [ "${m%%.*}" -ge 26 ]; } ||
    die "Go $gov is too old: helm $HELM_VERSION and kubeconform $KUBECONFORM_VERSION need Go >= 1.26 (GOTOOLCHAIN=local: no download)"
export GOTOOLCHAIN=local GOFLAGS=-trimpath CGO_ENABLED=0
NICE=(nice -n 10)

record() { # tool start_ms
    local s=$(( ($(now_ms) - $2) / 1000 ))
    say "built $1 in ${s}s"
    [ -z "$times_file" ] || echo "$1 $s" >>"$times_file"
}

# Moves the freshly built $tmp/<bin> into place only when complete, so an
# interrupted build never leaves a half binary in the cache.
install_bin() { # tmpdir outdir name
    mkdir -p "$2"
    mv -f "$1/$3" "$2/$3.new"
    mv -f "$2/$3.new" "$2/$3"
}

# --- Kubernetes ---------------------------------------------------------------------
K8S_BINS=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl)

k8s_wrapper() {
    # `go install k8s.io/kubernetes/cmd/X@v` fails: upstream's go.mod replaces its 29
    # k8s.io/* staging modules with ./staging/src/... . A wrapper module requiring
    # k8s.io/kubernetes and replacing each of them with its published v0.x version
    # builds instead.
    local src="$KSRC/kubernetes-$K8S_VERSION" mod tmp
    [ -s "$src/go.sum" ] && [ -s "$src/.complete" ] && { echo "$src"; return; }
    say "preparing the wrapper module for k8s.io/kubernetes $K8S_VERSION"
    rm -rf "$src"; mkdir -p "$src"
    mod=$(cd "$src" && go mod download -json "k8s.io/kubernetes@$K8S_VERSION" |
        sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')
    [ -s "$mod" ] || die "cannot download k8s.io/kubernetes@$K8S_VERSION"
    {
        echo "module muster.test/k8s-build"
        echo
        echo "go 1.24.0"
        echo
        echo "require k8s.io/kubernetes $K8S_VERSION"
        echo
        # every "k8s.io/X v0.0.0" requirement of upstream is a staging module
        grep -E '^[[:space:]]+k8s\.io/[A-Za-z0-9._/-]+ v0\.0\.0([[:space:]]|$)' "$mod" |
            awk -v v="$K8S_STAGING" '{print "replace " $1 " => " $1 " " v}' | sort -u
    } >"$src/go.mod"
    [ "$(grep -c '^replace' "$src/go.mod")" -ge 20 ] || die "found too few staging modules in $mod"
    {
        echo "//go:build tools"
        echo
        echo "// Package tools names the commands built from this wrapper module."
        echo "package tools"
        echo
        echo "import ("
        for b in "${K8S_BINS[@]}"; do echo "	_ \"k8s.io/kubernetes/cmd/$b\""; done
        echo ")"
    } >"$src/tools.go"
    (cd "$src" && "${NICE[@]}" go mod tidy) >&2 || die "go mod tidy failed in $src"
    date -u +%FT%TZ >"$src/.complete"
    echo "$src"
}

build_k8s() {
    local out="$KBIN/kubernetes-$K8S_VERSION" b src tmp t0 ldflags=(-s -w) maj min
    local missing=()
    for b in "${K8S_BINS[@]}"; do [ -x "$out/$b" ] || missing+=("$b"); done
    [ ${#missing[@]} -gt 0 ] || { say "kubernetes $K8S_VERSION binaries cached in $out"; return; }
    src=$(k8s_wrapper)
    maj=${K8S_VERSION#v}; maj=${maj%%.*}
    min=${K8S_VERSION#v*.}; min=${min%%.*}
    # what upstream's hack/lib/version.sh stamps (kubectl version, skew checks)
    for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
        ldflags+=(-X "$pkg.gitVersion=$K8S_VERSION" -X "$pkg.gitMajor=$maj"
            -X "$pkg.gitMinor=$min" -X "$pkg.gitTreeState=clean"
            -X "$pkg.buildDate=1970-01-01T00:00:00Z")
    done
    tmp=$(mktemp -d)
    for b in "${missing[@]}"; do
        say "building $b $K8S_VERSION (go build; the first is long: ~15 min cold)"
        t0=$(now_ms)
        (cd "$src" && "${NICE[@]}" go build -o "$tmp/$b" -ldflags "${ldflags[*]}" \
            "k8s.io/kubernetes/cmd/$b") || { rm -rf "$tmp"; die "building $b failed"; }
        install_bin "$tmp" "$out" "$b"
        record "$b" "$t0"
    done
    rm -rf "$tmp"
}

# --- etcd: a tiny main over etcdmain -----------------------------------------------------
build_etcd() {
    local out; out=$(dirname "$(etcd_bin)")
    [ -x "$out/etcd" ] && { say "etcd $ETCD_VERSION cached"; return; }
    local src="$KSRC/etcd-$ETCD_VERSION" tmp t0
    t0=$(now_ms)
    if [ ! -s "$src/.complete" ]; then
        rm -rf "$src"; mkdir -p "$src"
        printf 'module muster.test/etcd-build\n\ngo 1.24.0\n\nrequire go.etcd.io/etcd/server/v3 %s\n' \
            "$ETCD_VERSION" >"$src/go.mod"
        cat >"$src/main.go" <<'EOF'
// Command etcd runs etcd's own entry point (go.etcd.io/etcd/server/v3/etcdmain).
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
EOF
        (cd "$src" && "${NICE[@]}" go mod tidy) >&2 || die "go mod tidy failed in $src"
        date -u +%FT%TZ >"$src/.complete"
    fi
    say "building etcd $ETCD_VERSION"
    tmp=$(mktemp -d)
    (cd "$src" && "${NICE[@]}" go build -o "$tmp/etcd" -ldflags "-s -w" .) ||
        { rm -rf "$tmp"; die "building etcd failed"; }
    install_bin "$tmp" "$out" etcd
    rm -rf "$tmp"
    record etcd "$t0"
}

# --- tools whose own go.mod builds as is: go install pkg@version ------------------------
go_install() { # name package version ldflags...
    local name=$1 pkg=$2 ver=$3; shift 3
    local out="$KBIN/$name-$ver" tmp t0
    [ -x "$out/$name" ] && { say "$name $ver cached"; return; }
    say "building $name $ver (go install $pkg@$ver)"
    t0=$(now_ms)
    tmp=$(mktemp -d)
    GOBIN="$tmp" "${NICE[@]}" go install -ldflags "-s -w $*" "$pkg@$ver" ||
        { rm -rf "$tmp"; die "building $name failed"; }
    install_bin "$tmp" "$out" "$name"
    rm -rf "$tmp"
    record "$name" "$t0"
}

helm_ldflags() {
    # helm's Makefile stamps its version and the Kubernetes version that
    # `helm template`/`helm lint` assume (from the client-go it is built with).
    local mod cg maj min
    mod=$(cd /tmp && go mod download -json "helm.sh/helm/v3@$HELM_VERSION" |
        sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')
    cg=$(awk '$1 == "k8s.io/client-go" {print $2}' "$mod")
    cg=${cg#v}; maj=$(( ${cg%%.*} + 1 )); min=${cg#*.}; min=${min%%.*}
    echo "-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" \
        "-X helm.sh/helm/v3/internal/version.gitTreeState=clean" \
        "-X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=$maj" \
        "-X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$min" \
        "-X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=$maj" \
        "-X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$min"
}

t_all=$(now_ms)
build_k8s
build_etcd
go_install crictl sigs.k8s.io/cri-tools/cmd/crictl "$CRICTL_VERSION" \
    "-X sigs.k8s.io/cri-tools/pkg/version.Version=$CRICTL_VERSION"
go_install coredns github.com/coredns/coredns "$COREDNS_VERSION"
# shellcheck disable=SC2046
go_install helm helm.sh/helm/v3/cmd/helm "$HELM_VERSION" $(helm_ldflags)
go_install kubeconform github.com/yannh/kubeconform/cmd/kubeconform "$KUBECONFORM_VERSION" \
    "-X main.version=$KUBECONFORM_VERSION"
# kubeconform's schemas, offline: from the OpenAPI document in k8s.io/kubernetes
schemas() {
    local dir="$KCACHE/schemas" marker swagger
    marker="$dir/$K8S_VERSION-standalone-strict/.complete"
    [ -s "$marker" ] && { say "kubeconform schemas for $K8S_VERSION cached in $dir"; return; }
    swagger="$(cd /tmp && go mod download -json "k8s.io/kubernetes@$K8S_VERSION" |
        sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')/api/openapi-spec/swagger.json"
    [ -s "$swagger" ] || die "no $swagger"
    python3 "$K8S_DIR/kube-schemas.py" --swagger "$swagger" --out "$dir" --version "$K8S_VERSION" >&2
    date -u +%FT%TZ >"$marker"
}
schemas
say "binaries ready in $KBIN ($(since "$t_all"))"
