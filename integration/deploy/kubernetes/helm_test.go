package kubernetes

import (
	"bufio"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	"helm.sh/helm/v4/pkg/chart/common"
	"helm.sh/helm/v4/pkg/chart/common/util"
	chart "helm.sh/helm/v4/pkg/chart/v2"
	"helm.sh/helm/v4/pkg/chart/v2/loader"
	"helm.sh/helm/v4/pkg/engine"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

const chartDir = "../../../deploy/helm/soloist"

// serviceMonitor is the part of the Prometheus Operator's ServiceMonitor
// the chart writes; another field fails the strict decoding.
type serviceMonitor struct {
	APIVersion string             `json:"apiVersion"`
	Kind       string             `json:"kind"`
	Metadata   map[string]any     `json:"metadata"`
	Spec       serviceMonitorSpec `json:"spec"`
}

type serviceMonitorSpec struct {
	Selector struct {
		MatchLabels map[string]string `json:"matchLabels"`
	} `json:"selector"`
	Endpoints []struct {
		Port     string `json:"port"`
		Path     string `json:"path"`
		Interval string `json:"interval"`
	} `json:"endpoints"`
}

// rendered are the decoded objects of one rendering of the chart.
type rendered struct {
	deployment *appsv1.Deployment
	service    *corev1.Service
	pdb        *policyv1.PodDisruptionBudget
	configMap  *corev1.ConfigMap
	netpol     *networkingv1.NetworkPolicy
	monitor    *serviceMonitor
}

// render renders the chart as `helm template soloist deploy/helm/soloist
// -f valuesFile` would, and decodes every object strictly.
func render(t *testing.T, valuesFile string) (*rendered, error) {
	t.Helper()
	ch, err := loader.Load(chartDir)
	if err != nil {
		t.Fatalf("loading the chart: %v", err)
	}
	vals := map[string]any{}
	if valuesFile != "" {
		b, err := os.ReadFile(valuesFile)
		if err != nil {
			t.Fatal(err)
		}
		if err := yaml.Unmarshal(b, &vals); err != nil {
			t.Fatalf("%s: %v", valuesFile, err)
		}
	}
	return renderValues(t, ch, vals)
}

func renderValues(t *testing.T, ch *chart.Chart, vals map[string]any) (*rendered, error) {
	t.Helper()
	rv, err := util.ToRenderValues(ch, vals, common.ReleaseOptions{Name: "soloist", Namespace: "default", IsInstall: true}, common.DefaultCapabilities)
	if err != nil {
		return nil, err
	}
	files, err := engine.Render(ch, rv)
	if err != nil {
		return nil, err
	}
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{appsv1.AddToScheme, corev1.AddToScheme, policyv1.AddToScheme, networkingv1.AddToScheme} {
		if err := add(scheme); err != nil {
			t.Fatal(err)
		}
	}
	dec := serializer.NewCodecFactory(scheme, serializer.EnableStrict).UniversalDeserializer()
	names := make([]string, 0, len(files))
	for name := range files {
		names = append(names, name)
	}
	sort.Strings(names)
	r := &rendered{}
	for _, name := range names {
		if !strings.HasSuffix(name, ".yaml") {
			continue
		}
		rd := utilyaml.NewYAMLReader(bufio.NewReader(strings.NewReader(files[name])))
		for i := 1; ; i++ {
			doc, err := rd.Read()
			if err != nil {
				break
			}
			var v any
			if err := yaml.Unmarshal(doc, &v); err != nil {
				t.Errorf("%s, document %d: %v\n%s", name, i, err, doc)
				continue
			}
			if v == nil {
				continue
			}
			if strings.Contains(string(doc), "kind: ServiceMonitor") {
				var sm serviceMonitor
				if err := yaml.UnmarshalStrict(doc, &sm); err != nil {
					t.Errorf("%s: %v", name, err)
				}
				r.monitor = &sm
				continue
			}
			obj, gvk, err := dec.Decode(doc, nil, nil)
			if err != nil {
				t.Errorf("%s, document %d: %v\n%s", name, i, err, doc)
				continue
			}
			switch o := obj.(type) {
			case *appsv1.Deployment:
				r.deployment = o
			case *corev1.Service:
				r.service = o
			case *policyv1.PodDisruptionBudget:
				r.pdb = o
			case *corev1.ConfigMap:
				r.configMap = o
			case *networkingv1.NetworkPolicy:
				r.netpol = o
			default:
				t.Errorf("%s: %s has no checks here; add them", name, gvk)
			}
		}
	}
	if r.deployment == nil || r.service == nil || r.pdb == nil {
		t.Fatalf("the chart renders no Deployment, Service or PodDisruptionBudget: %v", names)
	}
	return r, nil
}

func env(c corev1.Container) map[string]string {
	m := map[string]string{}
	for _, e := range c.Env {
		m[e.Name] = e.Value
	}
	return m
}

// The chart's defaults agree with deploy/kubernetes: the same replicas,
// image, environment, probes, ports, grace, preStop, resources and
// disruption budget; the optional objects are off.
func TestHelmChartDefaults(t *testing.T) {
	r, err := render(t, "")
	if err != nil {
		t.Fatalf("rendering the defaults: %v", err)
	}
	if r.monitor != nil || r.netpol != nil || r.configMap != nil {
		t.Errorf("defaults render a ServiceMonitor %v, NetworkPolicy %v or ConfigMap %v; want none", r.monitor != nil, r.netpol != nil, r.configMap != nil)
	}
	m := load(t)
	if len(m.deployments) != 1 || len(m.pdbs) != 1 {
		t.Fatal("deploy/kubernetes: want one Deployment and one PodDisruptionBudget")
	}
	want, got := m.deployments[0], r.deployment
	if *want.Spec.Replicas != *got.Spec.Replicas {
		t.Errorf("replicas: chart %d, deploy/kubernetes %d", *got.Spec.Replicas, *want.Spec.Replicas)
	}
	wp, gp := want.Spec.Template.Spec, got.Spec.Template.Spec
	if *wp.TerminationGracePeriodSeconds != *gp.TerminationGracePeriodSeconds {
		t.Errorf("terminationGracePeriodSeconds: chart %d, deploy/kubernetes %d", *gp.TerminationGracePeriodSeconds, *wp.TerminationGracePeriodSeconds)
	}
	if gp.AutomountServiceAccountToken == nil || *gp.AutomountServiceAccountToken {
		t.Error("chart: automountServiceAccountToken is not false")
	}
	wc, gc := wp.Containers[0], gp.Containers[0]
	if wc.Image != gc.Image {
		t.Errorf("image: chart %s, deploy/kubernetes %s", gc.Image, wc.Image)
	}
	we, ge := env(wc), env(gc)
	for name, v := range we {
		g, ok := ge[name]
		switch {
		case !ok:
			t.Errorf("chart: no %s (deploy/kubernetes sets it)", name)
		case name != "SOLOIST_API_KEYS_FILE" && g != v:
			t.Errorf("%s: chart %q, deploy/kubernetes %q", name, g, v)
		}
	}
	if gc.LivenessProbe.HTTPGet.Path != "/livez" || gc.ReadinessProbe.HTTPGet.Path != "/readyz" {
		t.Error("chart: probes not on /livez and /readyz")
	}
	if wc.Lifecycle.PreStop.Sleep.Seconds != gc.Lifecycle.PreStop.Sleep.Seconds {
		t.Errorf("preStop sleep: chart %d, deploy/kubernetes %d", gc.Lifecycle.PreStop.Sleep.Seconds, wc.Lifecycle.PreStop.Sleep.Seconds)
	}
	if !wc.Resources.Limits.Memory().Equal(*gc.Resources.Limits.Memory()) || !wc.Resources.Requests.Cpu().Equal(*gc.Resources.Requests.Cpu()) {
		t.Errorf("resources: chart %v, deploy/kubernetes %v", gc.Resources, wc.Resources)
	}
	if sc := gc.SecurityContext; sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		t.Error("chart: root filesystem not read-only")
	}
	portNames := func(c corev1.Container) []string {
		var out []string
		for _, p := range c.Ports {
			out = append(out, p.Name)
		}
		sort.Strings(out)
		return out
	}
	if !slices.Equal(portNames(wc), portNames(gc)) {
		t.Errorf("ports: chart %v, deploy/kubernetes %v (gRPC is off by default)", portNames(gc), portNames(wc))
	}
	if m.pdbs[0].Spec.MaxUnavailable.String() != r.pdb.Spec.MaxUnavailable.String() {
		t.Errorf("PodDisruptionBudget maxUnavailable: chart %s, deploy/kubernetes %s", r.pdb.Spec.MaxUnavailable, m.pdbs[0].Spec.MaxUnavailable)
	}
	if len(gp.TopologySpreadConstraints) != 1 {
		t.Error("chart: no topology spread constraint")
	}
}

// The TLS + auth example renders: etcd's CA, client certificate and
// password come from the named secrets, the gRPC port is open, the
// ServiceMonitor scrapes the metrics port, the NetworkPolicy admits the
// named ports, and the config is mounted; without a secret name the
// rendering fails with a message.
func TestHelmChartTLSAuth(t *testing.T) {
	r, err := render(t, filepath.Join(chartDir, "examples-tls-auth.yaml"))
	if err != nil {
		t.Fatalf("rendering the TLS + auth example: %v", err)
	}
	c := r.deployment.Spec.Template.Spec.Containers[0]
	e := env(c)
	for name, want := range map[string]string{
		"SOLOIST_ETCD_CAFILE":        "/etc/soloist/etcd-tls/ca.crt",
		"SOLOIST_ETCD_CERTFILE":      "/etc/soloist/etcd-tls/tls.crt",
		"SOLOIST_ETCD_KEYFILE":       "/etc/soloist/etcd-tls/tls.key",
		"SOLOIST_ETCD_USERNAME":      "soloist",
		"SOLOIST_ETCD_PASSWORD_FILE": "/etc/soloist/etcd-auth/password",
		"SOLOIST_CONFIG":             "/etc/soloist/config/config.yml",
		"SOLOIST_GRPC_LISTEN":        "0.0.0.0:4001",
	} {
		if e[name] != want {
			t.Errorf("%s = %q, want %q", name, e[name], want)
		}
	}
	if !strings.HasPrefix(e["SOLOIST_ETCD_ENDPOINTS"], "https://") {
		t.Errorf("SOLOIST_ETCD_ENDPOINTS %q: want https endpoints", e["SOLOIST_ETCD_ENDPOINTS"])
	}
	mounts := map[string]string{}
	for _, vm := range c.VolumeMounts {
		mounts[vm.Name] = vm.MountPath
	}
	secrets := map[string]string{}
	for _, v := range r.deployment.Spec.Template.Spec.Volumes {
		if _, ok := mounts[v.Name]; !ok {
			t.Errorf("volume %s is mounted nowhere", v.Name)
		}
		if v.Secret != nil {
			secrets[v.Name] = v.Secret.SecretName
		}
	}
	if secrets["etcd-tls"] != "soloist-etcd-tls" || secrets["etcd-auth"] != "soloist-etcd-auth" || secrets["api-keys"] != "soloist-api-keys" {
		t.Errorf("secret volumes %v", secrets)
	}
	grpc := false
	for _, p := range c.Ports {
		grpc = grpc || (p.Name == "grpc" && p.ContainerPort == 4001)
	}
	if !grpc {
		t.Error("no container port grpc 4001")
	}
	if r.monitor == nil || len(r.monitor.Spec.Endpoints) != 1 || r.monitor.Spec.Endpoints[0].Port != "metrics" {
		t.Errorf("ServiceMonitor %+v: want one endpoint on port metrics", r.monitor)
	}
	if r.netpol == nil || len(r.netpol.Spec.Ingress) != 1 || len(r.netpol.Spec.Ingress[0].Ports) != 3 {
		t.Errorf("NetworkPolicy %+v: want ingress on http, metrics and grpc", r.netpol)
	}
	if r.configMap == nil {
		t.Fatal("no ConfigMap for config")
	}
	var cfg struct {
		Functions []map[string]any `json:"functions"`
		Schedules []map[string]any `json:"schedules"`
	}
	if err := yaml.UnmarshalStrict([]byte(r.configMap.Data["config.yml"]), &cfg); err != nil || len(cfg.Functions) != 1 || len(cfg.Schedules) != 1 {
		t.Errorf("config.yml %q: %v", r.configMap.Data["config.yml"], err)
	}

	ch, err := loader.Load(chartDir)
	if err != nil {
		t.Fatal(err)
	}
	_, err = renderValues(t, ch, map[string]any{"etcd": map[string]any{"tls": map[string]any{"enabled": true}}})
	if err == nil || !strings.Contains(err.Error(), "etcd.tls.secretName is required") {
		t.Errorf("TLS without a secret name: %v, want the required message", err)
	}
}
