package kubernetes

import (
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// The etcd example (deploy/kubernetes/etcd) decodes strictly and is what
// etcd's operations guide asks for: 3 members, one per node, probes on the
// metrics listener, compaction and a quota, a headless Service for the
// members' names and a PodDisruptionBudget of one.
func TestEtcdExample(t *testing.T) {
	path := filepath.Join(manifestDir, "etcd", "etcd.yaml")
	dec := strictDecoder(t)
	var (
		sts  *appsv1.StatefulSet
		svc  *corev1.Service
		pdb  *policyv1.PodDisruptionBudget
		docs = documents(t, path)
	)
	for i, doc := range docs {
		obj, gvk, err := dec.Decode(doc, nil, nil)
		if err != nil {
			t.Fatalf("document %d: %v", i+1, err)
		}
		switch o := obj.(type) {
		case *appsv1.StatefulSet:
			sts = o
		case *corev1.Service:
			svc = o
		case *policyv1.PodDisruptionBudget:
			pdb = o
		default:
			t.Fatalf("document %d: %s has no checks here", i+1, gvk)
		}
	}
	if sts == nil || svc == nil || pdb == nil {
		t.Fatalf("want a StatefulSet, a Service and a PodDisruptionBudget, got %v %v %v", sts != nil, svc != nil, pdb != nil)
	}
	pod := sts.Spec.Template
	podLabels := labels.Set(pod.Labels)
	if sts.Spec.Replicas == nil || *sts.Spec.Replicas != 3 {
		t.Errorf("replicas %v, want 3", sts.Spec.Replicas)
	}
	if svc.Spec.ClusterIP != corev1.ClusterIPNone || svc.Name != sts.Spec.ServiceName {
		t.Errorf("Service %s (clusterIP %q) is not the StatefulSet's headless service %s", svc.Name, svc.Spec.ClusterIP, sts.Spec.ServiceName)
	}
	if !labels.SelectorFromSet(svc.Spec.Selector).Matches(podLabels) || len(svc.Spec.Selector) == 0 {
		t.Errorf("Service selector %v does not select the members %v", svc.Spec.Selector, pod.Labels)
	}
	if sel, err := metav1.LabelSelectorAsSelector(pdb.Spec.Selector); err != nil || !sel.Matches(podLabels) || pdb.Spec.MaxUnavailable == nil || pdb.Spec.MaxUnavailable.String() != "1" {
		t.Errorf("PodDisruptionBudget: selector %v, maxUnavailable %v; want the members and 1", pdb.Spec.Selector, pdb.Spec.MaxUnavailable)
	}
	// One member per node: required anti-affinity on the hostname.
	aa := pod.Spec.Affinity
	spread := false
	if aa != nil && aa.PodAntiAffinity != nil {
		for _, term := range aa.PodAntiAffinity.RequiredDuringSchedulingIgnoredDuringExecution {
			sel, err := metav1.LabelSelectorAsSelector(term.LabelSelector)
			if err == nil && term.TopologyKey == "kubernetes.io/hostname" && sel.Matches(podLabels) {
				spread = true
			}
		}
	}
	if !spread {
		t.Error("no required pod anti-affinity on kubernetes.io/hostname over the members")
	}
	if len(pod.Spec.Containers) != 1 {
		t.Fatalf("%d containers, want 1", len(pod.Spec.Containers))
	}
	c := pod.Spec.Containers[0]
	flags := map[string]string{}
	for _, a := range c.Args {
		k, v, _ := strings.Cut(strings.TrimPrefix(a, "--"), "=")
		flags[k] = v
	}
	for _, f := range []string{"auto-compaction-mode", "auto-compaction-retention", "quota-backend-bytes", "initial-cluster", "data-dir"} {
		if flags[f] == "" {
			t.Errorf("etcd runs without --%s", f)
		}
	}
	if n := strings.Count(flags["initial-cluster"], "="); n != 3 {
		t.Errorf("--initial-cluster names %d members, want 3", n)
	}
	// The probes use the metrics listener, whose port is the container's
	// port "metrics".
	mu, err := url.Parse(flags["listen-metrics-urls"])
	if err != nil || mu.Port() == "" {
		t.Fatalf("--listen-metrics-urls %q: want a URL with a port", flags["listen-metrics-urls"])
	}
	var metricsPort int32
	for _, p := range c.Ports {
		if p.Name == "metrics" {
			metricsPort = p.ContainerPort
		}
	}
	if mu.Port() == "" || metricsPort == 0 || mu.Port() != itoa(metricsPort) {
		t.Errorf("container port metrics %d, --listen-metrics-urls %s", metricsPort, flags["listen-metrics-urls"])
	}
	for what, pr := range map[string]*corev1.Probe{"startupProbe": c.StartupProbe, "livenessProbe": c.LivenessProbe, "readinessProbe": c.ReadinessProbe} {
		if pr == nil || pr.HTTPGet == nil || pr.HTTPGet.Port.String() != "metrics" {
			t.Errorf("%s: want an httpGet on port metrics, got %+v", what, pr)
		}
	}
	if a := pod.Spec.AutomountServiceAccountToken; a == nil || *a {
		t.Error("automountServiceAccountToken is not false")
	}
	if len(sts.Spec.VolumeClaimTemplates) != 1 {
		t.Errorf("%d volumeClaimTemplates, want 1 (each member's data)", len(sts.Spec.VolumeClaimTemplates))
	}
}

func itoa(n int32) string { return strconv.Itoa(int(n)) }
