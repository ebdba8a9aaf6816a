package kubesource

import (
	v1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// The informers' caches keep only what the translation reads: at 50k
// Services their objects are most of podnetd's memory. Each trim returns a
// copy; the object it was given is left as it was.

// lastApplied is kubectl's copy of the last applied object, often the
// largest part of an object's metadata.
const lastApplied = "kubectl.kubernetes.io/last-applied-configuration"

// trimMeta drops the managed fields and kubectl's last applied copy.
func trimMeta(m metav1.ObjectMeta) metav1.ObjectMeta {
	m.ManagedFields = nil
	if _, ok := m.Annotations[lastApplied]; ok {
		a := make(map[string]string, len(m.Annotations)-1)
		for k, v := range m.Annotations {
			if k != lastApplied {
				a[k] = v
			}
		}
		m.Annotations = a
	}
	return m
}

// trimService keeps a Service's metadata (less the above) and spec, and of
// its status the load balancer ingress IPs.
func trimService(obj any) (any, error) {
	s, ok := obj.(*v1.Service)
	if !ok {
		return obj, nil // a DeletedFinalStateUnknown
	}
	c := *s
	c.ObjectMeta = trimMeta(s.ObjectMeta)
	c.Status = v1.ServiceStatus{LoadBalancer: s.Status.LoadBalancer}
	return &c, nil
}

// trimSlice keeps of each endpoint its addresses, conditions and node.
func trimSlice(obj any) (any, error) {
	sl, ok := obj.(*discoveryv1.EndpointSlice)
	if !ok {
		return obj, nil
	}
	c := *sl
	c.ObjectMeta = trimMeta(sl.ObjectMeta)
	c.Endpoints = make([]discoveryv1.Endpoint, len(sl.Endpoints))
	for i, ep := range sl.Endpoints {
		c.Endpoints[i] = discoveryv1.Endpoint{Addresses: ep.Addresses, Conditions: ep.Conditions, NodeName: ep.NodeName}
	}
	return &c, nil
}

// trimNode keeps a Node's name, versions, podCIDRs and addresses: not its
// images, conditions or capacity, which change far more often than they
// matter here.
func trimNode(obj any) (any, error) {
	n, ok := obj.(*v1.Node)
	if !ok {
		return obj, nil
	}
	return &v1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: n.Name, UID: n.UID, ResourceVersion: n.ResourceVersion,
			CreationTimestamp: n.CreationTimestamp},
		Spec:   v1.NodeSpec{PodCIDR: n.Spec.PodCIDR, PodCIDRs: n.Spec.PodCIDRs},
		Status: v1.NodeStatus{Addresses: n.Status.Addresses},
	}, nil
}
