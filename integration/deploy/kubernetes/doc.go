// Package kubernetes checks the manifests of deploy/kubernetes: each
// document decodes strictly (no unknown or duplicate fields, a kind this
// test knows) into the typed Kubernetes API objects, and the objects fit
// together (selectors, named ports, probes, the scrape annotations, the
// grace period against the drain budget, the kustomization's resources).
//
// It is its own Go module (see go.mod); run it with
//
//	go -C integration/deploy/kubernetes test ./...
package kubernetes
