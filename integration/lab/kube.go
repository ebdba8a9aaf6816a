package lab

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/jsimonetti/rtnetlink/v2"
	"golang.org/x/sys/unix"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes/scheme"

	"github.com/podnet/podnet/integration/kube"
)

// APIServerAddr is where the nodes reach the lab's API server with SourceKube:
// the sandbox's own address on the underlay bridge, an extra IP of the serving
// certificate. kube-apiserver listens on every address of the sandbox's own
// namespace.
var APIServerAddr = netip.MustParseAddr("192.0.2.1")

// RBACFile is the manifest, relative to the repository root, whose
// ServiceAccount, ClusterRole and ClusterRoleBinding the podnetds of a
// SourceKube lab act under: the DaemonSet's own least privilege.
const RBACFile = "deploy/kubernetes/rbac.yaml"

// tokenTTL is how long the podnetds' service account token is valid: longer
// than any lab lives (`podnet-lab up` may run for days), and no longer than
// the lab's API server, which dies with the lab.
const tokenTTL = 30 * 24 * time.Hour

// kubeSource is a real etcd and kube-apiserver in the lab's sandbox. The
// lab's Nodes, Services and EndpointSlices are made with client-go as admin;
// every podnetd reads them with --kubeconfig, as the service account of
// RBACFile.
type kubeSource struct {
	cp         *kube.ControlPlane
	server     string // the API server's URL for the nodes
	kubeconfig string
	nodes      map[string]bool // the Nodes publish created
	services   []string        // the Services the last publish made, by name
	logf       func(format string, a ...any)
	stopped    bool
}

// startKube starts the control plane under <WorkDir>/kube, applies the RBAC
// manifest, and writes the podnetds' kubeconfig with a token of its service
// account. On failure it stops what it started.
func (l *Lab) startKube(ctx context.Context) (_ *kubeSource, err error) {
	rbac := l.Opts.RBACFile
	if rbac == "" {
		if rbac, err = findRepoFile(RBACFile); err != nil {
			return nil, err
		}
	}
	if err := underlayAddr(true); err != nil {
		return nil, err
	}
	dir := filepath.Join(l.Opts.WorkDir, "kube")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	start := time.Now()
	cp, err := kube.Start(ctx, dir, kube.Options{
		ServingIPs: []netip.Addr{APIServerAddr},
		// Its own loopback watches can hold a stopping kube-apiserver for
		// its whole HTTP shutdown timeout (--request-timeout, 60 s), well past
		// kube.Stop's 10 s grace; with this flag that timeout is 2 s.
		ExtraArgs: []string{"--shutdown-send-retry-after=true"},
	})
	if err != nil {
		underlayAddr(false)
		return nil, err
	}
	k := &kubeSource{
		cp:         cp,
		server:     fmt.Sprintf("https://%s:%d", APIServerAddr, cp.Port),
		kubeconfig: filepath.Join(l.Opts.WorkDir, "kubeconfig"),
		nodes:      map[string]bool{},
		logf:       l.logf,
	}
	defer func() {
		if err != nil {
			k.close()
		}
	}()
	l.logf("▸ control plane: etcd and kube-apiserver %s up in %s, serving the nodes at %s (data and logs in %s)",
		kube.Version, time.Since(start).Round(100*time.Millisecond), k.server, dir)
	sa, applied, err := applyRBAC(ctx, cp, rbac)
	if err != nil {
		return nil, err
	}
	token, err := cp.Client.CoreV1().ServiceAccounts(sa.Namespace).CreateToken(ctx, sa.Name,
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptrTo(int64(tokenTTL.Seconds()))}},
		metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("token for service account %s/%s: %w", sa.Namespace, sa.Name, err)
	}
	if err := cp.WriteKubeconfig(k.kubeconfig, k.server, token.Status.Token); err != nil {
		return nil, err
	}
	l.logf("▸ %s applied: %s; every podnetd runs --kubeconfig with a token of service account %s/%s",
		rbac, strings.Join(applied, ", "), sa.Namespace, sa.Name)
	return k, nil
}

// AdminKubeconfig is the path of a kubeconfig for the lab's API server as an
// admin (system:masters), for clients in the sandbox's own namespace; "" when
// the lab's source is not SourceKube.
func (l *Lab) AdminKubeconfig() string {
	if k, ok := l.src.(*kubeSource); ok {
		return k.cp.AdminKubeconfig
	}
	return ""
}

func (k *kubeSource) daemonArgs() []string { return []string{"--kubeconfig", k.kubeconfig} }

func (k *kubeSource) describe() string { return "reading the API server at " + k.server }

// publish creates the Nodes not created yet (the lab's nodes never change
// once up), then makes the lab's Services and their EndpointSlices match
// svcs, deleting those of the Services a previous publish made and svcs
// leaves out.
func (k *kubeSource) publish(ctx context.Context, nodes []*Node, svcs []Service) error {
	var created []string
	for _, n := range nodes {
		if k.nodes[n.Name] {
			continue
		}
		if err := createNode(ctx, k.cp.Client, n); err != nil {
			return err
		}
		k.nodes[n.Name] = true
		created = append(created, n.Name)
	}
	if len(created) > 0 {
		k.logf("▸ Nodes %s created: spec.podCIDRs, and the InternalIP through the status subresource as a kubelet sets it", strings.Join(created, ", "))
	}
	keep := map[string]bool{}
	for _, s := range svcs {
		keep[s.Name] = true
		if err := applyService(ctx, k.cp.Client, s); err != nil {
			return err
		}
	}
	for _, name := range k.services {
		if !keep[name] {
			if err := deleteService(ctx, k.cp.Client, name); err != nil {
				return err
			}
		}
	}
	k.services = k.services[:0]
	for _, s := range svcs {
		k.services = append(k.services, s.Name)
	}
	return nil
}

func (k *kubeSource) published(s Service) string {
	var slices []string
	for _, sl := range endpointSlices(s) {
		slices = append(slices, sl.Name)
	}
	return fmt.Sprintf("created with client-go (Service %s/%s, EndpointSlices %s)", labNamespace, s.Name, strings.Join(slices, ", "))
}

// close stops kube-apiserver and etcd, and removes APIServerAddr from the
// underlay. The daemons should be stopped first: they would log failed
// watches.
func (k *kubeSource) close() error {
	if k.stopped {
		return nil
	}
	k.stopped = true
	return errors.Join(k.cp.Stop(), underlayAddr(false))
}

// applyRBAC creates the objects of the manifest at path, which must be
// ServiceAccounts, ClusterRoles and ClusterRoleBindings, exactly one
// ServiceAccount among them. It returns the ServiceAccount and a description
// of what it created, each ClusterRole with its rules.
func applyRBAC(ctx context.Context, cp *kube.ControlPlane, path string) (*corev1.ServiceAccount, []string, error) {
	objs, err := readManifest(path)
	if err != nil {
		return nil, nil, err
	}
	var sa *corev1.ServiceAccount
	var applied []string
	for _, obj := range objs {
		switch o := obj.(type) {
		case *corev1.ServiceAccount:
			if sa != nil {
				return nil, nil, fmt.Errorf("%s: more than one ServiceAccount", path)
			}
			sa = o
			_, err = cp.Client.CoreV1().ServiceAccounts(o.Namespace).Create(ctx, o, metav1.CreateOptions{})
			applied = append(applied, fmt.Sprintf("ServiceAccount %s/%s", o.Namespace, o.Name))
		case *rbacv1.ClusterRole:
			_, err = cp.Client.RbacV1().ClusterRoles().Create(ctx, o, metav1.CreateOptions{})
			applied = append(applied, fmt.Sprintf("ClusterRole %s (%s)", o.Name, describeRules(o.Rules)))
		case *rbacv1.ClusterRoleBinding:
			_, err = cp.Client.RbacV1().ClusterRoleBindings().Create(ctx, o, metav1.CreateOptions{})
			applied = append(applied, fmt.Sprintf("ClusterRoleBinding %s", o.Name))
		default:
			return nil, nil, fmt.Errorf("%s: unexpected %T: want ServiceAccounts, ClusterRoles and ClusterRoleBindings", path, obj)
		}
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", path, err)
		}
	}
	if sa == nil {
		return nil, nil, fmt.Errorf("%s: no ServiceAccount", path)
	}
	return sa, applied, nil
}

// readManifest decodes every document of the multi-document YAML file at
// path into its API type; documents with nothing but comments are skipped.
func readManifest(path string) ([]any, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	var out []any
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		j, err := utilyaml.ToJSON(doc)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		if string(j) == "null" {
			continue
		}
		obj, _, err := scheme.Codecs.UniversalDeserializer().Decode(j, nil, nil)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		out = append(out, obj)
	}
}

// describeRules gives a ClusterRole's rules in short: "get,list,watch
// nodes,services; get,list,watch endpointslices.discovery.k8s.io".
func describeRules(rules []rbacv1.PolicyRule) string {
	var parts []string
	for _, r := range rules {
		var res []string
		for _, g := range r.APIGroups {
			for _, name := range r.Resources {
				if g != "" {
					name += "." + g
				}
				res = append(res, name)
			}
		}
		parts = append(parts, strings.Join(r.Verbs, ",")+" "+strings.Join(res, ","))
	}
	return strings.Join(parts, "; ")
}

// findRepoFile returns the path of rel in podnet's repository, the first
// directory at or above the working directory that holds podnet's go.mod.
func findRepoFile(rel string) (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && bytes.HasPrefix(b, []byte("module github.com/podnet/podnet\n")) {
			return filepath.Join(dir, rel), nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("%s: podnet's repository not found at or above the working directory (run the lab from it, or set Options.RBACFile)", rel)
		}
		dir = parent
	}
}

// underlayAddr adds APIServerAddr/24 to the underlay bridge in the sandbox's
// own namespace, or removes it; one already there, or already gone, is fine.
func underlayAddr(add bool) error {
	c, err := rtnetlink.Dial(nil)
	if err != nil {
		return err
	}
	defer c.Close()
	ifi, err := net.InterfaceByName("underlay")
	if err != nil {
		return fmt.Errorf("underlay: %w", err)
	}
	ip := net.IP(APIServerAddr.AsSlice())
	msg := &rtnetlink.AddressMessage{Family: unix.AF_INET, PrefixLength: 24, Index: uint32(ifi.Index),
		Attributes: &rtnetlink.AddressAttributes{Address: ip, Local: ip, Flags: unix.IFA_F_NODAD}}
	if add {
		if err := c.Address.New(msg); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("add %s to underlay: %w", APIServerAddr, err)
		}
		return nil
	}
	if err := c.Address.Delete(msg); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
		return fmt.Errorf("remove %s from underlay: %w", APIServerAddr, err)
	}
	return nil
}

func ptrTo[T any](v T) *T { return &v }
