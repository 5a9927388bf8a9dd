package kubernetes

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

const manifestDir = "../../../deploy/kubernetes"

// kustomization is the part of kustomize's Kustomization these manifests
// may use; another field fails the strict decoding: add it here.
type kustomization struct {
	APIVersion string            `json:"apiVersion"`
	Kind       string            `json:"kind"`
	Namespace  string            `json:"namespace,omitempty"`
	Resources  []string          `json:"resources"`
	Labels     []object          `json:"labels,omitempty"`
	Images     []object          `json:"images,omitempty"`
	Patches    []object          `json:"patches,omitempty"`
	Common     map[string]string `json:"commonLabels,omitempty"`
}

type object = map[string]any

// manifests are the decoded objects of deploy/kubernetes.
type manifests struct {
	kustomization *kustomization
	files         []string // the manifest files besides kustomization.yaml
	deployments   []*appsv1.Deployment
	services      []*corev1.Service
	pdbs          []*policyv1.PodDisruptionBudget
}

func strictDecoder(t *testing.T) runtime.Decoder {
	t.Helper()
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{appsv1.AddToScheme, corev1.AddToScheme, policyv1.AddToScheme} {
		if err := add(scheme); err != nil {
			t.Fatal(err)
		}
	}
	return serializer.NewCodecFactory(scheme, serializer.EnableStrict).UniversalDeserializer()
}

// documents splits a YAML stream at ---, dropping documents that are only
// comments.
func documents(t *testing.T, path string) [][]byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r := utilyaml.NewYAMLReader(bufio.NewReader(f))
	var docs [][]byte
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return docs
		}
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		var v any
		if err := yaml.Unmarshal(doc, &v); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if v != nil {
			docs = append(docs, bytes.Clone(doc))
		}
	}
}

func load(t *testing.T) *manifests {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join(manifestDir, "*.y*ml"))
	if err != nil || len(paths) == 0 {
		t.Fatalf("no manifests in %s (%v)", manifestDir, err)
	}
	dec := strictDecoder(t)
	m := &manifests{}
	for _, path := range paths {
		name := filepath.Base(path)
		if name == "kustomization.yaml" || name == "kustomization.yml" {
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			var k kustomization
			if err := yaml.UnmarshalStrict(b, &k); err != nil {
				t.Errorf("%s: %v", name, err)
				continue
			}
			if k.APIVersion != "kustomize.config.k8s.io/v1beta1" || k.Kind != "Kustomization" {
				t.Errorf("%s: apiVersion %q kind %q, want kustomize.config.k8s.io/v1beta1 Kustomization", name, k.APIVersion, k.Kind)
			}
			m.kustomization = &k
			continue
		}
		m.files = append(m.files, name)
		for i, doc := range documents(t, path) {
			obj, gvk, err := dec.Decode(doc, nil, nil)
			if err != nil {
				t.Errorf("%s, document %d: %v", name, i+1, err)
				continue
			}
			switch o := obj.(type) {
			case *appsv1.Deployment:
				m.deployments = append(m.deployments, o)
			case *corev1.Service:
				m.services = append(m.services, o)
			case *policyv1.PodDisruptionBudget:
				m.pdbs = append(m.pdbs, o)
			default:
				t.Errorf("%s, document %d: %s has no checks here; add them to this test", name, i+1, gvk)
			}
		}
	}
	return m
}

// The strict decoder refuses what a typo would make: an unknown field, a
// field twice, a wrong type, an unknown kind. (So that the test of the real
// manifests means something.)
func TestStrictDecoderRefuses(t *testing.T) {
	dec := strictDecoder(t)
	for name, doc := range map[string]string{
		"unknown field": "apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec:\n  ports: [{name: http, port: 80, targetPrt: http}]\n",
		"duplicate":     "apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec:\n  selector: {a: b}\n  selector: {a: c}\n",
		"wrong type":    "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec: {replicas: three}\n",
		"unknown kind":  "apiVersion: v1\nkind: Servic\nmetadata: {name: x}\n",
		"misplaced":     "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec:\n  template:\n    spec:\n      containers: [{name: c, image: i, port: 8080}]\n",
	} {
		if _, _, err := dec.Decode([]byte(doc), nil, nil); err == nil {
			t.Errorf("%s: decoded without an error", name)
		}
	}
	var k kustomization
	if err := yaml.UnmarshalStrict([]byte("apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresource: [a.yaml]\n"), &k); err == nil {
		t.Error("kustomization with 'resource': decoded without an error")
	}
}

func TestManifests(t *testing.T) {
	m := load(t)
	if t.Failed() {
		return
	}

	// The kustomization lists exactly the manifests.
	if m.kustomization == nil {
		t.Fatal("no kustomization.yaml")
	}
	res := slices.Clone(m.kustomization.Resources)
	sort.Strings(res)
	sort.Strings(m.files)
	if !slices.Equal(res, m.files) {
		t.Errorf("kustomization.yaml resources %v, but the folder has %v", res, m.files)
	}

	if len(m.deployments) != 1 {
		t.Fatalf("%d Deployments, want 1", len(m.deployments))
	}
	d := m.deployments[0]
	pod := d.Spec.Template
	podLabels := labels.Set(pod.Labels)
	sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector)
	if err != nil || sel.Empty() || !sel.Matches(podLabels) {
		t.Errorf("Deployment %s: selector %v does not select its pods' labels %v (%v)", d.Name, d.Spec.Selector, pod.Labels, err)
	}
	if d.Spec.Replicas == nil || *d.Spec.Replicas < 3 {
		t.Errorf("Deployment %s: replicas %v, want at least 3", d.Name, d.Spec.Replicas)
	}

	var c *corev1.Container
	for i := range pod.Spec.Containers {
		if pod.Spec.Containers[i].Name == "soloist" {
			c = &pod.Spec.Containers[i]
		}
	}
	if c == nil {
		t.Fatalf("Deployment %s: no container named soloist", d.Name)
	}
	ports := map[string]int32{}
	for _, p := range c.Ports {
		if errs := validation.IsValidPortName(p.Name); len(errs) > 0 {
			t.Errorf("container port %q: %v", p.Name, errs)
		}
		if _, dup := ports[p.Name]; dup {
			t.Errorf("container port name %q twice", p.Name)
		}
		ports[p.Name] = p.ContainerPort
	}
	port := func(what string, p intstr.IntOrString) {
		t.Helper()
		if p.Type == intstr.String {
			if _, ok := ports[p.StrVal]; !ok {
				t.Errorf("%s: port %q is no named port of the container (%v)", what, p.StrVal, ports)
			}
			return
		}
		if !slices.Contains(mapValues(ports), p.IntVal) {
			t.Errorf("%s: port %d is no port of the container (%v)", what, p.IntVal, ports)
		}
	}
	for what, pr := range map[string]*corev1.Probe{"livenessProbe": c.LivenessProbe, "readinessProbe": c.ReadinessProbe} {
		if pr == nil || pr.HTTPGet == nil {
			t.Errorf("%s: missing, or not an httpGet", what)
			continue
		}
		port(what, pr.HTTPGet.Port)
		want := map[string]string{"livenessProbe": "/livez", "readinessProbe": "/readyz"}[what]
		if pr.HTTPGet.Path != want {
			t.Errorf("%s: path %s, want %s", what, pr.HTTPGet.Path, want)
		}
	}

	env := map[string]string{}
	for _, e := range c.Env {
		env[e.Name] = e.Value
	}
	listenPort := func(v string) int32 {
		t.Helper()
		_, p, err := net.SplitHostPort(env[v])
		n, err2 := strconv.Atoi(p)
		if err != nil || err2 != nil {
			t.Errorf("%s=%q: not HOST:PORT", v, env[v])
		}
		return int32(n)
	}
	if got := listenPort("SOLOIST_LISTEN"); got != ports["http"] {
		t.Errorf("SOLOIST_LISTEN port %d, container port http %d", got, ports["http"])
	}
	// Prometheus scrapes the metrics listener, which needs no API key: the
	// annotation, the container port and the listener agree.
	mp := listenPort("SOLOIST_METRICS_LISTEN")
	if mp == 0 || mp != ports["metrics"] {
		t.Errorf("SOLOIST_METRICS_LISTEN port %d, container port metrics %d", mp, ports["metrics"])
	}
	ann := pod.Annotations
	if ann["prometheus.io/scrape"] != "true" || ann["prometheus.io/port"] != strconv.Itoa(int(mp)) || ann["prometheus.io/path"] != "/metrics" {
		t.Errorf("scrape annotations %v: want prometheus.io/scrape \"true\", port %q (the metrics listener), path /metrics", ann, strconv.Itoa(int(mp)))
	}
	if _, ok := env["SOLOIST_API_KEYS_FILE"]; !ok {
		t.Error("SOLOIST_API_KEYS_FILE is not set: the API listens on 0.0.0.0 and needs keys")
	}

	// The grace period covers the drain.
	drain, err := time.ParseDuration(env["SOLOIST_SHUTDOWN_TIMEOUT"])
	if err != nil {
		t.Errorf("SOLOIST_SHUTDOWN_TIMEOUT=%q: %v", env["SOLOIST_SHUTDOWN_TIMEOUT"], err)
	}
	grace := pod.Spec.TerminationGracePeriodSeconds
	if grace == nil || time.Duration(*grace)*time.Second <= drain+5*time.Second {
		t.Errorf("terminationGracePeriodSeconds %v must exceed SOLOIST_SHUTDOWN_TIMEOUT %s by some seconds", grace, drain)
	}

	// The node ID is the pod's name; the pod has no service-account token,
	// a read-only root filesystem and a preStop pause that the grace
	// period covers too.
	nodeID := false
	for _, e := range c.Env {
		if e.Name == "SOLOIST_NODE_ID" && e.ValueFrom != nil && e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "metadata.name" {
			nodeID = true
		}
	}
	if !nodeID {
		t.Error("SOLOIST_NODE_ID does not come from the pod's name (fieldRef metadata.name)")
	}
	if env["GOMEMLIMIT"] == "" {
		t.Error("no GOMEMLIMIT: the Go runtime does not know the memory limit")
	}
	if a := pod.Spec.AutomountServiceAccountToken; a == nil || *a {
		t.Error("automountServiceAccountToken is not false: soloist needs no Kubernetes API token")
	}
	if sc := c.SecurityContext; sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		t.Error("the container's root filesystem is not read-only")
	}
	var preStop time.Duration
	if c.Lifecycle == nil || c.Lifecycle.PreStop == nil || c.Lifecycle.PreStop.Sleep == nil {
		t.Error("no preStop sleep: the pod would get SIGTERM while still in the Service's endpoints")
	} else {
		preStop = time.Duration(c.Lifecycle.PreStop.Sleep.Seconds) * time.Second
	}
	if grace != nil && time.Duration(*grace)*time.Second <= preStop+drain+5*time.Second {
		t.Errorf("terminationGracePeriodSeconds %d must exceed the preStop sleep %s plus SOLOIST_SHUTDOWN_TIMEOUT %s by some seconds", *grace, preStop, drain)
	}

	vols := map[string]bool{}
	for _, v := range pod.Spec.Volumes {
		vols[v.Name] = true
	}
	for _, vm := range c.VolumeMounts {
		if !vols[vm.Name] {
			t.Errorf("volumeMount %s: no such volume", vm.Name)
		}
	}

	// The Service selects the pods and targets their ports, metrics too.
	if len(m.services) != 1 {
		t.Fatalf("%d Services, want 1", len(m.services))
	}
	svc := m.services[0]
	if len(svc.Spec.Selector) == 0 || !labels.SelectorFromSet(svc.Spec.Selector).Matches(podLabels) {
		t.Errorf("Service %s: selector %v does not select the pods %v", svc.Name, svc.Spec.Selector, pod.Labels)
	}
	targets := map[string]bool{}
	for _, p := range svc.Spec.Ports {
		port("Service port "+p.Name, p.TargetPort)
		targets[p.TargetPort.String()] = true
	}
	for _, want := range []string{"http", "metrics"} {
		if !targets[want] {
			t.Errorf("Service %s: no port targets %q", svc.Name, want)
		}
	}

	// The PodDisruptionBudget covers the pods and lets one go at a time.
	if len(m.pdbs) != 1 {
		t.Fatalf("%d PodDisruptionBudgets, want 1", len(m.pdbs))
	}
	pdb := m.pdbs[0]
	psel, err := metav1.LabelSelectorAsSelector(pdb.Spec.Selector)
	if err != nil || psel.Empty() || !psel.Matches(podLabels) {
		t.Errorf("PodDisruptionBudget %s: selector %v does not select the pods %v", pdb.Name, pdb.Spec.Selector, pod.Labels)
	}
	if mu := pdb.Spec.MaxUnavailable; mu == nil || mu.String() != "1" {
		t.Errorf("PodDisruptionBudget %s: maxUnavailable %v, want 1", pdb.Name, mu)
	}
}

func mapValues(m map[string]int32) []int32 {
	var out []int32
	for _, v := range m {
		out = append(out, v)
	}
	return out
}
