// Package kubernetes checks the manifests of deploy/kubernetes: each
// document decodes strictly (no unknown or duplicate fields, a kind this
// test knows) into the typed Kubernetes API objects, and the objects fit
// together (selectors, named ports, probes, the scrape annotations, the
// grace period against the drain budget, the kustomization's resources);
// the etcd example (deploy/kubernetes/etcd) is a 3-member StatefulSet with
// anti-affinity, probes on its metrics port, compaction and a quota; and
// the Helm chart (deploy/helm/soloist), rendered with Helm's Go module
// (helm.sh/helm/v4) for its defaults and for examples-tls-auth.yaml,
// decodes strictly too and its defaults agree with deploy/kubernetes.
//
// It is its own Go module (see go.mod); run it with
//
//	go -C integration/deploy/kubernetes test ./...
package kubernetes
