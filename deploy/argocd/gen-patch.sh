#!/usr/bin/env bash
# Regenerates argocd-cm-patch.yaml from health.lua (tests/testkit/tests/argocd_health.rs checks
# that they agree).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
{
  echo '# Argo CD health checks for OrgMetadata and UserMetadata: merge into the argocd-cm ConfigMap, e.g.'
  echo '#   kubectl -n argocd patch configmap argocd-cm --patch-file deploy/argocd/argocd-cm-patch.yaml'
  echo '# Both scripts are deploy/argocd/health.lua verbatim (a test in tests/testkit/tests/argocd_health.rs'
  echo '# fails when they differ). Regenerate with deploy/argocd/gen-patch.sh.'
  echo 'data:'
  for kind in OrgMetadata UserMetadata; do
    echo "  resource.customizations.health.metadata.zitadel-operator.dev_${kind}: |"
    sed -e 's/^\(.\)/    \1/' health.lua
  done
} > argocd-cm-patch.yaml
