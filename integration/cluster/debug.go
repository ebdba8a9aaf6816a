package cluster

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// DebugState describes the cluster as the API server sees it — Nodes, pods
// with their node, IP and container states, Services, and the last warning
// events — for a failure message. It gives up after 10 s.
func (c *Cluster) DebugState(ctx context.Context) string {
	if c.CP == nil {
		return "no control plane"
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	cs := c.CP.Client
	var b strings.Builder
	b.WriteString("--- cluster state\n")
	if nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{}); err != nil {
		fmt.Fprintf(&b, "nodes: %v\n", err)
	} else {
		for _, n := range nodes.Items {
			fmt.Fprintf(&b, "node %s podCIDRs=%v ready=%v (%s)\n", n.Name, n.Spec.PodCIDRs, NodeReady(&n), readyMessage(&n))
		}
	}
	if pods, err := cs.CoreV1().Pods("").List(ctx, metav1.ListOptions{}); err != nil {
		fmt.Fprintf(&b, "pods: %v\n", err)
	} else {
		for _, p := range pods.Items {
			fmt.Fprintf(&b, "pod %s/%s node=%s phase=%s ip=%s", p.Namespace, p.Name, p.Spec.NodeName, p.Status.Phase, p.Status.PodIP)
			for _, s := range p.Status.ContainerStatuses {
				fmt.Fprintf(&b, " [%s ready=%v restarts=%d %s]", s.Name, s.Ready, s.RestartCount, containerState(s.State))
			}
			b.WriteString("\n")
		}
	}
	if svcs, err := cs.CoreV1().Services("").List(ctx, metav1.ListOptions{}); err != nil {
		fmt.Fprintf(&b, "services: %v\n", err)
	} else {
		for _, s := range svcs.Items {
			fmt.Fprintf(&b, "service %s/%s %s %v\n", s.Namespace, s.Name, s.Spec.ClusterIP, s.Spec.Ports)
		}
	}
	if evs, err := cs.CoreV1().Events("").List(ctx, metav1.ListOptions{FieldSelector: "type=Warning"}); err != nil {
		fmt.Fprintf(&b, "events: %v\n", err)
	} else {
		items := evs.Items
		sort.Slice(items, func(i, j int) bool { return items[i].LastTimestamp.Before(&items[j].LastTimestamp) })
		if len(items) > 30 {
			items = items[len(items)-30:]
		}
		for _, e := range items {
			fmt.Fprintf(&b, "event %s %s/%s %s: %s\n", e.LastTimestamp.Format(time.TimeOnly), e.InvolvedObject.Kind, e.InvolvedObject.Name, e.Reason, e.Message)
		}
	}
	return b.String()
}

func containerState(s corev1.ContainerState) string {
	switch {
	case s.Running != nil:
		return "running"
	case s.Waiting != nil:
		return "waiting " + s.Waiting.Reason + ": " + s.Waiting.Message
	case s.Terminated != nil:
		return fmt.Sprintf("terminated %s (exit %d): %s", s.Terminated.Reason, s.Terminated.ExitCode, s.Terminated.Message)
	}
	return "unknown"
}
