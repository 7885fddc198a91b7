#!/usr/bin/env bash
# Builds (or reuses) the test control plane: kube-apiserver, kubectl and etcd, plus helm for the
# chart tests, from the Go tools modules beside this script, into a per-user cache directory keyed
# by version.
#
# Prints the directory holding the binaries on its last line of stdout (the KUBEBUILDER_ASSETS
# convention: a folder with `kube-apiserver`, `etcd` and `kubectl`; here also `helm`).
#
# Skips the build when:
#   * KUBEBUILDER_ASSETS points at a folder that already has kube-apiserver and etcd, or
#   * the versioned cache folder is complete.
#
# helm has its own module (tests/envtest/helm) and its own key: it is built into the same folder,
# and a file `helm.key` beside it records which helm module graph built it, so a helm bump rebuilds
# helm alone and never the control plane.
#
# gitops-eval (tests/envtest/gitops: kstatus and Argo CD's gopher-lua health checks, for
# tests/e2e_gitops.rs) is built the same way after helm, keyed by its go.mod, go.sum and source
# (`gitops-eval.key`). It shares helm's k8s.io and golang.org/x versions, so after helm it compiles
# only its own few packages.
#
# Environment: ZMO_CACHE_DIR (default ${XDG_CACHE_HOME:-$HOME/.cache}/zitadel-metadata-operator).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
K8S_VERSION="v1.36.3"
ETCD_VERSION="v3.6.16"
HELM_VERSION="v4.2.4"

log() { echo "envtest: $*" >&2; }

if [[ -n "${KUBEBUILDER_ASSETS:-}" && -x "${KUBEBUILDER_ASSETS}/kube-apiserver" && -x "${KUBEBUILDER_ASSETS}/etcd" ]]; then
  log "using KUBEBUILDER_ASSETS=${KUBEBUILDER_ASSETS}"
  echo "${KUBEBUILDER_ASSETS}"
  exit 0
fi

# Key the cache on versions and the exact module graph, so a go.sum change rebuilds.
key=$(cat "$here/apiserver/go.mod" "$here/apiserver/go.sum" "$here/etcd/go.mod" "$here/etcd/go.sum" | sha256sum | cut -c1-12)
cache_root="${ZMO_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/zitadel-metadata-operator}"
dest="$cache_root/envtest/k8s-${K8S_VERSION}-etcd-${ETCD_VERSION}-${key}"
helm_key="helm-${HELM_VERSION}-$(cat "$here/helm/go.mod" "$here/helm/go.sum" | sha256sum | cut -c1-12)"
helm_ok() { [[ -x "$dest/helm" && "$(cat "$dest/helm.key" 2>/dev/null)" == "$helm_key" ]]; }
gitops_key="gitops-$(cat "$here/gitops/go.mod" "$here/gitops/go.sum" "$here/gitops/"*.go | sha256sum | cut -c1-12)"
gitops_ok() { [[ -x "$dest/gitops-eval" && "$(cat "$dest/gitops-eval.key" 2>/dev/null)" == "$gitops_key" ]]; }

if [[ -x "$dest/kube-apiserver" && -x "$dest/etcd" && -x "$dest/kubectl" ]] && helm_ok && gitops_ok; then
  log "cached control plane in $dest"
  echo "$dest"
  exit 0
fi

command -v go >/dev/null 2>&1 || { log "Go is required to build the control plane (install Go >= 1.26)"; exit 1; }
mkdir -p "$dest"
export GOTOOLCHAIN="${GOTOOLCHAIN:-local}" GOWORK=off CGO_ENABLED=0 GOFLAGS=-mod=mod
minor="${K8S_VERSION#v1.}"; minor="${minor%%.*}"
build_date="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X ${pkg}.gitVersion=${K8S_VERSION} -X ${pkg}.gitMajor=1 -X ${pkg}.gitMinor=${minor}"
  ldflags+=" -X ${pkg}.gitTreeState=clean -X ${pkg}.buildDate=${build_date}"
done

start=$(date +%s)
if [[ ! -x "$dest/etcd" ]]; then
  log "building etcd ${ETCD_VERSION} (cold build takes a few minutes)"
  (cd "$here/etcd" && go build -trimpath -buildvcs=false -ldflags "-s -w" -o "$dest/etcd.tmp" go.etcd.io/etcd/server/v3)
  mv "$dest/etcd.tmp" "$dest/etcd"
fi
if [[ ! -x "$dest/kube-apiserver" ]]; then
  log "building kube-apiserver ${K8S_VERSION} (cold build takes 5-15 minutes on 2 cores)"
  (cd "$here/apiserver" && go build -trimpath -buildvcs=false -ldflags "$ldflags" -o "$dest/kube-apiserver.tmp" k8s.io/kubernetes/cmd/kube-apiserver)
  mv "$dest/kube-apiserver.tmp" "$dest/kube-apiserver"
fi
if [[ ! -x "$dest/kubectl" ]]; then
  log "building kubectl ${K8S_VERSION}"
  (cd "$here/apiserver" && go build -trimpath -buildvcs=false -ldflags "$ldflags" -o "$dest/kubectl.tmp" k8s.io/kubernetes/cmd/kubectl)
  mv "$dest/kubectl.tmp" "$dest/kubectl"
fi
if ! helm_ok; then
  log "building helm ${HELM_VERSION} (about a minute or two on 2 cores)"
  rm -f "$dest/helm.key"
  (cd "$here/helm" && go build -trimpath -buildvcs=false \
    -ldflags "-s -w -X helm.sh/helm/v4/internal/version.version=${HELM_VERSION} -X helm.sh/helm/v4/internal/version.gitTreeState=clean" \
    -o "$dest/helm.tmp" helm.sh/helm/v4/cmd/helm)
  mv "$dest/helm.tmp" "$dest/helm"
  echo "$helm_key" > "$dest/helm.key"
fi
if ! gitops_ok; then
  log "building gitops-eval (kstatus + gopher-lua; seconds after helm)"
  rm -f "$dest/gitops-eval.key"
  (cd "$here/gitops" && go build -trimpath -buildvcs=false -ldflags "-s -w" -o "$dest/gitops-eval.tmp" .)
  mv "$dest/gitops-eval.tmp" "$dest/gitops-eval"
  echo "$gitops_key" > "$dest/gitops-eval.key"
fi
log "built in $(( $(date +%s) - start ))s into $dest"
echo "$dest"
