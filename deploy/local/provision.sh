#!/usr/bin/env bash
# Provisions the binaries of the local, real Kubernetes control plane used by the tests and by
# `deploy/local/run`: kube-apiserver and kube-controller-manager v1.20.2 built from Debian's
# source package, and etcd 3.4 from Debian's etcd-server. Built once and cached outside the clone.
#
# Prints the folder holding the binaries (envtest layout: kube-apiserver, etcd, kube-controller-manager)
# on its last line of stdout. Honours KUBEBUILDER_ASSETS: when it names a folder holding
# kube-apiserver and etcd, nothing is built and that folder is printed.
#
# Why from source: Debian bookworm ships no binary kube-apiserver, and this machine reaches no other
# registry. Its source package `kubernetes` is the full upstream v1.20.2 tree with vendor/.
set -euo pipefail

K8S_VERSION=v1.20.2
CACHE_ROOT="${XDG_CACHE_HOME:-$HOME/.cache}/block-controller"
BIN_DIR="$CACHE_ROOT/k8s-$K8S_VERSION/bin"
BUILD_DIR="$CACHE_ROOT/k8s-$K8S_VERSION/build"

log() { printf '[provision] %s\n' "$*" >&2; }

have_all() {
  [ -x "$1/kube-apiserver" ] && [ -x "$1/etcd" ]
}

if [ -n "${KUBEBUILDER_ASSETS:-}" ]; then
  if have_all "$KUBEBUILDER_ASSETS"; then
    log "using KUBEBUILDER_ASSETS=$KUBEBUILDER_ASSETS"
    echo "$KUBEBUILDER_ASSETS"
    exit 0
  fi
  log "KUBEBUILDER_ASSETS=$KUBEBUILDER_ASSETS lacks kube-apiserver or etcd; provisioning our own"
fi

if have_all "$BIN_DIR" && [ -x "$BIN_DIR/kube-controller-manager" ]; then
  echo "$BIN_DIR"
  exit 0
fi

# One provisioning at a time (parallel test binaries may all ask at once).
mkdir -p "$CACHE_ROOT"
exec 9>"$CACHE_ROOT/provision.lock"
flock 9
if have_all "$BIN_DIR" && [ -x "$BIN_DIR/kube-controller-manager" ]; then
  echo "$BIN_DIR"
  exit 0
fi

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

apt_updated=0
apt_install() {
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ $apt_updated = 0 ]; then
    $SUDO apt-get update -qq >&2
    apt_updated=1
  fi
  log "apt-get install ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
}

apt_install etcd-server golang-go golang-github-modern-go-reflect2-dev dpkg-dev openssl ca-certificates util-linux

# A source entry for bookworm main (and its updates/security suites, where the +deb12uN revisions live).
SRC_LIST=/etc/apt/sources.list.d/block-controller-src.sources
if [ ! -f "$SRC_LIST" ]; then
  log "adding deb-src entries in $SRC_LIST"
  $SUDO tee "$SRC_LIST" >/dev/null <<'SRC'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb-src
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
  apt_updated=0
fi

mkdir -p "$BUILD_DIR" "$BIN_DIR"
cd "$BUILD_DIR"
SRC_TREE=$(find "$BUILD_DIR" -maxdepth 1 -type d -name 'kubernetes-*' | head -n1)
if [ -z "$SRC_TREE" ] || [ ! -f "$SRC_TREE/.unpacked" ]; then
  rm -rf "$BUILD_DIR"/kubernetes*
  if [ $apt_updated = 0 ]; then $SUDO apt-get update -qq >&2; apt_updated=1; fi
  log "apt-get source kubernetes (upstream $K8S_VERSION tree)"
  apt-get source -qq kubernetes >&2
  SRC_TREE=$(find "$BUILD_DIR" -maxdepth 1 -type d -name 'kubernetes-*' | head -n1)
  [ -n "$SRC_TREE" ] || { log "apt-get source kubernetes produced no tree"; exit 1; }
  touch "$SRC_TREE/.unpacked"
fi
log "source tree: $SRC_TREE"

# GOPATH mode: the tree predates a usable go.mod workflow under Go 1.19.
export GOPATH="$BUILD_DIR/gopath"
export GO111MODULE=off CGO_ENABLED=0 GOFLAGS=
export GOCACHE="$BUILD_DIR/gocache"
mkdir -p "$GOPATH/src/k8s.io"
ln -sfn "$SRC_TREE" "$GOPATH/src/k8s.io/kubernetes"
cd "$GOPATH/src/k8s.io/kubernetes"

# reflect2 v1.0.1 (vendored) crashes the API server under Go >= 1.18 (SIGSEGV in mapiterinit when
# the first custom resource is created); v1.0.2 from Debian fixes it.
R2_SRC=/usr/share/gocode/src/github.com/modern-go/reflect2
R2_DST=vendor/github.com/modern-go/reflect2
if [ ! -f "$R2_DST/.from-debian" ]; then
  log "replacing vendored reflect2 with Debian's v1.0.2"
  rm -rf "$R2_DST"
  mkdir -p "$R2_DST"
  for f in "$R2_SRC"/*; do
    case "$f" in *_test.go) continue ;; esac
    [ -f "$f" ] && cp -L "$f" "$R2_DST/"
  done
  touch "$R2_DST/.from-debian"
fi

OPENAPI=pkg/generated/openapi/zz_generated.openapi.go
if [ ! -s "$OPENAPI" ]; then
  log "building openapi-gen"
  go build -o "$BUILD_DIR/openapi-gen" ./vendor/k8s.io/kube-openapi/cmd/openapi-gen
  log "collecting openapi-gen input packages"
  dirs=$(grep -R --include='*.go' -l '+k8s:openapi-gen=' pkg cmd vendor 2>/dev/null \
    | xargs -n1 dirname | sort -u \
    | grep -v -e code-generator -e sample-apiserver \
    | sed 's|^vendor/||; s|^\(pkg\|cmd\)/|k8s.io/kubernetes/\1/|' | paste -sd, -)
  log "generating $OPENAPI"
  "$BUILD_DIR/openapi-gen" --logtostderr=false \
    -i "$dirs" \
    -p k8s.io/kubernetes/pkg/generated/openapi -O zz_generated.openapi \
    -h vendor/k8s.io/code-generator/hack/boilerplate.go.txt \
    -o "$GOPATH/src" >&2
  [ -s "$OPENAPI" ] || { log "openapi-gen wrote nothing"; exit 1; }
fi

# In GOPATH mode the vendored packages live under k8s.io/kubernetes/vendor/, and -X needs that full path.
LDFLAGS="-s -w"
for kv in gitVersion=$K8S_VERSION gitMajor=1 gitMinor=20 gitTreeState=clean buildDate=2021-01-13T13:20:00Z; do
  LDFLAGS="$LDFLAGS -X k8s.io/kubernetes/vendor/k8s.io/component-base/version.$kv -X k8s.io/kubernetes/vendor/k8s.io/client-go/pkg/version.$kv"
done
for cmd in kube-apiserver kube-controller-manager; do
  if [ ! -x "$BIN_DIR/$cmd" ]; then
    log "go build ./cmd/$cmd (a few minutes)"
    go build -ldflags "$LDFLAGS" -o "$BIN_DIR/$cmd.tmp" "./cmd/$cmd"
    mv "$BIN_DIR/$cmd.tmp" "$BIN_DIR/$cmd"
  fi
done
cp -f "$(command -v etcd || echo /usr/bin/etcd)" "$BIN_DIR/etcd"

"$BIN_DIR/kube-apiserver" --version >&2
echo "$BIN_DIR"
