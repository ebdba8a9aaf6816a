package cluster

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/podnet/podnet/integration/kube"
	"github.com/podnet/podnet/integration/sandbox"
)

// Binaries are the programs the cluster runs. Prepare fills them in (building
// what is missing) before the sandbox is entered.
type Binaries struct {
	APIServer, ControllerManager, Scheduler, Kubelet string
	// CNIPlugins is the directory of containernetworking/plugins' commands
	// (BuildCNIPlugins): loopback, which every node's containerd needs, and
	// bridge, host-local and portmap for NetworkReference.
	CNIPlugins string
	// KubeProxy is kube-proxy, needed by NetworkReference only.
	KubeProxy string
}

// check reports the first binary that network needs and is not set or does not exist.
func (b Binaries) check(network string) error {
	need := map[string]string{
		"kube-apiserver": b.APIServer, "kube-controller-manager": b.ControllerManager,
		"kube-scheduler": b.Scheduler, "kubelet": b.Kubelet,
		"CNI loopback plugin": filepath.Join(b.CNIPlugins, "loopback"),
	}
	if network == NetworkReference {
		need["kube-proxy"] = b.KubeProxy
		for name := range cniPlugins {
			need["CNI plugin "+name] = filepath.Join(b.CNIPlugins, name)
		}
	}
	if b.CNIPlugins == "" {
		return errors.New("binaries: CNI plugins not set (cluster.Prepare builds them)")
	}
	for name, path := range need {
		if path == "" {
			return fmt.Errorf("binaries: %s not set (cluster.Prepare builds them)", name)
		}
		if _, err := os.Stat(path); err != nil {
			return fmt.Errorf("binaries: %s: %w", name, err)
		}
	}
	for _, tool := range []string{"containerd", "containerd-shim-runc-v2", "ctr", "runc", "nsenter"} {
		if _, err := lookPath(tool); err != nil {
			return fmt.Errorf("binaries: %w (hack/install-deps.sh installs it)", err)
		}
	}
	return nil
}

// startControlPlane runs etcd and kube-apiserver (integration/kube, with the
// lease endpoint reconciler so that the kubernetes Service has endpoints, and a
// static token per node), then kube-controller-manager and kube-scheduler with
// the admin kubeconfig, and waits until the default service account exists
// (pods cannot be created before).
func (c *Cluster) startControlPlane(ctx context.Context, nodeTokens []kube.Token) error {
	dir := filepath.Join(c.Dir, "controlplane")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	cp, err := kube.Start(ctx, dir, kube.Options{
		APIServerBinary:  c.bins.APIServer,
		AdvertiseAddress: c.controlPlaneAddr(),
		ServiceCIDRs:     []netip.Prefix{c.opts.ServiceCIDR},
		Tokens:           nodeTokens,
		ExtraArgs: []string{
			"--endpoint-reconciler-type=lease",
			// Kubelets by node name (the sandbox's hosts file), with a client
			// certificate they accept, verifying their serving certificates.
			"--kubelet-client-certificate=" + c.pki.ClientCert,
			"--kubelet-client-key=" + c.pki.ClientKey,
			"--kubelet-certificate-authority=" + c.pki.CAFile,
			// Webhooks and aggregated APIs reached at their endpoints' pod IPs
			// (routePodCIDRs), not at ClusterIPs: podnet does not run on the
			// control-plane host, so nothing there proxies Services.
			"--enable-aggregator-routing=true",
			// At Down, stop within ~2 s: otherwise the HTTP server's graceful
			// shutdown sometimes waited the whole request timeout (60 s, cut
			// to 10 s by Stop's SIGKILL) for a connection of a node that was
			// already gone.
			"--shutdown-send-retry-after=true",
		},
	})
	if err != nil {
		return err
	}
	c.cp, c.CP = cp, cp
	pki := filepath.Join(dir, "pki")
	c.kcm, err = sandbox.StartProcess("kube-controller-manager", 0, c.bins.ControllerManager, []string{
		"--kubeconfig=" + cp.AdminKubeconfig,
		"--leader-elect=false",
		"--bind-address=127.0.0.1",
		"--allocate-node-cidrs=true",
		"--cluster-cidr=" + c.opts.ClusterCIDR.String(),
		"--node-cidr-mask-size=24",
		"--service-cluster-ip-range=" + c.opts.ServiceCIDR.String(),
		"--service-account-private-key-file=" + filepath.Join(pki, "service-account.key"),
		"--root-ca-file=" + cp.CAFile,
		"--use-service-account-credentials=false",
		"--flex-volume-plugin-dir=" + filepath.Join(dir, "flex-volume-plugins"),
		"--v=2",
	}, filepath.Join(dir, "kube-controller-manager.log"))
	if err != nil {
		return err
	}
	c.scheduler, err = sandbox.StartProcess("kube-scheduler", 0, c.bins.Scheduler, []string{
		"--kubeconfig=" + cp.AdminKubeconfig,
		"--leader-elect=false",
		"--bind-address=127.0.0.1",
		"--v=2",
	}, filepath.Join(dir, "kube-scheduler.log"))
	if err != nil {
		return err
	}
	return poll(ctx, "default service account", 200*time.Millisecond, func(ctx context.Context) (bool, error) {
		_, err := cp.Client.CoreV1().ServiceAccounts("default").Get(ctx, "default", metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return false, errors.New("not created yet by kube-controller-manager")
		}
		return err == nil, err
	}, c.kcm, c.scheduler)
}

// Logs returns the last n lines of every log of the cluster, for a failure message.
func (c *Cluster) Logs(n int) string { return logsIn(c.Dir, n) }

var lookPath = exec.LookPath
