package cluster

import (
	"bytes"
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/httpstream"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/remotecommand"
)

// ExecPod runs command in a container of a pod through the API server's
// pods/exec subresource, as `kubectl exec` does: WebSocket first, SPDY when
// the upgrade is refused. The API server reaches the pod's kubelet by node
// name with its client certificate; the kubelet authenticates it (x509) and
// asks the API server whether it may (webhook). It returns stdout and stderr;
// a command that exits non-zero gives an error with its status and stderr.
func (c *Cluster) ExecPod(ctx context.Context, namespace, pod, container string, command ...string) (stdout, stderr string, err error) {
	req := c.CP.Client.CoreV1().RESTClient().Post().
		Resource("pods").Namespace(namespace).Name(pod).SubResource("exec").
		VersionedParams(&corev1.PodExecOptions{
			Container: container, Command: command, Stdout: true, Stderr: true,
		}, scheme.ParameterCodec)
	cfg := c.CP.RESTConfig(c.CP.AdminToken)
	ws, err := remotecommand.NewWebSocketExecutor(cfg, "GET", req.URL().String())
	if err != nil {
		return "", "", fmt.Errorf("exec %s/%s: %w", namespace, pod, err)
	}
	spdy, err := remotecommand.NewSPDYExecutor(cfg, "POST", req.URL())
	if err != nil {
		return "", "", fmt.Errorf("exec %s/%s: %w", namespace, pod, err)
	}
	exec, err := remotecommand.NewFallbackExecutor(ws, spdy, func(err error) bool {
		return httpstream.IsUpgradeFailure(err) || httpstream.IsHTTPSProxyError(err)
	})
	if err != nil {
		return "", "", fmt.Errorf("exec %s/%s: %w", namespace, pod, err)
	}
	var out, errOut bytes.Buffer
	err = exec.StreamWithContext(ctx, remotecommand.StreamOptions{Stdout: &out, Stderr: &errOut})
	if err != nil {
		return out.String(), errOut.String(), fmt.Errorf("exec %s/%s %q: %w: %s", namespace, pod, command, err, errOut.String())
	}
	return out.String(), errOut.String(), nil
}
