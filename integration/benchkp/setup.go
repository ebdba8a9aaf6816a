package benchkp

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/jsimonetti/rtnetlink/v2"
	"github.com/jsimonetti/rtnetlink/v2/driver"
	"golang.org/x/sys/unix"
	"k8s.io/client-go/kubernetes"

	"github.com/podnet/podnet/integration/benchsvc"
	"github.com/podnet/podnet/integration/kube"
	"github.com/podnet/podnet/integration/sandbox"
)

// env is one run's control plane, clients and namespaces.
type env struct {
	cfg    Config
	out    io.Writer
	cp     *kube.ControlPlane
	client kubernetes.Interface // admin, protobuf, QPS 1000
	// kubeconfigs of each proxy's identity, for the API server at hostAddr.
	podnetdKubeconfig, kubeProxyKubeconfig string
	// podnetd is a copy of BinDir/podnetd taken at the start, so that a
	// build into a shared bin dir during the run does not change what is
	// measured; podnetdVersion is what it says with --version.
	podnetd, podnetdVersion string
	svcs                    []benchsvc.ServiceSpec // created so far
	namespaces              []*sandbox.NetNS
}

// setUp makes the underlay, starts etcd and kube-apiserver and writes the
// cluster's namespace, Nodes and RBAC. On error the returned env, when not
// nil, still needs tearDown.
func setUp(ctx context.Context, cfg Config, out io.Writer) (*env, error) {
	e := &env{cfg: cfg, out: out, podnetd: filepath.Join(cfg.WorkDir, "podnetd")}
	if err := copyFile(filepath.Join(cfg.BinDir, "podnetd"), e.podnetd); err != nil {
		return nil, fmt.Errorf("copy podnetd: %w", err)
	}
	v, err := exec.Command(e.podnetd, "--version").Output()
	if err != nil {
		return nil, fmt.Errorf("podnetd --version: %w", err)
	}
	e.podnetdVersion = strings.TrimSpace(string(v))
	if err := makeUnderlay(); err != nil {
		return nil, err
	}
	podnetdToken := kube.NewToken("podnetd")
	// The API server's bootstrap binding system:node-proxier grants
	// kube-proxy's own user what it reads and writes.
	kubeProxyToken := kube.NewToken("system:kube-proxy")
	cpDir := filepath.Join(cfg.WorkDir, "control-plane")
	if err := os.MkdirAll(cpDir, 0o755); err != nil {
		return e, err
	}
	fmt.Fprintf(out, "▸ starting etcd and kube-apiserver %s ...\n", kube.Version)
	cp, err := kube.Start(ctx, cpDir, kube.Options{
		APIServerBinary: cfg.APIServer,
		ServingIPs:      []netip.Addr{hostAddr.Addr()},
		Tokens:          []kube.Token{podnetdToken, kubeProxyToken},
	})
	if err != nil {
		return e, err
	}
	e.cp = cp
	rc := cp.RESTConfig(cp.AdminToken)
	rc.ContentType = "application/vnd.kubernetes.protobuf"
	rc.AcceptContentTypes = "application/vnd.kubernetes.protobuf,application/json"
	if e.client, err = kubernetes.NewForConfig(rc); err != nil {
		return e, err
	}
	server := fmt.Sprintf("https://%s:%d", hostAddr.Addr(), cp.Port)
	e.podnetdKubeconfig = filepath.Join(cfg.WorkDir, "podnetd.kubeconfig")
	e.kubeProxyKubeconfig = filepath.Join(cfg.WorkDir, "kube-proxy.kubeconfig")
	if err := cp.WriteKubeconfig(e.podnetdKubeconfig, server, podnetdToken.Token); err != nil {
		return e, err
	}
	if err := cp.WriteKubeconfig(e.kubeProxyKubeconfig, server, kubeProxyToken.Token); err != nil {
		return e, err
	}
	if err := setUpCluster(ctx, e.client, podnetdToken.User); err != nil {
		return e, err
	}
	return e, nil
}

// proxyNS makes the namespace of one proxy run, named name, on the
// underlay with addr. It lives until tearDown: deleting a namespace that
// holds a large table makes the kernel free it in the background, which
// would take CPU from the next run.
func (e *env) proxyNS(name string, addr netip.Addr) (*sandbox.NetNS, error) {
	ns, err := sandbox.NewNetNS(name)
	if err != nil {
		return nil, err
	}
	e.namespaces = append(e.namespaces, ns)
	if err := sandbox.Uplink(ns, "u-"+name, underlayBridge, netip.PrefixFrom(addr, hostAddr.Bits())); err != nil {
		return nil, err
	}
	return ns, nil
}

// tearDown stops the control plane and deletes the namespaces and the
// underlay.
func (e *env) tearDown() error {
	var errs []error
	if e.cp != nil {
		errs = append(errs, e.cp.Stop())
	}
	for _, ns := range e.namespaces {
		errs = append(errs, ns.Delete())
	}
	errs = append(errs, sandbox.DeleteLink(-1, underlayBridge))
	return errors.Join(errs...)
}

// copyFile copies the executable src to dst, streaming: reading it whole
// would raise this process's peak RSS, which every child's ru_maxrss starts
// from (see ProxyRun.BenchHWM).
func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// makeUnderlay makes the bridge the proxies' namespaces hang on, with
// hostAddr, in the sandbox's own namespace, where the API server listens.
func makeUnderlay() error {
	c, err := rtnetlink.Dial(nil)
	if err != nil {
		return err
	}
	defer c.Close()
	err = c.Link.New(&rtnetlink.LinkMessage{Family: unix.AF_UNSPEC, Attributes: &rtnetlink.LinkAttributes{
		Name: underlayBridge, Info: &rtnetlink.LinkInfo{Kind: "bridge", Data: &driver.Bridge{}}}})
	if err != nil {
		return fmt.Errorf("underlay bridge: %w", err)
	}
	if err := sandbox.SetLinkUp(-1, underlayBridge); err != nil {
		return err
	}
	ifi, err := net.InterfaceByName(underlayBridge)
	if err != nil {
		return err
	}
	ip := net.IP(hostAddr.Addr().AsSlice())
	err = c.Address.New(&rtnetlink.AddressMessage{Family: unix.AF_INET, PrefixLength: uint8(hostAddr.Bits()), Index: uint32(ifi.Index),
		Attributes: &rtnetlink.AddressAttributes{Address: ip, Local: ip, Flags: unix.IFA_F_NODAD}})
	if err != nil {
		return fmt.Errorf("underlay address: %w", err)
	}
	return nil
}
