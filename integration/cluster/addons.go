package cluster

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer/json"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
)

// The manifests Up applies, relative to the repository.
const (
	podnetRBAC      = "deploy/kubernetes/rbac.yaml"
	podnetDaemonSet = "deploy/kubernetes/daemonset.yaml"
	coreDNSManifest = "deploy/e2e/coredns.yaml"
)

// PodnetCNIVersion is the conflist version podnetd writes on the nodes
// (--cni-version): containerd 1.6 rejects 1.1.0, podnetd's default.
const PodnetCNIVersion = "1.0.0"

// strictYAML decodes into client-go's types and fails on unknown or duplicate
// fields, as `kubectl apply --validate=strict` does.
var strictYAML = json.NewSerializerWithOptions(json.DefaultMetaFactory, scheme.Scheme, scheme.Scheme,
	json.SerializerOptions{Yaml: true, Strict: true})

// deployAddons creates, through the API, what makes the cluster a cluster
// beyond its processes:
//   - the ClusterRoleBinding that gives KubeletClientUser (the API server's
//     client certificate) the kubelet API (exec, logs, port-forward);
//   - podnet from deploy/kubernetes/ as it is, but for what this environment
//     requires (adjustPodnet);
//   - CoreDNS from deploy/e2e/coredns.yaml as it is.
//
// With NetworkReference podnet is left out (kube-proxy needs no object: its
// identity, system:kube-proxy, has the built-in binding system:node-proxier).
// It runs before the nodes start, so that the DaemonSet's pods are bound to
// each node as soon as it registers.
func (c *Cluster) deployAddons(ctx context.Context) error {
	crb := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "podnet-e2e:apiserver-kubelet-client"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "system:kubelet-api-admin"},
		Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: KubeletClientUser}},
	}
	if err := create(ctx, c.CP.Client, crb); err != nil {
		return err
	}
	root := c.opts.RepoDir
	files := []string{podnetRBAC, podnetDaemonSet, coreDNSManifest}
	if c.opts.Network == NetworkReference {
		files = []string{coreDNSManifest}
	}
	for _, file := range files {
		objs, err := readManifest(filepath.Join(root, file))
		if err != nil {
			return err
		}
		for _, obj := range objs {
			if ds, ok := obj.(*appsv1.DaemonSet); ok && ds.Name == "podnet" {
				if err := c.adjustPodnet(ds); err != nil {
					return fmt.Errorf("%s: %w", file, err)
				}
			}
			if err := create(ctx, c.CP.Client, obj); err != nil {
				return fmt.Errorf("%s: %w", file, err)
			}
		}
	}
	return nil
}

// adjustPodnet changes in podnet's DaemonSet only what this environment
// requires (docs/e2e.md lists them): the image built by `make images`, which
// no registry serves (imagePullPolicy Never); the API server's own address for
// the in-cluster configuration, as the manifest asks the installer to set; and
// the conflist version containerd 1.6 accepts.
func (c *Cluster) adjustPodnet(ds *appsv1.DaemonSet) error {
	spec := &ds.Spec.Template.Spec
	var ctr *corev1.Container
	for i := range spec.Containers {
		if spec.Containers[i].Name == "podnetd" {
			ctr = &spec.Containers[i]
		}
	}
	if ctr == nil {
		return errors.New("DaemonSet podnet has no container podnetd")
	}
	ctr.Image, ctr.ImagePullPolicy = c.images.PodnetImage(), corev1.PullNever
	set := map[string]string{
		"KUBERNETES_SERVICE_HOST": c.controlPlaneAddr().String(),
		"KUBERNETES_SERVICE_PORT": strconv.Itoa(c.cp.Port),
	}
	for i, e := range ctr.Env {
		if v, ok := set[e.Name]; ok {
			ctr.Env[i].Value = v
			delete(set, e.Name)
		}
	}
	if len(set) > 0 {
		return fmt.Errorf("container podnetd lacks the env %v it should have", set)
	}
	ctr.Args = append(ctr.Args, "--cni-version="+PodnetCNIVersion)
	return nil
}

// readManifest decodes every YAML document of a manifest file, strictly.
func readManifest(path string) ([]runtime.Object, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	var objs []runtime.Object
	for i := 0; ; i++ {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return objs, nil
		}
		if err != nil {
			return nil, fmt.Errorf("%s: document %d: %w", path, i, err)
		}
		if len(bytes.TrimSpace(stripComments(doc))) == 0 {
			continue
		}
		obj, _, err := strictYAML.Decode(doc, nil, nil)
		if err != nil {
			return nil, fmt.Errorf("%s: document %d: %w", path, i, err)
		}
		objs = append(objs, obj)
	}
}

func stripComments(doc []byte) []byte {
	var out []byte
	for _, line := range bytes.Split(doc, []byte("\n")) {
		if t := bytes.TrimSpace(line); len(t) > 0 && t[0] != '#' {
			out = append(out, line...)
			out = append(out, '\n')
		}
	}
	return out
}

// create creates obj, one of the kinds the manifests hold.
func create(ctx context.Context, cs kubernetes.Interface, obj runtime.Object) error {
	opts := metav1.CreateOptions{FieldManager: "podnet-e2e"}
	var err error
	switch o := obj.(type) {
	case *corev1.ServiceAccount:
		_, err = cs.CoreV1().ServiceAccounts(o.Namespace).Create(ctx, o, opts)
	case *corev1.ConfigMap:
		_, err = cs.CoreV1().ConfigMaps(o.Namespace).Create(ctx, o, opts)
	case *corev1.Service:
		_, err = cs.CoreV1().Services(o.Namespace).Create(ctx, o, opts)
	case *rbacv1.ClusterRole:
		_, err = cs.RbacV1().ClusterRoles().Create(ctx, o, opts)
	case *rbacv1.ClusterRoleBinding:
		_, err = cs.RbacV1().ClusterRoleBindings().Create(ctx, o, opts)
	case *appsv1.DaemonSet:
		_, err = cs.AppsV1().DaemonSets(o.Namespace).Create(ctx, o, opts)
	case *appsv1.Deployment:
		_, err = cs.AppsV1().Deployments(o.Namespace).Create(ctx, o, opts)
	default:
		return fmt.Errorf("create %T: not a kind the harness applies", obj)
	}
	if err != nil {
		return fmt.Errorf("create %T: %w", obj, err)
	}
	return nil
}

// waitAddons waits until every Node is Ready (its runtime found podnet's
// conflist, or the reference one), podnet's DaemonSet has a ready pod on every
// node (not with NetworkReference) and CoreDNS's Deployment has all its
// replicas available.
func (c *Cluster) waitAddons(ctx context.Context) error {
	cs := c.CP.Client
	procs := c.procs()
	for _, n := range c.Nodes {
		err := poll(ctx, "node "+n.Name+" Ready", 200*time.Millisecond, func(ctx context.Context) (bool, error) {
			node, err := cs.CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{})
			if err != nil {
				return false, err
			}
			if !NodeReady(node) {
				return false, fmt.Errorf("not Ready: %s", readyMessage(node))
			}
			return true, nil
		}, procs...)
		if err != nil {
			return err
		}
	}
	if c.opts.Network == NetworkReference {
		c.mark("nodes Ready (the reference conflist)")
	} else if err := c.waitPodnet(ctx); err != nil {
		return err
	}
	err := poll(ctx, "Deployment kube-system/coredns available", 200*time.Millisecond, func(ctx context.Context) (bool, error) {
		d, err := cs.AppsV1().Deployments("kube-system").Get(ctx, "coredns", metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		want := int32(1)
		if d.Spec.Replicas != nil {
			want = *d.Spec.Replicas
		}
		if d.Status.AvailableReplicas != want {
			return false, fmt.Errorf("%d of %d replicas available", d.Status.AvailableReplicas, want)
		}
		return true, nil
	}, procs...)
	if err != nil {
		return err
	}
	c.mark("CoreDNS available")
	return nil
}

// waitPodnet waits until podnet's DaemonSet has a ready pod on every node.
func (c *Cluster) waitPodnet(ctx context.Context) error {
	c.mark("nodes Ready (podnet's conflist)")
	err := poll(ctx, "DaemonSet kube-system/podnet ready on every node", 200*time.Millisecond, func(ctx context.Context) (bool, error) {
		ds, err := c.CP.Client.AppsV1().DaemonSets("kube-system").Get(ctx, "podnet", metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		s := ds.Status
		if s.NumberReady != int32(len(c.Nodes)) || s.DesiredNumberScheduled != int32(len(c.Nodes)) {
			return false, fmt.Errorf("%d of %d ready (%d desired)", s.NumberReady, len(c.Nodes), s.DesiredNumberScheduled)
		}
		return true, nil
	}, c.procs()...)
	if err != nil {
		return err
	}
	c.mark("podnet ready on every node")
	return nil
}

// readyMessage is the reason and message of a Node's Ready condition.
func readyMessage(node *corev1.Node) string {
	for _, cond := range node.Status.Conditions {
		if cond.Type == corev1.NodeReady {
			return cond.Reason + ": " + cond.Message
		}
	}
	return "no Ready condition yet"
}
