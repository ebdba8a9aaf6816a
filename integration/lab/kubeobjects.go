package lab

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
)

// labNamespace holds the lab's Services, as in the cluster file.
const labNamespace = "default"

// managedBy marks the EndpointSlices the lab makes, as the EndpointSlice
// controller marks its own (there is none in the lab's control plane).
const managedBy = "podnet-lab"

// createNode creates n's Node with its podCIDR, then sets its InternalIP
// through the status subresource, as the kubelet does.
func createNode(ctx context.Context, k kubernetes.Interface, n *Node) error {
	obj := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: n.Name},
		Spec:       corev1.NodeSpec{PodCIDR: n.PodCIDR.String(), PodCIDRs: []string{n.PodCIDR.String()}},
	}
	created, err := k.CoreV1().Nodes().Create(ctx, obj, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("create Node %s: %w", n.Name, err)
	}
	created.Status.Addresses = []corev1.NodeAddress{
		{Type: corev1.NodeInternalIP, Address: n.Addr.String()},
		{Type: corev1.NodeHostName, Address: n.Name},
	}
	if _, err := k.CoreV1().Nodes().UpdateStatus(ctx, created, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("Node %s status: %w", n.Name, err)
	}
	return nil
}

// serviceObject is s as a ClusterIP Service without a selector: its
// endpoints are the lab's EndpointSlices, not a controller's.
func serviceObject(s Service) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: labNamespace, Name: s.Name},
		Spec: corev1.ServiceSpec{
			Type:       corev1.ServiceTypeClusterIP,
			ClusterIP:  s.VIP.String(),
			ClusterIPs: []string{s.VIP.String()},
			Ports: []corev1.ServicePort{{Name: "http", Protocol: corev1.ProtocolTCP, Port: int32(s.Port),
				TargetPort: intstr.FromInt32(int32(s.TargetPort))}},
		},
	}
}

// endpointSlices are s's EndpointSlices: one per node with endpoints, named
// <service>-<node>, in the order the nodes first appear among s.Endpoints.
func endpointSlices(s Service) []*discoveryv1.EndpointSlice {
	var out []*discoveryv1.EndpointSlice
	byNode := map[*Node]*discoveryv1.EndpointSlice{}
	for _, p := range s.Endpoints {
		sl := byNode[p.Node]
		if sl == nil {
			sl = &discoveryv1.EndpointSlice{
				ObjectMeta: metav1.ObjectMeta{Namespace: labNamespace, Name: s.Name + "-" + p.Node.Name,
					Labels: map[string]string{discoveryv1.LabelServiceName: s.Name, discoveryv1.LabelManagedBy: managedBy}},
				AddressType: discoveryv1.AddressTypeIPv4,
				Ports: []discoveryv1.EndpointPort{{Name: ptrTo("http"), Protocol: ptrTo(corev1.ProtocolTCP),
					Port: ptrTo(int32(s.TargetPort))}},
			}
			byNode[p.Node] = sl
			out = append(out, sl)
		}
		sl.Endpoints = append(sl.Endpoints, discoveryv1.Endpoint{
			Addresses:  []string{p.IP.String()},
			NodeName:   ptrTo(p.Node.Name),
			Conditions: discoveryv1.EndpointConditions{Ready: ptrTo(true)},
		})
	}
	return out
}

// applyService creates s's Service or updates it in place (deleting and
// creating it again when its ClusterIP, which is immutable, changed), then
// makes its EndpointSlices endpointSlices(s), deleting any other slice of it.
func applyService(ctx context.Context, k kubernetes.Interface, s Service) error {
	api := k.CoreV1().Services(labNamespace)
	want := serviceObject(s)
	got, err := api.Get(ctx, s.Name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		_, err = api.Create(ctx, want, metav1.CreateOptions{})
	case err != nil:
	case got.Spec.ClusterIP != want.Spec.ClusterIP:
		if err = api.Delete(ctx, s.Name, metav1.DeleteOptions{}); err == nil {
			_, err = api.Create(ctx, want, metav1.CreateOptions{})
		}
	default:
		got.Spec.Ports = want.Spec.Ports
		_, err = api.Update(ctx, got, metav1.UpdateOptions{})
	}
	if err != nil {
		return fmt.Errorf("Service %s/%s: %w", labNamespace, s.Name, err)
	}
	return applySlices(ctx, k, s.Name, endpointSlices(s))
}

// applySlices makes want the EndpointSlices of the named Service: existing
// ones are updated, missing ones created, others deleted.
func applySlices(ctx context.Context, k kubernetes.Interface, service string, want []*discoveryv1.EndpointSlice) error {
	api := k.DiscoveryV1().EndpointSlices(labNamespace)
	have, err := api.List(ctx, metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=" + service})
	if err != nil {
		return fmt.Errorf("EndpointSlices of %s/%s: %w", labNamespace, service, err)
	}
	existing := map[string]string{} // name → resourceVersion
	for _, sl := range have.Items {
		existing[sl.Name] = sl.ResourceVersion
	}
	for _, sl := range want {
		if rv, ok := existing[sl.Name]; ok {
			sl.ResourceVersion = rv
			_, err = api.Update(ctx, sl, metav1.UpdateOptions{})
			delete(existing, sl.Name)
		} else {
			_, err = api.Create(ctx, sl, metav1.CreateOptions{})
		}
		if err != nil {
			return fmt.Errorf("EndpointSlice %s/%s: %w", labNamespace, sl.Name, err)
		}
	}
	for name := range existing {
		if err := api.Delete(ctx, name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("delete EndpointSlice %s/%s: %w", labNamespace, name, err)
		}
	}
	return nil
}

// deleteService deletes the named Service and its EndpointSlices (no
// garbage collector runs in the lab's control plane).
func deleteService(ctx context.Context, k kubernetes.Interface, name string) error {
	if err := applySlices(ctx, k, name, nil); err != nil {
		return err
	}
	err := k.CoreV1().Services(labNamespace).Delete(ctx, name, metav1.DeleteOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("delete Service %s/%s: %w", labNamespace, name, err)
	}
	return nil
}
