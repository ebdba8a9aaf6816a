// Package kube runs a real Kubernetes control plane for tests and benchmarks: Debian's
// etcd and a kube-apiserver built from the k8s.io/kubernetes module (hack/kube-tools),
// as child processes of the test, inside its sandbox.
//
// Authentication is by static bearer tokens (an admin in system:masters plus any the
// caller adds, see Options.Tokens) and by service-account tokens; authorization is
// Node,RBAC, so least-privilege roles can be tested. Without a controller manager
// nothing reconciles: no namespaces are finalized, no default service accounts are
// made, no EndpointSlices are derived from Services — tests create the objects they
// need.
//
// From a test (the package's TestMain builds kube-apiserver once per machine, before
// entering the sandbox, which has no network to fetch modules with):
//
//	func TestMain(m *testing.M) { kube.Main(m) }
//
//	func TestNodes(t *testing.T) {
//		podnetd := kube.NewToken("podnetd") // a least-privilege identity to bind roles to
//		cp := kube.ForTest(t, kube.Options{Tokens: []kube.Token{podnetd}}) // skips without root
//		cp.Client.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}) // as admin
//		cp.WriteKubeconfig(filepath.Join(t.TempDir(), "kubeconfig"), "", podnetd.Token)
//		// ... run podnetd --kubeconfig with it; cp.StopAPIServer / StartAPIServer for outages
//	}
//
// Outside tests, Start and Stop do the same with a directory the caller keeps.
package kube

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"strconv"
	"time"

	"k8s.io/client-go/kubernetes"

	"github.com/podnet/podnet/integration/sandbox"
)

// Options configures Start. The zero value of each field means its default.
type Options struct {
	// APIServerBinary is the kube-apiserver to run; empty: Binary(ctx, "kube-apiserver"),
	// which builds it once per machine.
	APIServerBinary string
	// EtcdBinary is the etcd to run; empty: EtcdBinary.
	EtcdBinary string
	// AdvertiseAddress is the non-loopback address the API server advertises (the
	// kubernetes Service's endpoint). Default 10.255.0.1; when no interface has it,
	// Start adds it to the dummy link AdvertiseLink (inside a sandbox only).
	AdvertiseAddress netip.Addr
	// BindAddress is where the API server listens; default 0.0.0.0, so that network
	// namespaces routed to the sandbox's own can reach it.
	BindAddress netip.Addr
	// ServiceCIDRs are the --service-cluster-ip-range, one per family; default
	// 10.96.0.0/16.
	ServiceCIDRs []netip.Prefix
	// ServingIPs are extra IP SANs of the serving certificate, for clients that reach
	// the API server at another address (127.0.0.1, ::1, the advertise address and
	// the first IP of each service CIDR are always in it).
	ServingIPs []netip.Addr
	// Tokens are static bearer tokens besides the admin's (see NewToken, NodeToken).
	Tokens []Token
	// ExtraArgs are appended to kube-apiserver's flags; a flag given again wins.
	ExtraArgs []string
	// EtcdExtraArgs are appended to etcd's flags (e.g. --quota-backend-bytes).
	EtcdExtraArgs []string
	// StartTimeout bounds the wait for etcd and then for the API server's /readyz;
	// default 2 minutes (a cold start on 2 busy cores takes ~10 s).
	StartTimeout time.Duration
}

// Default returns Options with every default filled in.
func Default() Options {
	var o Options
	o.setDefaults()
	return o
}

func (o *Options) setDefaults() {
	if o.EtcdBinary == "" {
		o.EtcdBinary = EtcdBinary
	}
	if !o.AdvertiseAddress.IsValid() {
		o.AdvertiseAddress = netip.MustParseAddr("10.255.0.1")
	}
	if !o.BindAddress.IsValid() {
		o.BindAddress = netip.IPv4Unspecified()
	}
	if len(o.ServiceCIDRs) == 0 {
		o.ServiceCIDRs = []netip.Prefix{netip.MustParsePrefix("10.96.0.0/16")}
	}
	if o.StartTimeout == 0 {
		o.StartTimeout = 2 * time.Minute
	}
}

// Validate reports the first option Start cannot run with.
func (o *Options) Validate() error {
	if o.AdvertiseAddress.IsLoopback() || o.AdvertiseAddress.IsUnspecified() {
		return fmt.Errorf("advertise address %s: must be a non-loopback unicast address", o.AdvertiseAddress)
	}
	if len(o.ServiceCIDRs) > 2 {
		return fmt.Errorf("service CIDRs %v: at most one per family", o.ServiceCIDRs)
	}
	for _, p := range o.ServiceCIDRs {
		if !p.IsValid() || p.Masked() != p {
			return fmt.Errorf("service CIDR %s: not a masked prefix", p)
		}
	}
	if len(o.ServiceCIDRs) == 2 && o.ServiceCIDRs[0].Addr().Is4() == o.ServiceCIDRs[1].Addr().Is4() {
		return fmt.Errorf("service CIDRs %v: two of one family", o.ServiceCIDRs)
	}
	for _, t := range o.Tokens {
		if err := t.validate(); err != nil {
			return err
		}
	}
	return nil
}

// AdminUser is the admin token's user, in group system:masters.
const AdminUser = "podnet-admin"

// ControlPlane is a running etcd and kube-apiserver. Stop ends both.
type ControlPlane struct {
	// Dir holds etcd's data (etcd/), the certificates and keys (pki/), the token
	// file, the admin kubeconfig and the logs (etcd.log, kube-apiserver.log).
	Dir string
	// URL is the API server's address for clients in the sandbox's own namespace:
	// https://127.0.0.1:<port>.
	URL string
	// Port is the API server's secure port on BindAddress.
	Port int
	// EtcdURL is etcd's client URL on 127.0.0.1.
	EtcdURL string
	// CAFile is the CA that signed the serving certificate; CAData its PEM.
	CAFile string
	CAData []byte
	// AdminToken authenticates as AdminUser in system:masters.
	AdminToken string
	// AdminKubeconfig is the path of a kubeconfig for AdminToken at URL.
	AdminKubeconfig string
	// Client is a clientset authenticated with AdminToken.
	Client *kubernetes.Clientset

	opts      Options
	apiArgs   []string
	etcd      *sandbox.Process
	apiserver *sandbox.Process
}

// Start runs etcd and kube-apiserver with their files under dir (which must exist),
// waits until the API server's /readyz passes and the default and kube-system
// namespaces exist, writes the admin kubeconfig, and returns the control plane.
// It does not build kube-apiserver unless opts.APIServerBinary is empty (see Binary).
// On failure everything it started is stopped and the error carries the end of the
// failing process's log. Stop must be called once the caller is done.
func Start(ctx context.Context, dir string, opts Options) (_ *ControlPlane, err error) {
	opts.setDefaults()
	if err := opts.Validate(); err != nil {
		return nil, fmt.Errorf("kube: %w", err)
	}
	if opts.APIServerBinary == "" {
		if opts.APIServerBinary, err = Binary(ctx, "kube-apiserver", nil); err != nil {
			return nil, fmt.Errorf("kube: %w", err)
		}
	}
	if err := ensureAddress(opts.AdvertiseAddress); err != nil {
		return nil, fmt.Errorf("kube: %w", err)
	}
	// The processes run in / (sandbox.StartProcess): their paths must be absolute.
	if dir, err = filepath.Abs(dir); err != nil {
		return nil, fmt.Errorf("kube: %w", err)
	}
	c := &ControlPlane{Dir: dir, opts: opts}
	defer func() {
		if err != nil {
			c.Stop()
		}
	}()
	if err := c.startEtcd(ctx); err != nil {
		return nil, fmt.Errorf("kube: %w", err)
	}
	if err := c.configureAPIServer(); err != nil {
		return nil, fmt.Errorf("kube: %w", err)
	}
	if err := c.StartAPIServer(ctx); err != nil {
		return nil, err
	}
	return c, nil
}

// startEtcd runs a single-member etcd on free 127.0.0.1 ports and waits for /health.
func (c *ControlPlane) startEtcd(ctx context.Context) error {
	clientPort, err := freePort("127.0.0.1")
	if err != nil {
		return err
	}
	peerPort, err := freePort("127.0.0.1")
	if err != nil {
		return err
	}
	c.EtcdURL = "http://127.0.0.1:" + strconv.Itoa(clientPort)
	peerURL := "http://127.0.0.1:" + strconv.Itoa(peerPort)
	args := append([]string{
		"--name=podnet",
		"--data-dir=" + filepath.Join(c.Dir, "etcd"),
		"--listen-client-urls=" + c.EtcdURL,
		"--advertise-client-urls=" + c.EtcdURL,
		"--listen-peer-urls=" + peerURL,
		"--initial-advertise-peer-urls=" + peerURL,
		"--initial-cluster=podnet=" + peerURL,
		"--initial-cluster-state=new",
		// Debian's etcd 3.4.23 predates the progress requests the API server's watch
		// cache uses to catch up with etcd's revision (3.4.31+), so a watch or an
		// informer start waited up to 3 s whenever another resource had changed last.
		// Progress notifications every 250 ms advance every watch cache instead, for
		// ~10% of a core when idle (100 ms: ~20%; etcd's default 10m: ~1%); a flag
		// in EtcdExtraArgs overrides it.
		"--experimental-watch-progress-notify-interval=250ms",
		"--logger=zap",
		"--log-outputs=stderr",
	}, c.opts.EtcdExtraArgs...)
	c.etcd, err = sandbox.StartProcess("etcd", 0, c.opts.EtcdBinary, args, filepath.Join(c.Dir, "etcd.log"))
	if err != nil {
		return err
	}
	wctx, cancel := context.WithTimeout(ctx, c.opts.StartTimeout)
	defer cancel()
	return poll(wctx, c.etcd, 50*time.Millisecond, etcdHealthy(c.EtcdURL))
}

// configureAPIServer writes the certificates, keys, token file and admin
// kubeconfig, picks the port and builds the API server's flags and clientset.
func (c *ControlPlane) configureAPIServer() error {
	o := c.opts
	ips := []netip.Addr{netip.AddrFrom4([4]byte{127, 0, 0, 1}), netip.IPv6Loopback(), o.AdvertiseAddress}
	if !o.BindAddress.IsUnspecified() {
		ips = append(ips, o.BindAddress)
	}
	var cidrs string
	for i, p := range o.ServiceCIDRs {
		ips = append(ips, p.Addr().Next())
		if i > 0 {
			cidrs += ","
		}
		cidrs += p.String()
	}
	ips = append(ips, o.ServingIPs...)
	dns := []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"}
	pkiDir := filepath.Join(c.Dir, "pki")
	p, err := writePKI(pkiDir, ips, dns)
	if err != nil {
		return fmt.Errorf("pki: %w", err)
	}
	c.CAFile, c.CAData = p.caFile, p.caPEM
	admin := NewToken(AdminUser, "system:masters")
	c.AdminToken = admin.Token
	tokenFile := filepath.Join(c.Dir, "tokens.csv")
	if err := writeTokenFile(tokenFile, append([]Token{admin}, o.Tokens...)); err != nil {
		return fmt.Errorf("token file: %w", err)
	}
	host := "0.0.0.0"
	if !o.BindAddress.IsUnspecified() {
		host = o.BindAddress.String()
	}
	if c.Port, err = freePort(host); err != nil {
		return err
	}
	c.URL = "https://127.0.0.1:" + strconv.Itoa(c.Port)
	if o.BindAddress.Is6() && !o.BindAddress.IsUnspecified() {
		c.URL = "https://[::1]:" + strconv.Itoa(c.Port)
	}
	c.AdminKubeconfig = filepath.Join(c.Dir, "admin.kubeconfig")
	if err := c.WriteKubeconfig(c.AdminKubeconfig, "", c.AdminToken); err != nil {
		return err
	}
	if c.Client, err = c.ClientFor(c.AdminToken); err != nil {
		return err
	}
	c.apiArgs = append([]string{
		"--etcd-servers=" + c.EtcdURL,
		"--bind-address=" + o.BindAddress.String(),
		"--secure-port=" + strconv.Itoa(c.Port),
		"--advertise-address=" + o.AdvertiseAddress.String(),
		"--endpoint-reconciler-type=none",
		"--service-cluster-ip-range=" + cidrs,
		"--cert-dir=" + pkiDir,
		"--tls-cert-file=" + p.certFile,
		"--tls-private-key-file=" + p.keyFile,
		"--token-auth-file=" + tokenFile,
		"--authorization-mode=Node,RBAC",
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-signing-key-file=" + p.saKeyFile,
		"--service-account-key-file=" + p.saKeyFile,
		// DaemonSets with privileged containers (deploy/) pass admission.
		"--allow-privileged=true",
		"--profiling=false",
	}, o.ExtraArgs...)
	return nil
}

// StartAPIServer starts kube-apiserver (again, after StopAPIServer, on the same port
// and etcd data) and waits until /readyz passes and the default and kube-system
// namespaces exist.
func (c *ControlPlane) StartAPIServer(ctx context.Context) error {
	if c.apiserver != nil && !c.apiserver.Exited() {
		return errors.New("kube: kube-apiserver already runs")
	}
	var err error
	c.apiserver, err = sandbox.StartProcess("kube-apiserver", 0, c.opts.APIServerBinary, c.apiArgs, filepath.Join(c.Dir, "kube-apiserver.log"))
	if err != nil {
		return fmt.Errorf("kube: %w", err)
	}
	wctx, cancel := context.WithTimeout(ctx, c.opts.StartTimeout)
	defer cancel()
	if err := poll(wctx, c.apiserver, 100*time.Millisecond, c.ready); err != nil {
		return fmt.Errorf("kube: %w", err)
	}
	return nil
}

// ready reports whether /readyz passes and the namespaces tests use exist (the
// API server creates them shortly after it first becomes ready).
func (c *ControlPlane) ready(ctx context.Context) (bool, error) {
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	body, err := c.Client.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(rctx)
	if err != nil {
		return false, fmt.Errorf("/readyz: %w: %s", err, body)
	}
	for _, ns := range []string{"default", "kube-system"} {
		if _, err := c.Client.CoreV1().Namespaces().Get(rctx, ns, getOptions); err != nil {
			return false, fmt.Errorf("namespace %s: %w", ns, err)
		}
	}
	return true, nil
}

// StopAPIServer stops kube-apiserver (SIGTERM, SIGKILL after 10 s) and keeps etcd,
// to test clients across an API server outage; StartAPIServer brings it back.
func (c *ControlPlane) StopAPIServer() error {
	if c.apiserver == nil {
		return nil
	}
	return c.apiserver.Stop(10 * time.Second)
}

// Stop ends kube-apiserver, then etcd, by their PIDs (SIGTERM, SIGKILL after a
// grace period) and waits for both. It leaves Dir as it is, logs included. Calling
// it again is a no-op.
func (c *ControlPlane) Stop() error {
	errAPI := c.StopAPIServer()
	var errEtcd error
	if c.etcd != nil {
		errEtcd = c.etcd.Stop(5 * time.Second)
	}
	return errors.Join(errAPI, errEtcd)
}

// Logs returns the last n lines of the API server's and etcd's logs, for a test's
// failure message.
func (c *ControlPlane) Logs(n int) string {
	return fmt.Sprintf("--- %s\n%s\n--- %s\n%s\n",
		"kube-apiserver.log", sandbox.Tail(filepath.Join(c.Dir, "kube-apiserver.log"), n),
		"etcd.log", sandbox.Tail(filepath.Join(c.Dir, "etcd.log"), n))
}
