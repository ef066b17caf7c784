package check

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/kustomize/api/krusty"
	kustomizetypes "sigs.k8s.io/kustomize/api/types"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"
)

var kubeDir = rootPath("deploy", "kubernetes")

// kubeScheme knows every kind the manifests may use.
var kubeScheme = func() *runtime.Scheme {
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{
		corev1.AddToScheme, appsv1.AddToScheme, policyv1.AddToScheme,
		autoscalingv2.AddToScheme, networkingv1.AddToScheme,
	} {
		if err := add(s); err != nil {
			panic(err)
		}
	}
	return s
}()

// splitYAML splits a multi-document YAML file.
var docSeparator = regexp.MustCompile(`(?m)^---\s*$`)

func splitYAML(data []byte) [][]byte {
	var docs [][]byte
	for _, d := range docSeparator.Split(string(data), -1) {
		if strings.TrimSpace(stripComments(d)) != "" {
			docs = append(docs, []byte(d))
		}
	}
	return docs
}

func stripComments(s string) string {
	var b strings.Builder
	for _, line := range strings.Split(s, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(line), "#") {
			b.WriteString(line + "\n")
		}
	}
	return b.String()
}

// decodeStrict decodes one manifest into its k8s.io/api type, refusing
// unknown or duplicate fields.
func decodeStrict(doc []byte) (runtime.Object, error) {
	var tm metav1.TypeMeta
	if err := yaml.Unmarshal(doc, &tm); err != nil {
		return nil, err
	}
	gvk := schema.FromAPIVersionAndKind(tm.APIVersion, tm.Kind)
	obj, err := kubeScheme.New(gvk)
	if err != nil {
		return nil, fmt.Errorf("kind %s: %w", gvk, err)
	}
	if err := yaml.UnmarshalStrict(doc, obj); err != nil {
		return nil, fmt.Errorf("%s: %w", gvk.Kind, err)
	}
	return obj, nil
}

// TestKubernetesManifestsDecodeStrictly walks deploy/kubernetes: every
// manifest decodes strictly into its k8s.io/api type, every
// kustomization.yaml into kustomize's type, and every service config file
// (config/*.yaml) is accepted by the service.
func TestKubernetesManifestsDecodeStrictly(t *testing.T) {
	n := 0
	err := filepath.WalkDir(kubeDir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".yaml") {
			return err
		}
		rel, _ := filepath.Rel(kubeDir, path)
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		n++
		switch {
		case d.Name() == "kustomization.yaml":
			var k kustomizetypes.Kustomization
			if err := yaml.UnmarshalStrict(data, &k); err != nil {
				t.Errorf("%s: %v", rel, err)
			}
		case filepath.Base(filepath.Dir(path)) == "config":
			svc, ok := serviceFor(d.Name())
			if !ok {
				t.Errorf("%s: a config file of no known service", rel)
				return nil
			}
			if err := checkConfig(t, svc, path, nil); err != nil {
				t.Errorf("%s: %v", rel, err)
			}
		default:
			for i, doc := range splitYAML(data) {
				if _, err := decodeStrict(doc); err != nil {
					t.Errorf("%s document %d: %v", rel, i+1, err)
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n < 5 {
		t.Fatalf("only %d YAML files under %s", n, kubeDir)
	}
}

// rendered is the output of one kustomization, decoded.
type rendered struct {
	dir     string
	objects []runtime.Object
}

func render(t *testing.T, dir string) rendered {
	t.Helper()
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	rm, err := k.Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		t.Fatalf("kustomize build %s: %v", dir, err)
	}
	out := rendered{dir: dir}
	for _, r := range rm.Resources() {
		doc, err := r.AsYAML()
		if err != nil {
			t.Fatal(err)
		}
		obj, err := decodeStrict(doc)
		if err != nil {
			t.Fatalf("kustomize build %s: %s: %v", dir, r.CurId(), err)
		}
		out.objects = append(out.objects, obj)
	}
	return out
}

// workload is a pod template with the object that owns it.
type workload struct {
	kind, name string
	selector   *metav1.LabelSelector
	template   corev1.PodTemplateSpec
}

func (r rendered) workloads() []workload {
	var ws []workload
	for _, o := range r.objects {
		switch o := o.(type) {
		case *appsv1.Deployment:
			ws = append(ws, workload{"Deployment", o.Name, o.Spec.Selector, o.Spec.Template})
		case *appsv1.StatefulSet:
			ws = append(ws, workload{"StatefulSet", o.Name, o.Spec.Selector, o.Spec.Template})
		case *appsv1.DaemonSet:
			ws = append(ws, workload{"DaemonSet", o.Name, o.Spec.Selector, o.Spec.Template})
		}
	}
	return ws
}

// selects reports the workloads whose pod templates the selector matches.
func (r rendered) selects(sel labels.Selector) []workload {
	var hit []workload
	for _, w := range r.workloads() {
		if !sel.Empty() && sel.Matches(labels.Set(w.template.Labels)) {
			hit = append(hit, w)
		}
	}
	return hit
}

func (r rendered) configMap(name string) (*corev1.ConfigMap, bool) {
	for _, o := range r.objects {
		if cm, ok := o.(*corev1.ConfigMap); ok && cm.Name == name {
			return cm, true
		}
	}
	return nil, false
}

func (r rendered) secret(name string) bool {
	for _, o := range r.objects {
		if s, ok := o.(*corev1.Secret); ok && s.Name == name {
			return true
		}
	}
	return false
}

func kustomizations(t *testing.T) []string {
	t.Helper()
	dirs := []string{filepath.Join(kubeDir, "base")}
	overlays, _ := filepath.Glob(filepath.Join(kubeDir, "overlays", "*", "kustomization.yaml"))
	if len(overlays) == 0 {
		t.Fatal("no overlay under deploy/kubernetes/overlays")
	}
	for _, o := range overlays {
		dirs = append(dirs, filepath.Dir(o))
	}
	return dirs
}

func TestKubernetesInvariants(t *testing.T) {
	for _, dir := range kustomizations(t) {
		rel, _ := filepath.Rel(kubeDir, dir)
		// The base leaves site secrets to overlays; only overlays are
		// complete, deployable units.
		complete := !strings.HasSuffix(rel, "base")
		t.Run(rel, func(t *testing.T) {
			r := render(t, dir)
			checkWorkloads(t, r, complete)
			checkSelectors(t, r)
			checkNATSInternal(t, r)
		})
	}
}

func checkWorkloads(t *testing.T, r rendered, complete bool) {
	t.Helper()
	kinds := map[string]bool{}
	for _, w := range r.workloads() {
		id := w.kind + "/" + w.name
		kinds[w.name] = true
		sel, err := metav1.LabelSelectorAsSelector(w.selector)
		if err != nil || sel.Empty() || !sel.Matches(labels.Set(w.template.Labels)) {
			t.Errorf("%s: selector %v does not select its pod template %v", id, w.selector, w.template.Labels)
		}
		spec := w.template.Spec
		if spec.HostNetwork && spec.DNSPolicy != corev1.DNSClusterFirstWithHostNet {
			t.Errorf("%s: hostNetwork needs dnsPolicy ClusterFirstWithHostNet to resolve the bus, got %q", id, spec.DNSPolicy)
		}
		for _, c := range spec.Containers {
			cid := id + " container " + c.Name
			checkProbes(t, cid, c)
			if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() || c.Resources.Limits.Memory().IsZero() {
				t.Errorf("%s: needs cpu and memory requests and a memory limit", cid)
			}
			if c.Lifecycle == nil || c.Lifecycle.PreStop == nil {
				t.Errorf("%s: no preStop hook", cid)
			}
			if complete {
				checkReferences(t, r, cid, spec, c)
			}
			svc, ok := serviceFor(c.Image)
			if !ok || !strings.Contains(c.Image, "callgrid/") {
				continue
			}
			checkServiceContainer(t, r, cid, svc, spec, c, complete)
		}
	}
	for _, want := range []string{"nats", "proxy", "media"} {
		if !kinds[want] {
			t.Errorf("no workload named %s", want)
		}
	}
}

func checkProbes(t *testing.T, id string, c corev1.Container) {
	t.Helper()
	rp, lp := c.ReadinessProbe, c.LivenessProbe
	if rp == nil || lp == nil {
		t.Errorf("%s: needs both readiness and liveness probes", id)
		return
	}
	if rp.HTTPGet == nil || lp.HTTPGet == nil {
		t.Errorf("%s: probes should be HTTP GETs", id)
		return
	}
	// A draining pod is unready but alive: the same endpoint for both
	// would have it killed mid-drain.
	if rp.HTTPGet.Path == lp.HTTPGet.Path {
		t.Errorf("%s: readiness and liveness share the path %s", id, rp.HTTPGet.Path)
	}
}

// checkReferences: every ConfigMap and Secret the pod uses exists.
func checkReferences(t *testing.T, r rendered, id string, spec corev1.PodSpec, c corev1.Container) {
	t.Helper()
	for _, v := range spec.Volumes {
		if v.ConfigMap != nil {
			if _, ok := r.configMap(v.ConfigMap.Name); !ok {
				t.Errorf("%s: volume %s: ConfigMap %s does not exist", id, v.Name, v.ConfigMap.Name)
			}
		}
		if v.Secret != nil && !r.secret(v.Secret.SecretName) {
			t.Errorf("%s: volume %s: Secret %s does not exist", id, v.Name, v.Secret.SecretName)
		}
	}
	for _, e := range c.Env {
		if e.ValueFrom == nil {
			continue
		}
		if ref := e.ValueFrom.SecretKeyRef; ref != nil && !r.secret(ref.Name) {
			t.Errorf("%s: env %s: Secret %s does not exist", id, e.Name, ref.Name)
		}
		if ref := e.ValueFrom.ConfigMapKeyRef; ref != nil {
			if _, ok := r.configMap(ref.Name); !ok {
				t.Errorf("%s: env %s: ConfigMap %s does not exist", id, e.Name, ref.Name)
			}
		}
	}
}

// fieldExamples stand in for downward-API values: realistic, including a
// node name with dots, which is not a valid bus token.
var fieldExamples = map[string]string{
	"metadata.name":      "media-7d9f8b6c5-x2x7k",
	"metadata.namespace": "callgrid",
	"spec.nodeName":      "ip-10-20-3-4.eu-west-1.compute.internal",
	"status.hostIP":      "10.20.3.4",
	"status.podIP":       "10.21.7.9",
}

// containerEnv resolves a container's environment as the kubelet would,
// with example values for the downward API and secrets.
func containerEnv(t *testing.T, r rendered, id string, c corev1.Container) map[string]string {
	t.Helper()
	env := map[string]string{}
	for _, e := range c.Env {
		switch {
		case e.ValueFrom == nil:
			env[e.Name] = expandEnv(e.Value, env)
		case e.ValueFrom.FieldRef != nil:
			v, ok := fieldExamples[e.ValueFrom.FieldRef.FieldPath]
			if !ok {
				t.Errorf("%s: env %s: no example for field %s", id, e.Name, e.ValueFrom.FieldRef.FieldPath)
			}
			env[e.Name] = v
		case e.ValueFrom.SecretKeyRef != nil:
			env[e.Name] = "secret-value-of-" + e.ValueFrom.SecretKeyRef.Key
		case e.ValueFrom.ConfigMapKeyRef != nil:
			if cm, ok := r.configMap(e.ValueFrom.ConfigMapKeyRef.Name); ok {
				env[e.Name] = cm.Data[e.ValueFrom.ConfigMapKeyRef.Key]
			}
		}
	}
	return env
}

var envRef = regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)

func expandEnv(s string, env map[string]string) string {
	return envRef.ReplaceAllStringFunc(s, func(m string) string {
		if v, ok := env[m[2:len(m)-1]]; ok {
			return v
		}
		return m
	})
}

// mountedConfig finds the file given to -config among the container's
// ConfigMap mounts and returns its content.
func mountedConfig(t *testing.T, r rendered, id string, spec corev1.PodSpec, c corev1.Container) ([]byte, bool) {
	t.Helper()
	path := ""
	args := append(append([]string{}, c.Command...), c.Args...)
	for i, a := range args {
		if (a == "-config" || a == "--config") && i+1 < len(args) {
			path = args[i+1]
		}
	}
	if path == "" {
		t.Errorf("%s: no -config argument", id)
		return nil, false
	}
	for _, m := range c.VolumeMounts {
		rel, err := filepath.Rel(m.MountPath, path)
		if err != nil || strings.HasPrefix(rel, "..") {
			continue
		}
		key := rel
		if m.SubPath != "" {
			key = m.SubPath
		}
		for _, v := range spec.Volumes {
			if v.Name != m.Name || v.ConfigMap == nil {
				continue
			}
			cm, ok := r.configMap(v.ConfigMap.Name)
			if !ok {
				t.Errorf("%s: ConfigMap %s does not exist", id, v.ConfigMap.Name)
				return nil, false
			}
			data, ok := cm.Data[key]
			if !ok {
				t.Errorf("%s: ConfigMap %s has no key %s for -config %s", id, cm.Name, key, path)
				return nil, false
			}
			return []byte(data), true
		}
	}
	t.Errorf("%s: -config %s is not on a ConfigMap volume", id, path)
	return nil, false
}

// checkServiceContainer runs the service's own loader on the rendered
// config and environment, and checks the drain fits the grace period.
func checkServiceContainer(t *testing.T, r rendered, id string, svc service, spec corev1.PodSpec, c corev1.Container, complete bool) {
	t.Helper()
	data, ok := mountedConfig(t, r, id, spec, c)
	if !ok {
		return
	}
	env := containerEnv(t, r, id, c)
	file := filepath.Join(t.TempDir(), svc.name+".yaml")
	if err := os.WriteFile(file, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := checkConfig(t, svc, file, env); err != nil {
		t.Errorf("%s: %v", id, err)
	}
	httpPort := portOf(t, configValue(t, svc, data, env, "http.addr", ""))
	for _, p := range []*corev1.Probe{c.ReadinessProbe, c.LivenessProbe} {
		if p == nil || p.HTTPGet == nil {
			continue
		}
		port := p.HTTPGet.Port.IntValue()
		if p.HTTPGet.Port.StrVal != "" {
			port = containerPortByName(c, p.HTTPGet.Port.StrVal)
		}
		if port != httpPort {
			t.Errorf("%s: probe on port %s, but http.addr is port %d", id, p.HTTPGet.Port.String(), httpPort)
		}
	}
	// SIGTERM starts the drain after preStop; the pod must outlive both.
	grace := drainGrace(t, svc, data, env)
	var preStop time.Duration
	if c.Lifecycle != nil && c.Lifecycle.PreStop != nil && c.Lifecycle.PreStop.Sleep != nil {
		preStop = time.Duration(c.Lifecycle.PreStop.Sleep.Seconds) * time.Second
	}
	if spec.TerminationGracePeriodSeconds == nil {
		t.Errorf("%s: no terminationGracePeriodSeconds (default 30 s) for a drain of %v", id, grace)
	} else if tg := time.Duration(*spec.TerminationGracePeriodSeconds) * time.Second; tg < preStop+grace {
		t.Errorf("%s: terminationGracePeriodSeconds %v < preStop %v + drain %v", id, tg, preStop, grace)
	}
	if svc.name == "media" {
		if !spec.HostNetwork {
			t.Errorf("%s: media nodes run on the host network", id)
		}
		for _, name := range []string{"MEDIA_RTP_ADVERTISE_IP", "MEDIA_NODE_ID"} {
			if !hasEnvFromField(c, name) {
				t.Errorf("%s: %s should come from the downward API", id, name)
			}
		}
	}
	if complete && len(spec.Containers) > 1 {
		t.Errorf("%s: SIP/RTP pods carry no sidecars", id)
	}
}

func hasEnvFromField(c corev1.Container, name string) bool {
	for _, e := range c.Env {
		if e.Name == name && e.ValueFrom != nil && e.ValueFrom.FieldRef != nil {
			return true
		}
	}
	return false
}

func containerPortByName(c corev1.Container, name string) int {
	for _, p := range c.Ports {
		if p.Name == name {
			return int(p.ContainerPort)
		}
	}
	return -1
}

// checkSelectors: PDBs, Services, HPAs and NetworkPolicies point at real
// pod templates and ports.
func checkSelectors(t *testing.T, r rendered) {
	t.Helper()
	for _, o := range r.objects {
		switch o := o.(type) {
		case *policyv1.PodDisruptionBudget:
			sel, err := metav1.LabelSelectorAsSelector(o.Spec.Selector)
			if err != nil || len(r.selects(sel)) == 0 {
				t.Errorf("PodDisruptionBudget %s selects no pod template (%v)", o.Name, o.Spec.Selector)
			}
		case *corev1.Service:
			ws := r.selects(labels.SelectorFromSet(o.Spec.Selector))
			if len(ws) == 0 {
				t.Errorf("Service %s selects no pod template (%v)", o.Name, o.Spec.Selector)
				continue
			}
			for _, p := range o.Spec.Ports {
				if !servesPort(ws, p) {
					t.Errorf("Service %s port %s: target %s/%s is no container port of %s", o.Name, p.Name, p.TargetPort.String(), p.Protocol, ws[0].name)
				}
			}
		case *autoscalingv2.HorizontalPodAutoscaler:
			found := false
			for _, w := range r.workloads() {
				found = found || (w.kind == o.Spec.ScaleTargetRef.Kind && w.name == o.Spec.ScaleTargetRef.Name)
			}
			if !found {
				t.Errorf("HorizontalPodAutoscaler %s scales %s/%s, which does not exist", o.Name, o.Spec.ScaleTargetRef.Kind, o.Spec.ScaleTargetRef.Name)
			}
		case *networkingv1.NetworkPolicy:
			sel, err := metav1.LabelSelectorAsSelector(&o.Spec.PodSelector)
			if err != nil || len(r.selects(sel)) == 0 {
				t.Errorf("NetworkPolicy %s selects no pod template", o.Name)
			}
		}
	}
}

func servesPort(ws []workload, p corev1.ServicePort) bool {
	proto := p.Protocol
	if proto == "" {
		proto = corev1.ProtocolTCP
	}
	for _, w := range ws {
		for _, c := range w.template.Spec.Containers {
			for _, cp := range c.Ports {
				cpProto := cp.Protocol
				if cpProto == "" {
					cpProto = corev1.ProtocolTCP
				}
				if cpProto != proto {
					continue
				}
				if (p.TargetPort.StrVal != "" && cp.Name == p.TargetPort.StrVal) ||
					(p.TargetPort.StrVal == "" && int(cp.ContainerPort) == targetPortInt(p)) {
					return true
				}
			}
		}
	}
	return false
}

func targetPortInt(p corev1.ServicePort) int {
	if v := p.TargetPort.IntValue(); v != 0 {
		return v
	}
	return int(p.Port)
}

// checkNATSInternal: no Service exposes NATS outside the cluster, and a
// NetworkPolicy restricts who reaches it.
func checkNATSInternal(t *testing.T, r rendered) {
	t.Helper()
	natsPods := labels.Set{"app.kubernetes.io/name": "nats"}
	guarded := false
	for _, o := range r.objects {
		switch o := o.(type) {
		case *corev1.Service:
			sel := labels.SelectorFromSet(o.Spec.Selector)
			if !sel.Empty() && sel.Matches(natsPods) && o.Spec.Type != "" && o.Spec.Type != corev1.ServiceTypeClusterIP {
				t.Errorf("Service %s exposes NATS as %s", o.Name, o.Spec.Type)
			}
		case *networkingv1.NetworkPolicy:
			sel, err := metav1.LabelSelectorAsSelector(&o.Spec.PodSelector)
			if err == nil && sel.Matches(natsPods) {
				guarded = true
				for _, rule := range o.Spec.Ingress {
					if len(rule.From) == 0 {
						t.Errorf("NetworkPolicy %s lets anyone reach NATS", o.Name)
					}
					for _, peer := range rule.From {
						if peer.IPBlock != nil && (peer.IPBlock.CIDR == "0.0.0.0/0" || peer.IPBlock.CIDR == "::/0") {
							t.Errorf("NetworkPolicy %s opens NATS to %s", o.Name, peer.IPBlock.CIDR)
						}
					}
				}
			}
		}
	}
	if !guarded {
		t.Error("no NetworkPolicy selects the NATS pods")
	}
}
