#!/usr/bin/env bash
# Build the Kubernetes control plane the test suite starts (tests/k8s/): kube-apiserver and
# kube-controller-manager 1.20.2 from Debian bookworm's `kubernetes` source package, compiled
# offline with Debian's Go, and etcd from Debian bookworm's `etcd-server` package. No Go module
# proxy is needed: every Go dependency is vendored in the source package.
#
# usage: scripts/k8s-build.sh [--check]
#   output:  $SQLIFIER_K8S_CACHE/bin/{kube-apiserver,kube-controller-manager,etcd}
#            (default cache: $HOME/.cache/sqlifier/k8s-1.20.2, outside the repository)
#   --check  build nothing: exit 0 if the binaries are in the cache, 3 if they are not but
#            every distribution package the build needs is installed, 4 otherwise (the missing
#            packages are printed)
# Once built, a second run returns at once. Cost of the build (2 cores): 5-8 minutes, 1.4 GB
# of memory at its peak, ~3.5 GB of disk while it runs (removed afterwards; ~250 MB remain).
# Needs: apt-get (Debian or a derivative), root or sudo for installing the build packages
# (golang-go rsync dpkg-dev golang-github-modern-go-reflect2-dev golang-github-json-iterator-go-dev)
set -euo pipefail
VERSION=1.20.2
W=$(realpath -m "${SQLIFIER_K8S_CACHE:-$HOME/.cache/sqlifier/k8s-$VERSION}")
STAMP="$W/bin/BUILT"
BUILD_PACKAGES=(golang-go rsync dpkg-dev golang-github-modern-go-reflect2-dev
                golang-github-json-iterator-go-dev)

built() {
    [ -f "$STAMP" ] && [ -x "$W/bin/kube-apiserver" ] && [ -x "$W/bin/kube-controller-manager" ] \
        && [ -x "$W/bin/etcd" ]
}
missing_packages() {
    local p
    for p in "${BUILD_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q 'install ok installed' \
            || printf '%s ' "$p"
    done
}

if built; then
    [ "${1:-}" = "--check" ] || echo "k8s-build: kube-apiserver, kube-controller-manager and etcd are in $W/bin"
    exit 0
fi
if [ "${1:-}" = "--check" ]; then
    if ! command -v dpkg-query >/dev/null 2>&1; then echo "apt-get/dpkg (Debian) is not available"; exit 4; fi
    m=$(missing_packages)
    if [ -n "$m" ]; then echo "missing distribution packages: ${m% }"; exit 4; fi
    exit 3
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "k8s-build: needs apt-get (Debian 12 or a derivative) to fetch Debian's kubernetes source" >&2
    exit 1
fi

mkdir -p "$W"
exec 9>"$W/.lock"
flock 9                      # a second run waits for the first, then finds the binaries built
if built; then echo "k8s-build: built meanwhile in $W/bin"; exit 0; fi
echo "k8s-build: building Kubernetes $VERSION control plane into $W (5-8 minutes)"

SUDO=()
if [ "$(id -u)" != 0 ]; then SUDO=(sudo); fi
m=$(missing_packages)
if [ -n "$m" ]; then
    echo "k8s-build: installing $m"
    "${SUDO[@]}" apt-get update -qq
    # shellcheck disable=SC2086
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $m >/dev/null
fi

# A private apt configuration (nothing under /etc/apt changes): the system's own Debian mirror,
# bookworm, with its sources (the system's lists usually have no deb-src).
mkdir -p "$W/bin" "$W/apt/lists/partial" "$W/apt/cache/archives/partial" "$W/home"
MIRROR=$(sed -n 's/^URIs: *\(\S*\/debian\)\/*$/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -1 || true)
MIRROR=${MIRROR:-http://deb.debian.org/debian}
KEY=/usr/share/keyrings/debian-archive-keyring.gpg
printf 'deb [signed-by=%s] %s bookworm main\ndeb-src [signed-by=%s] %s bookworm main\n' \
    "$KEY" "$MIRROR" "$KEY" "$MIRROR" > "$W/apt/sources.list"
APT=(-o "Dir::Etc::SourceList=$W/apt/sources.list" -o Dir::Etc::SourceParts=/nonexistent
     -o "Dir::State::Lists=$W/apt/lists" -o "Dir::Cache=$W/apt/cache"
     -o APT::Sandbox::User=root)
apt-get "${APT[@]}" update -qq

# etcd 3.4 (bookworm's etcd-server): a Go binary needing only libc, unpacked, not installed.
if [ ! -x "$W/bin/etcd" ]; then
    (cd "$W/apt" && rm -rf etcd-x etcd-server_*.deb \
        && apt-get "${APT[@]}" download etcd-server/bookworm && dpkg-deb -x etcd-server_*.deb etcd-x)
    cp "$W/apt/etcd-x/usr/bin/etcd" "$W/bin/etcd.part" && mv "$W/bin/etcd.part" "$W/bin/etcd"
fi

if [ ! -x "$W/bin/kube-apiserver" ] || [ ! -x "$W/bin/kube-controller-manager" ]; then
    [ -d "$W/src" ] && [ -n "$(ls -d "$W"/src/kubernetes-*/ 2>/dev/null)" ] \
        || { rm -rf "$W/src" && mkdir -p "$W/src" \
             && (cd "$W/src" && apt-get "${APT[@]}" source -qq kubernetes/bookworm); }
    K=$(ls -d "$W"/src/kubernetes-*/ | head -1)
    # Trap 1: the vendored reflect2 1.0.1 / json-iterator crash (map iteration) with Go >= 1.18;
    # Debian's packaged copies are fixed.
    rm -rf "$K/vendor/github.com/modern-go/reflect2" "$K/vendor/github.com/json-iterator/go"
    cp -r /usr/share/gocode/src/github.com/modern-go/reflect2 "$K/vendor/github.com/modern-go/reflect2"
    cp -r /usr/share/gocode/src/github.com/json-iterator/go "$K/vendor/github.com/json-iterator/go"
    rm -f "$K/vendor/github.com/modern-go/reflect2/go.mod" "$K/vendor/github.com/json-iterator/go/go.mod"
    # Trap 2: `make`, not `go build`: it generates the OpenAPI definitions first (a plain build
    # fails with "undefined: openapi.GetOpenAPIDefinitions"); it needs rsync.
    (cd "$K" && CGO_ENABLED=0 GOPROXY=off HOME="$W/home" nice -n 10 \
        make WHAT="cmd/kube-apiserver cmd/kube-controller-manager")
    for b in kube-apiserver kube-controller-manager; do
        cp "$K/_output/bin/$b" "$W/bin/$b.part" && mv "$W/bin/$b.part" "$W/bin/$b"
    done
fi
"$W/bin/kube-apiserver" --version
"$W/bin/etcd" --version | head -1
echo "$VERSION" > "$STAMP"
# The sources and the Go build cache (~3 GB) are not needed any more.
chmod -R u+w "$W/src" "$W/home" 2>/dev/null || true
rm -rf "$W/src" "$W/home" "$W/apt"
echo "k8s-build: done: $W/bin"
ls -la "$W/bin"
