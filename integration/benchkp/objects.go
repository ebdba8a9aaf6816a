package benchkp

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	v1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/podnet/podnet/integration/benchsvc"
)

// The cluster the benchmark writes into the API server. Each proxy runs as
// a Node of its own, in its own network namespace on an underlay bridge;
// every endpoint is on one of two other Nodes, which no proxy runs on, so
// that both proxies see the same endpoints as remote.
var (
	underlayBridge = "kp-underlay"
	hostAddr       = netip.MustParsePrefix("192.0.2.1/24") // the sandbox's own namespace: the API server
	podnetdNode    = nodeInfo{Name: "pn-node", Addr: netip.MustParseAddr("192.0.2.11"), PodCIDR: netip.MustParsePrefix("10.244.1.0/24")}
	kubeProxyNode  = nodeInfo{Name: "kp-node", Addr: netip.MustParseAddr("192.0.2.12"), PodCIDR: netip.MustParsePrefix("10.244.2.0/24")}
	endpointNodes  = [2]nodeInfo{
		{Name: "node-a", Addr: netip.MustParseAddr("192.0.2.21"), PodCIDR: netip.MustParsePrefix("10.244.21.0/24")},
		{Name: "node-b", Addr: netip.MustParseAddr("192.0.2.22"), PodCIDR: netip.MustParsePrefix("10.244.22.0/24")},
	}
	clusterCIDR = netip.MustParsePrefix("10.244.0.0/16")
)

// portName names the one port of every generated Service and EndpointSlice.
const portName = "http"

type nodeInfo struct {
	Name    string
	Addr    netip.Addr
	PodCIDR netip.Prefix
}

func (n nodeInfo) spec() benchsvc.NodeSpec {
	return benchsvc.NodeSpec{Name: n.Name, Addr: n.Addr, PodCIDR: n.PodCIDR}
}

// genServices returns n services: benchsvc's generator (cluster IPs from
// 10.96.0.16 up, 4 endpoints each, 2 on each endpoint node).
func genServices(n int) []benchsvc.ServiceSpec {
	return benchsvc.GenServices(n, endpointNodes[0].spec(), endpointNodes[1].spec())
}

// serviceObject is the ClusterIP Service of s: TCP port 80 named http,
// target port 8080, its cluster IP given (the API server checks that it is
// in the service CIDR and free).
func serviceObject(s benchsvc.ServiceSpec) *v1.Service {
	return &v1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: benchsvc.Namespace, Name: s.Name},
		Spec: v1.ServiceSpec{
			Type:       v1.ServiceTypeClusterIP,
			ClusterIP:  s.VIP.String(),
			ClusterIPs: []string{s.VIP.String()},
			Ports: []v1.ServicePort{{Name: portName, Protocol: v1.ProtocolTCP, Port: benchsvc.ServicePort,
				TargetPort: intstr.FromInt32(benchsvc.TargetPort)}},
		},
	}
}

// sliceObject is the one EndpointSlice of s, named after it, with every
// endpoint ready and serving.
func sliceObject(s benchsvc.ServiceSpec) *discoveryv1.EndpointSlice {
	sl := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Namespace: benchsvc.Namespace, Name: s.Name + "-1", Labels: map[string]string{
			discoveryv1.LabelServiceName: s.Name,
			discoveryv1.LabelManagedBy:   "podnet-bench-kube-proxy",
		}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports: []discoveryv1.EndpointPort{{Name: ptr.To(portName), Protocol: ptr.To(v1.ProtocolTCP),
			Port: ptr.To[int32](benchsvc.TargetPort)}},
	}
	for _, e := range s.Endpoints {
		sl.Endpoints = append(sl.Endpoints, discoveryv1.Endpoint{
			Addresses:  []string{e.Addr.String()},
			NodeName:   ptr.To(e.Node),
			Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true), Serving: ptr.To(true), Terminating: ptr.To(false)},
		})
	}
	return sl
}

// setUpCluster creates the namespace, the four Nodes (with podCIDRs and
// InternalIPs, the status written through its subresource as the kubelet
// does) and podnetd's least-privilege ClusterRole bound to podnetdUser.
// kube-proxy runs as system:kube-proxy, which the API server's bootstrap
// binding system:node-proxier already grants what it reads.
func setUpCluster(ctx context.Context, k kubernetes.Interface, podnetdUser string) error {
	ns := &v1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: benchsvc.Namespace}}
	if _, err := k.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("namespace: %w", err)
	}
	for _, n := range []nodeInfo{podnetdNode, kubeProxyNode, endpointNodes[0], endpointNodes[1]} {
		obj := &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: n.Name},
			Spec: v1.NodeSpec{PodCIDR: n.PodCIDR.String(), PodCIDRs: []string{n.PodCIDR.String()}}}
		created, err := k.CoreV1().Nodes().Create(ctx, obj, metav1.CreateOptions{})
		if err != nil {
			return fmt.Errorf("node %s: %w", n.Name, err)
		}
		created.Status.Addresses = []v1.NodeAddress{{Type: v1.NodeInternalIP, Address: n.Addr.String()}, {Type: v1.NodeHostName, Address: n.Name}}
		if _, err := k.CoreV1().Nodes().UpdateStatus(ctx, created, metav1.UpdateOptions{}); err != nil {
			return fmt.Errorf("node %s status: %w", n.Name, err)
		}
	}
	role := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "podnetd"}, Rules: []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"nodes", "services"}, Verbs: []string{"get", "list", "watch"}},
		{APIGroups: []string{"discovery.k8s.io"}, Resources: []string{"endpointslices"}, Verbs: []string{"get", "list", "watch"}},
	}}
	if _, err := k.RbacV1().ClusterRoles().Create(ctx, role, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("cluster role: %w", err)
	}
	binding := &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "podnetd"},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "podnetd"},
		Subjects: []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: podnetdUser}}}
	if _, err := k.RbacV1().ClusterRoleBindings().Create(ctx, binding, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("cluster role binding: %w", err)
	}
	return nil
}

// createServices creates the Service and the EndpointSlice of each of svcs
// with workers concurrent clients, and returns how long it took until the
// API server held them all. A request the server turns away as too busy
// (429, timeouts) is retried; an object that already exists counts as
// created.
// done counts the services created with their slices, for progress reports.
func createServices(ctx context.Context, k kubernetes.Interface, svcs []benchsvc.ServiceSpec, workers int, done *atomic.Int64) (time.Duration, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var next atomic.Int64
	var wg sync.WaitGroup
	errc := make(chan error, workers)
	start := time.Now()
	for range workers {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= len(svcs) || ctx.Err() != nil {
					return
				}
				err := retry(ctx, func() error {
					_, err := k.CoreV1().Services(benchsvc.Namespace).Create(ctx, serviceObject(svcs[i]), metav1.CreateOptions{})
					return err
				})
				if err == nil {
					err = retry(ctx, func() error {
						_, err := k.DiscoveryV1().EndpointSlices(benchsvc.Namespace).Create(ctx, sliceObject(svcs[i]), metav1.CreateOptions{})
						return err
					})
				}
				if err != nil {
					errc <- fmt.Errorf("create %s: %w", svcs[i].Name, err)
					cancel()
					return
				}
				done.Add(1)
			}
		})
	}
	wg.Wait()
	took := time.Since(start)
	select {
	case err := <-errc:
		return took, err
	default:
		return took, nil
	}
}

// retry runs create until it succeeds, the object exists, or it fails with
// an error a retry cannot help; at most 10 times.
func retry(ctx context.Context, create func() error) error {
	var err error
	for attempt := range 10 {
		err = create()
		switch {
		case err == nil, apierrors.IsAlreadyExists(err):
			return nil
		case apierrors.IsTooManyRequests(err), apierrors.IsServerTimeout(err), apierrors.IsTimeout(err),
			apierrors.IsServiceUnavailable(err), apierrors.IsInternalError(err):
		default:
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Duration(attempt+1) * 100 * time.Millisecond):
		}
	}
	return err
}

// updateSlice replaces the endpoints of s's EndpointSlice with s's
// (an unconditional update: the benchmark is the only writer).
func updateSlice(ctx context.Context, k kubernetes.Interface, s benchsvc.ServiceSpec) error {
	_, err := k.DiscoveryV1().EndpointSlices(benchsvc.Namespace).Update(ctx, sliceObject(s), metav1.UpdateOptions{})
	if err != nil {
		return fmt.Errorf("update the EndpointSlice of %s: %w", s.Name, err)
	}
	return nil
}

// listTime is how long one LIST of all Services and one of all
// EndpointSlices take together, side by side and served from the API
// server's watch cache (resourceVersion 0), as an informer's first list:
// the floor under either proxy's cold start.
func listTime(ctx context.Context, k kubernetes.Interface) (time.Duration, error) {
	start := time.Now()
	var wg sync.WaitGroup
	var errSvc, errEPS error
	opts := metav1.ListOptions{ResourceVersion: "0"}
	wg.Go(func() { _, errSvc = k.CoreV1().Services("").List(ctx, opts) })
	wg.Go(func() { _, errEPS = k.DiscoveryV1().EndpointSlices("").List(ctx, opts) })
	wg.Wait()
	took := time.Since(start)
	if errSvc != nil {
		return 0, fmt.Errorf("list services: %w", errSvc)
	}
	if errEPS != nil {
		return 0, fmt.Errorf("list endpointslices: %w", errEPS)
	}
	return took, nil
}
