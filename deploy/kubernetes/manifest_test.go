// Package kubernetes_test checks the example manifests of deploy/kubernetes
// against the Kubernetes API types and the library's own constants, so that
// the probes, the ports and the grace period cannot drift from the code. It
// is a module of its own so that k8s.io/api stays out of the library's
// go.mod.
package kubernetes_test

import (
	"bytes"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"

	"github.com/stargazer/lifecycle/fleetenv"
	"github.com/stargazer/lifecycle/health"
	"github.com/stargazer/lifecycle/process"
	"github.com/stargazer/lifecycle/service"
)

// deployment reads demo.yaml and decodes it strictly: an unknown or
// misspelt field, or a duplicate one, fails the test.
func deployment(t *testing.T) *appsv1.Deployment {
	t.Helper()
	raw, err := os.ReadFile("demo.yaml")
	if err != nil {
		t.Fatal(err)
	}
	docs := regexp.MustCompile(`(?m)^---\s*$`).Split(string(raw), -1)
	var found []*appsv1.Deployment
	for _, doc := range docs {
		if strings.TrimSpace(regexp.MustCompile(`(?m)^#.*$`).ReplaceAllString(doc, "")) == "" {
			continue
		}
		var d appsv1.Deployment
		if err := yaml.UnmarshalStrict([]byte(doc), &d); err != nil {
			t.Fatalf("demo.yaml does not decode strictly into apps/v1 Deployment: %v", err)
		}
		found = append(found, &d)
	}
	if len(found) != 1 || found[0].Kind != "Deployment" || found[0].APIVersion != "apps/v1" {
		t.Fatalf("demo.yaml: %d documents, want one apps/v1 Deployment", len(found))
	}
	return found[0]
}

func container(t *testing.T, d *appsv1.Deployment) corev1.Container {
	t.Helper()
	cs := d.Spec.Template.Spec.Containers
	if len(cs) != 1 || cs[0].Name != "demo" {
		t.Fatalf("containers %v, want one named demo", cs)
	}
	return cs[0]
}

func envVar(c corev1.Container, name string) (corev1.EnvVar, bool) {
	for _, e := range c.Env {
		if e.Name == name {
			return e, true
		}
	}
	return corev1.EnvVar{}, false
}

// port resolves a probe's port (a name or a number) to a container port.
func port(t *testing.T, c corev1.Container, p intstr.IntOrString) int32 {
	t.Helper()
	if p.Type == intstr.Int {
		return p.IntVal
	}
	for _, cp := range c.Ports {
		if cp.Name == p.StrVal {
			return cp.ContainerPort
		}
	}
	t.Fatalf("probe port %q is not a port of the container", p.StrVal)
	return 0
}

func TestTheManifestDecodesStrictlyAndSelectsItsPods(t *testing.T) {
	d := deployment(t)
	for k, v := range d.Spec.Selector.MatchLabels {
		if d.Spec.Template.Labels[k] != v {
			t.Errorf("selector %s=%s does not match the pod template's labels %v", k, v, d.Spec.Template.Labels)
		}
	}
	if d.Spec.Replicas == nil || *d.Spec.Replicas < 2 {
		t.Errorf("replicas %v: want at least 2, so a drain or a restart leaves one in rotation", d.Spec.Replicas)
	}
}

func TestTheProbesUseTheHealthServersPathsAndPort(t *testing.T) {
	c := container(t, deployment(t))
	for _, tc := range []struct {
		name  string
		probe *corev1.Probe
		path  string
	}{
		{"startupProbe", c.StartupProbe, health.PathLive},
		{"livenessProbe", c.LivenessProbe, health.PathLive},
		{"readinessProbe", c.ReadinessProbe, health.PathReady},
	} {
		if tc.probe == nil || tc.probe.HTTPGet == nil {
			t.Errorf("%s: missing, or not an HTTP GET", tc.name)
			continue
		}
		if tc.probe.HTTPGet.Path != tc.path {
			t.Errorf("%s: path %q, want %q", tc.name, tc.probe.HTTPGet.Path, tc.path)
		}
		if p := port(t, c, tc.probe.HTTPGet.Port); p != service.DefaultHealthPort {
			t.Errorf("%s: port %d, want the health port %d", tc.name, p, service.DefaultHealthPort)
		}
	}
	if e, ok := envVar(c, fleetenv.HealthPort); ok && e.Value != strconv.Itoa(service.DefaultHealthPort) {
		t.Errorf("%s=%q, but the probes use port %d", fleetenv.HealthPort, e.Value, service.DefaultHealthPort)
	}
	// The health server starts in phase 9: the startup probe must give the
	// whole boot its time, the boot timeout and the jitter before it.
	sp := c.StartupProbe
	budget := time.Duration(sp.PeriodSeconds*sp.FailureThreshold) * time.Second
	if min := service.DefaultBootTimeout + service.DefaultBootJitter; budget <= min {
		t.Errorf("startupProbe allows %v, want more than the boot timeout and jitter (%v)", budget, min)
	}
}

func TestTheGracePeriodHoldsTheDrainDelayAndTheShutdown(t *testing.T) {
	d := deployment(t)
	c := container(t, d)
	e, ok := envVar(c, fleetenv.DrainDelay)
	if !ok {
		t.Fatalf("%s is not set", fleetenv.DrainDelay)
	}
	drain, err := time.ParseDuration(e.Value)
	if err != nil || drain <= 0 || drain >= service.DefaultShutdownTimeout {
		t.Fatalf("%s=%q: want a duration > 0 and under the shutdown timeout %v", fleetenv.DrainDelay, e.Value, service.DefaultShutdownTimeout)
	}
	grace := d.Spec.Template.Spec.TerminationGracePeriodSeconds
	if grace == nil {
		t.Fatal("terminationGracePeriodSeconds is not set (Kubernetes' default is 30s)")
	}
	if g := time.Duration(*grace) * time.Second; g <= service.DefaultShutdownTimeout+drain {
		t.Errorf("terminationGracePeriodSeconds %v, want more than the shutdown timeout %v plus the drain delay %v", g, service.DefaultShutdownTimeout, drain)
	}
	// An operator's drain takes the pod out of the endpoints once readiness
	// failed failureThreshold times: within the drain delay.
	rp := c.ReadinessProbe
	if detect := time.Duration(rp.PeriodSeconds*rp.FailureThreshold) * time.Second; detect > drain {
		t.Errorf("readiness notices a drain after up to %v, more than the drain delay %v", detect, drain)
	}
}

func TestIdentityComesFromTheDownwardAPIAndSecretsFromASecret(t *testing.T) {
	d := deployment(t)
	c := container(t, d)
	field := func(name string) string {
		e, ok := envVar(c, name)
		if !ok || e.ValueFrom == nil || e.ValueFrom.FieldRef == nil {
			t.Errorf("%s: not from the downward API", name)
			return ""
		}
		return e.ValueFrom.FieldRef.FieldPath
	}
	if p := field(fleetenv.InstanceID); p != "metadata.name" {
		t.Errorf("%s from %q, want metadata.name (the pod's name)", fleetenv.InstanceID, p)
	}
	const label = "app.kubernetes.io/name"
	if p := field(fleetenv.ServiceName); p != "metadata.labels['"+label+"']" {
		t.Errorf("%s from %q, want the %s label", fleetenv.ServiceName, p, label)
	}
	if p := field(fleetenv.HealthHost); p != "status.podIP" {
		t.Errorf("%s from %q, want status.podIP", fleetenv.HealthHost, p)
	}
	for _, name := range []string{fleetenv.RedisURL, fleetenv.ControlKey} {
		e, ok := envVar(c, name)
		if !ok || e.Value != "" || e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil || e.ValueFrom.SecretKeyRef.Key != name {
			t.Errorf("%s: want it from a Secret's key %s, never a literal value", name, name)
		}
	}

	// With what the downward API and the Secret give, the environment is
	// valid: the instance would not exit 2.
	given := map[string]string{
		fleetenv.InstanceID:  "demo-7c9d6b5f4-x2k8q",
		fleetenv.ServiceName: d.Spec.Template.Labels[label],
		fleetenv.HealthHost:  "10.244.1.7",
		fleetenv.RedisURL:    "redis://:secret@redis:6379/0",
		fleetenv.ControlKey:  strings.Repeat("k", 32),
	}
	for _, e := range c.Env {
		if e.ValueFrom == nil {
			given[e.Name] = e.Value
		}
	}
	env, err := process.ParseEnv(func(k string) string { return given[k] })
	if err != nil {
		t.Fatalf("the manifest's environment is invalid: %v", err)
	}
	if env.Redis != nil {
		_ = env.Redis.Close()
	}
	if env.ServiceName != "demo" {
		t.Errorf("service name %q, want demo", env.ServiceName)
	}
	// The metrics port is the one the Prometheus exporter binds.
	if e, _ := envVar(c, "OTEL_EXPORTER_PROMETHEUS_PORT"); e.Value != "" {
		found := false
		for _, p := range c.Ports {
			found = found || p.Name == "metrics" && strconv.Itoa(int(p.ContainerPort)) == e.Value
		}
		if !found {
			t.Errorf("OTEL_EXPORTER_PROMETHEUS_PORT=%s is not the container's metrics port", e.Value)
		}
	}
	if !bytes.Contains([]byte(c.Image), []byte("cmd/demo")) {
		t.Errorf("image %q is not a build of cmd/demo", c.Image)
	}
}

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
