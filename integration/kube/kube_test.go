package kube

import (
	"context"
	"fmt"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

// TestMain builds kube-apiserver once per machine (~5 minutes the first time, before
// the tests' timeout starts) and runs the tests in a sandbox.
func TestMain(m *testing.M) { Main(m) }

// TestControlPlane runs etcd and kube-apiserver, writes and reads back the objects
// podnetd consumes, checks that RBAC denies a least-privilege identity what its
// role does not grant, and that the data survives an API server restart.
func TestControlPlane(t *testing.T) {
	podnetd := NewToken("podnetd")
	node1 := NodeToken("node1")
	c := ForTest(t, Options{Tokens: []Token{podnetd, node1}})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	v, err := c.Client.Discovery().ServerVersion()
	if err != nil {
		t.Fatal(err)
	}
	if v.GitVersion != Version {
		t.Errorf("server version %s, want %s", v.GitVersion, Version)
	}

	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: "node1"},
		Spec:       corev1.NodeSpec{PodCIDR: "10.244.1.0/24", PodCIDRs: []string{"10.244.1.0/24", "fd00:244:1::/64"}},
		Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{
			{Type: corev1.NodeInternalIP, Address: "192.0.2.11"},
			{Type: corev1.NodeHostName, Address: "node1"},
		}},
	}
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "default"},
		Spec: corev1.ServiceSpec{
			ClusterIP: "10.96.0.10",
			Selector:  map[string]string{"app": "web"},
			Ports:     []corev1.ServicePort{{Name: "http", Protocol: corev1.ProtocolTCP, Port: 80, TargetPort: intstr.FromInt32(8080)}},
		},
	}
	ready := true
	port, proto, portName := int32(8080), corev1.ProtocolTCP, "http"
	slice := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{
			Name: "web-1", Namespace: "default",
			Labels: map[string]string{discoveryv1.LabelServiceName: "web"},
		},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints: []discoveryv1.Endpoint{{
			Addresses:  []string{"10.244.1.5"},
			Conditions: discoveryv1.EndpointConditions{Ready: &ready},
			NodeName:   &node.Name,
		}},
		Ports: []discoveryv1.EndpointPort{{Name: &portName, Protocol: &proto, Port: &port}},
	}
	if _, err := c.Client.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Client.CoreV1().Services("default").Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Client.DiscoveryV1().EndpointSlices("default").Create(ctx, slice, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	checkObjects(ctx, t, c.Client, node, svc, slice)

	// podnetd's least privilege: get/list/watch on what it reads, nothing more.
	podnetdClient, err := c.ClientFor(podnetd.Token)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := podnetdClient.CoreV1().Nodes().List(ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) {
		t.Fatalf("list nodes before any binding: %v, want forbidden", err)
	}
	grantReader(ctx, t, c.Client, rbacv1.Subject{Kind: rbacv1.UserKind, Name: podnetd.User})
	checkLeastPrivilege(ctx, t, podnetdClient, "podnetd")

	// The same role bound to a service account, as a DaemonSet's pods would use it.
	saToken, err := c.ServiceAccountToken(ctx, "kube-system", "podnet")
	if err != nil {
		t.Fatal(err)
	}
	grantReader(ctx, t, c.Client, rbacv1.Subject{Kind: rbacv1.ServiceAccountKind, Name: "podnet", Namespace: "kube-system"})
	saClient, err := c.ClientFor(saToken)
	if err != nil {
		t.Fatal(err)
	}
	checkLeastPrivilege(ctx, t, saClient, "service account")

	// The Node authorizer lets node1 read its own Node but not secrets.
	nodeClient, err := c.ClientFor(node1.Token)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := nodeClient.CoreV1().Nodes().Get(ctx, "node1", metav1.GetOptions{}); err != nil {
		t.Errorf("node1 get own node: %v", err)
	}
	if _, err := nodeClient.CoreV1().Secrets("default").List(ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("node1 list secrets: %v, want forbidden", err)
	}

	// A kubeconfig written for podnetd's token, reached at the advertise address,
	// authenticates as podnetd; the admin's works as admin.
	kubeconfig := filepath.Join(c.Dir, "podnetd.kubeconfig")
	server := fmt.Sprintf("https://%s:%d", Default().AdvertiseAddress, c.Port)
	if err := c.WriteKubeconfig(kubeconfig, server, podnetd.Token); err != nil {
		t.Fatal(err)
	}
	for path, user := range map[string]string{kubeconfig: podnetd.User, c.AdminKubeconfig: AdminUser} {
		cfg, err := clientcmd.BuildConfigFromFlags("", path)
		if err != nil {
			t.Fatal(err)
		}
		cs, err := kubernetes.NewForConfig(cfg)
		if err != nil {
			t.Fatal(err)
		}
		review, err := cs.AuthenticationV1().SelfSubjectReviews().Create(ctx, &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if got := review.Status.UserInfo.Username; got != user {
			t.Errorf("%s authenticates as %q, want %q", filepath.Base(path), got, user)
		}
	}

	// The API server goes away and comes back; etcd keeps the objects.
	if err := c.StopAPIServer(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Client.CoreV1().Nodes().Get(ctx, "node1", metav1.GetOptions{}); err == nil {
		t.Fatal("get node with the API server stopped: no error")
	}
	start := time.Now()
	if err := c.StartAPIServer(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("API server restarted in %s", time.Since(start).Round(time.Millisecond))
	checkObjects(ctx, t, c.Client, node, svc, slice)
}

// checkObjects reads the objects back and compares what podnetd consumes.
func checkObjects(ctx context.Context, t *testing.T, cs kubernetes.Interface, node *corev1.Node, svc *corev1.Service, slice *discoveryv1.EndpointSlice) {
	t.Helper()
	gotNode, err := cs.CoreV1().Nodes().Get(ctx, node.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(node.Spec.PodCIDRs, gotNode.Spec.PodCIDRs); diff != "" {
		t.Errorf("node podCIDRs (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(node.Status.Addresses, gotNode.Status.Addresses); diff != "" {
		t.Errorf("node addresses (-want +got):\n%s", diff)
	}
	gotSvc, err := cs.CoreV1().Services(svc.Namespace).Get(ctx, svc.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if gotSvc.Spec.ClusterIP != svc.Spec.ClusterIP || gotSvc.Spec.Type != corev1.ServiceTypeClusterIP {
		t.Errorf("service %s: clusterIP %s type %s, want %s ClusterIP", svc.Name, gotSvc.Spec.ClusterIP, gotSvc.Spec.Type, svc.Spec.ClusterIP)
	}
	if diff := cmp.Diff(svc.Spec.Ports, gotSvc.Spec.Ports); diff != "" {
		t.Errorf("service ports (-want +got):\n%s", diff)
	}
	slices, err := cs.DiscoveryV1().EndpointSlices(slice.Namespace).List(ctx, metav1.ListOptions{
		LabelSelector: discoveryv1.LabelServiceName + "=" + svc.Name,
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(slices.Items) != 1 {
		t.Fatalf("%d endpoint slices for service %s, want 1", len(slices.Items), svc.Name)
	}
	got := slices.Items[0]
	if diff := cmp.Diff(slice.Endpoints, got.Endpoints); diff != "" {
		t.Errorf("endpoints (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(slice.Ports, got.Ports); diff != "" {
		t.Errorf("endpoint ports (-want +got):\n%s", diff)
	}
}

// grantReader binds subject to a ClusterRole with get/list/watch on nodes, services
// and endpoint slices, creating the role on first use.
func grantReader(ctx context.Context, t *testing.T, cs kubernetes.Interface, subject rbacv1.Subject) {
	t.Helper()
	role := &rbacv1.ClusterRole{
		ObjectMeta: metav1.ObjectMeta{Name: "podnet-reader"},
		Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{""}, Resources: []string{"nodes", "services"}, Verbs: []string{"get", "list", "watch"}},
			{APIGroups: []string{"discovery.k8s.io"}, Resources: []string{"endpointslices"}, Verbs: []string{"get", "list", "watch"}},
		},
	}
	if _, err := cs.RbacV1().ClusterRoles().Create(ctx, role, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	binding := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "podnet-reader-" + subject.Name},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role.Name},
		Subjects:   []rbacv1.Subject{subject},
	}
	if _, err := cs.RbacV1().ClusterRoleBindings().Create(ctx, binding, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// checkLeastPrivilege checks that cs may read nodes, services and endpoint slices
// and nothing else. RBAC bindings take effect at once in a single API server, but
// the authorizer's informer may lag a creation by a moment: the first read retries.
func checkLeastPrivilege(ctx context.Context, t *testing.T, cs kubernetes.Interface, who string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		if err == nil {
			break
		}
		if !apierrors.IsForbidden(err) || time.Now().After(deadline) {
			t.Fatalf("%s: list nodes: %v", who, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	allowed := map[string]func() error{
		"get node":      func() error { _, err := cs.CoreV1().Nodes().Get(ctx, "node1", metav1.GetOptions{}); return err },
		"list services": func() error { _, err := cs.CoreV1().Services("").List(ctx, metav1.ListOptions{}); return err },
		"list endpoint slices": func() error {
			_, err := cs.DiscoveryV1().EndpointSlices("").List(ctx, metav1.ListOptions{})
			return err
		},
		"watch services": func() error {
			w, err := cs.CoreV1().Services("").Watch(ctx, metav1.ListOptions{})
			if err == nil {
				w.Stop()
			}
			return err
		},
	}
	for what, do := range allowed {
		if err := do(); err != nil {
			t.Errorf("%s: %s: %v", who, what, err)
		}
	}
	denied := map[string]func() error{
		"list secrets": func() error { _, err := cs.CoreV1().Secrets("").List(ctx, metav1.ListOptions{}); return err },
		"list pods":    func() error { _, err := cs.CoreV1().Pods("").List(ctx, metav1.ListOptions{}); return err },
		"create service": func() error {
			s := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "evil", Namespace: "default"},
				Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 1}}}}
			_, err := cs.CoreV1().Services("default").Create(ctx, s, metav1.CreateOptions{})
			return err
		},
		"delete endpoint slice": func() error {
			return cs.DiscoveryV1().EndpointSlices("default").Delete(ctx, "web-1", metav1.DeleteOptions{})
		},
		"patch node": func() error {
			_, err := cs.CoreV1().Nodes().Patch(ctx, "node1", "application/merge-patch+json",
				[]byte(`{"spec":{"unschedulable":true}}`), metav1.PatchOptions{})
			return err
		},
	}
	for what, do := range denied {
		if err := do(); !apierrors.IsForbidden(err) {
			t.Errorf("%s: %s: %v, want forbidden", who, what, err)
		}
	}
}

// TestDualStack runs the API server with a service CIDR per family and checks that
// a dual-stack Service gets a ClusterIP from each, IPv4 first.
func TestDualStack(t *testing.T) {
	v4, v6 := netip.MustParsePrefix("10.96.0.0/16"), netip.MustParsePrefix("fd00:96::/112")
	c := ForTest(t, Options{ServiceCIDRs: []netip.Prefix{v4, v6}})
	policy := corev1.IPFamilyPolicyRequireDualStack
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "dual", Namespace: "default"},
		Spec:       corev1.ServiceSpec{IPFamilyPolicy: &policy, Ports: []corev1.ServicePort{{Port: 80}}},
	}
	got, err := c.Client.CoreV1().Services("default").Create(context.Background(), svc, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ips := got.Spec.ClusterIPs
	if len(ips) != 2 {
		t.Fatalf("clusterIPs %v, want one per family", ips)
	}
	for i, p := range []netip.Prefix{v4, v6} {
		if a, err := netip.ParseAddr(ips[i]); err != nil || !p.Contains(a) {
			t.Errorf("clusterIPs[%d] = %s, want one in %s", i, ips[i], p)
		}
	}
}

// TestOptions checks defaults and the rejection of options Start cannot run with.
func TestOptions(t *testing.T) {
	o := Default()
	if err := o.Validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	if o.AdvertiseAddress.IsLoopback() || len(o.ServiceCIDRs) != 1 {
		t.Fatalf("defaults: %+v", o)
	}
	bad := map[string]func(*Options){
		"loopback advertise": func(o *Options) { o.AdvertiseAddress = netip.MustParseAddr("127.0.0.1") },
		"unmasked CIDR":      func(o *Options) { o.ServiceCIDRs = []netip.Prefix{netip.MustParsePrefix("10.96.0.1/16")} },
		"two IPv4 CIDRs": func(o *Options) {
			o.ServiceCIDRs = []netip.Prefix{netip.MustParsePrefix("10.96.0.0/16"), netip.MustParsePrefix("10.97.0.0/16")}
		},
		"comma in user": func(o *Options) { o.Tokens = []Token{NewToken("a,b")} },
		"empty token":   func(o *Options) { o.Tokens = []Token{{User: "x"}} },
	}
	for name, mutate := range bad {
		o := Default()
		mutate(&o)
		if err := o.Validate(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
