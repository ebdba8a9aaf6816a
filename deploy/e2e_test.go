package deploy

import (
	"path/filepath"
	"slices"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
)

// TestClusterDNSManifest: deploy/e2e/coredns.yaml decodes strictly, its
// Deployment's pods are what the kube-dns Service selects, the Service has the
// ClusterIP kubelets are told (10.96.0.10) with DNS over UDP and TCP, the
// image is never pulled (it is imported into each node), and the ClusterRole
// can list and watch what CoreDNS reads.
func TestClusterDNSManifest(t *testing.T) {
	var dep *appsv1.Deployment
	var svc *corev1.Service
	var role *rbacv1.ClusterRole
	var cm *corev1.ConfigMap
	for _, obj := range decodeFile(t, filepath.Join(repoRoot, "deploy", "e2e", "coredns.yaml")) {
		switch o := obj.(type) {
		case *appsv1.Deployment:
			dep = o
		case *corev1.Service:
			svc = o
		case *rbacv1.ClusterRole:
			role = o
		case *corev1.ConfigMap:
			cm = o
		}
	}
	if dep == nil || svc == nil || role == nil || cm == nil {
		t.Fatalf("want a Deployment, a Service, a ClusterRole and a ConfigMap")
	}
	for k, v := range svc.Spec.Selector {
		if dep.Spec.Template.Labels[k] != v {
			t.Errorf("Service selects %s=%s, the pods have %q", k, v, dep.Spec.Template.Labels[k])
		}
	}
	if svc.Spec.ClusterIP != "10.96.0.10" || svc.Namespace != "kube-system" || svc.Name != "kube-dns" {
		t.Errorf("Service %s/%s at %s, want kube-system/kube-dns at 10.96.0.10", svc.Namespace, svc.Name, svc.Spec.ClusterIP)
	}
	var protos []string
	for _, p := range svc.Spec.Ports {
		if p.Port == 53 {
			protos = append(protos, string(p.Protocol))
		}
	}
	if !slices.Equal(protos, []string{"UDP", "TCP"}) {
		t.Errorf("port 53 over %v, want UDP and TCP", protos)
	}
	c := dep.Spec.Template.Spec.Containers[0]
	if c.ImagePullPolicy != corev1.PullNever {
		t.Errorf("imagePullPolicy %s: no registry, the image must be imported", c.ImagePullPolicy)
	}
	if _, ok := cm.Data["Corefile"]; !ok {
		t.Error("ConfigMap has no Corefile")
	}
	can := map[string]bool{}
	for _, r := range role.Rules {
		for _, res := range r.Resources {
			if slices.Contains(r.Verbs, "list") && slices.Contains(r.Verbs, "watch") {
				can[res] = true
			}
		}
	}
	for _, res := range []string{"services", "pods", "namespaces", "endpointslices"} {
		if !can[res] {
			t.Errorf("ClusterRole cannot list and watch %s", res)
		}
	}
}
