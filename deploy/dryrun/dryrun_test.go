// Package dryrun applies podnet's Kubernetes manifests to a real kube-apiserver
// (integration/kube): server-side dry run of every object, so that a field the
// API does not have, a value its validation refuses or an admission error
// fails the test, and a real apply of the RBAC objects, whose least privilege
// is then checked by acting as the podnet service account.
package dryrun

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
	"sigs.k8s.io/yaml"

	"github.com/podnet/podnet/integration/kube"
)

// TestMain builds kube-apiserver once when root (the first build takes
// minutes) and runs the tests in a sandbox; without root they skip.
func TestMain(m *testing.M) { kube.Main(m) }

const repoRoot = "../.."

// manifestFiles are the objects applied, in order: the DaemonSet's RBAC, the
// DaemonSet, and the token Secret a systemd-run podnetd uses.
var manifestFiles = []string{
	"deploy/kubernetes/rbac.yaml",
	"deploy/kubernetes/daemonset.yaml",
	"deploy/systemd/token-secret.yaml",
}

// object is one manifest document.
type object struct {
	file string
	u    *unstructured.Unstructured
}

func (o object) String() string {
	return o.file + ": " + o.u.GetKind() + " " + o.u.GetNamespace() + "/" + o.u.GetName()
}

func readObjects(t *testing.T) []object {
	t.Helper()
	var out []object
	for _, f := range manifestFiles {
		data, err := os.ReadFile(filepath.Join(repoRoot, f))
		if err != nil {
			t.Fatal(err)
		}
		r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
		for {
			doc, err := r.Read()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			u := &unstructured.Unstructured{}
			if err := yaml.Unmarshal(doc, &u.Object); err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			if len(u.Object) == 0 {
				continue // comments only
			}
			out = append(out, object{file: f, u: u})
		}
	}
	return out
}

// warnings collects the API server's warnings (deprecated fields, ignored
// values), which client-go would otherwise only log.
type warnings struct {
	mu   sync.Mutex
	list []string
}

func (w *warnings) HandleWarningHeader(code int, agent, text string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.list = append(w.list, text)
}

func (w *warnings) take() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	l := w.list
	w.list = nil
	return l
}

// applier applies objects with server-side apply.
type applier struct {
	dyn    dynamic.Interface
	mapper meta.RESTMapper
	warn   *warnings
}

func newApplier(t *testing.T, cfg *rest.Config) *applier {
	t.Helper()
	w := &warnings{}
	cfg = rest.CopyConfig(cfg)
	cfg.WarningHandler = w
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	groups, err := restmapper.GetAPIGroupResources(dc)
	if err != nil {
		t.Fatal(err)
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return &applier{dyn: dyn, mapper: restmapper.NewDiscoveryRESTMapper(groups), warn: w}
}

// apply applies o as field manager podnet-test; dryRun: nothing is stored.
func (a *applier) apply(ctx context.Context, o object, dryRun bool) error {
	gvk := o.u.GroupVersionKind()
	mapping, err := a.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if err != nil {
		return err
	}
	var ri dynamic.ResourceInterface = a.dyn.Resource(mapping.Resource)
	if mapping.Scope.Name() == meta.RESTScopeNameNamespace {
		if o.u.GetNamespace() == "" {
			return errors.New("namespaced object without a namespace")
		}
		ri = a.dyn.Resource(mapping.Resource).Namespace(o.u.GetNamespace())
	}
	opts := metav1.ApplyOptions{FieldManager: "podnet-test", Force: true}
	if dryRun {
		opts.DryRun = []string{metav1.DryRunAll}
	}
	_, err = ri.Apply(ctx, o.u.GetName(), o.u, opts)
	return err
}

// TestManifestsServerSideDryRun applies every manifest with server-side dry
// run against kube-apiserver, with its admission plugins: the schema,
// validation (e.g. capabilities with allowPrivilegeEscalation, duplicate
// mount paths), the priority class and the API server's warnings.
func TestManifestsServerSideDryRun(t *testing.T) {
	cp := kube.ForTest(t, kube.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	a := newApplier(t, cp.RESTConfig(cp.AdminToken))
	objs := readObjects(t)
	if len(objs) != 5 {
		t.Fatalf("%d objects in %v, want 5", len(objs), manifestFiles)
	}
	for _, o := range objs {
		if err := a.apply(ctx, o, true); err != nil {
			t.Errorf("%s: %v", o, err)
		}
		if w := a.warn.take(); len(w) > 0 {
			t.Errorf("%s: API server warnings: %q", o, w)
		}
	}
	// Dry run stored nothing.
	for _, o := range objs {
		gvk := o.u.GroupVersionKind()
		mapping, err := a.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
		if err != nil {
			t.Fatal(err)
		}
		_, err = a.dyn.Resource(mapping.Resource).Namespace(o.u.GetNamespace()).Get(ctx, o.u.GetName(), metav1.GetOptions{})
		if !apierrors.IsNotFound(err) {
			t.Errorf("%s after dry run: %v, want not found", o, err)
		}
	}

	// The checks the dry run is for: a broken DaemonSet is refused.
	for _, o := range objs {
		if o.u.GetKind() != "DaemonSet" {
			continue
		}
		bad := object{file: o.file, u: o.u.DeepCopy()}
		c := bad.u.Object["spec"].(map[string]any)["template"].(map[string]any)["spec"].(map[string]any)["containers"].([]any)[0].(map[string]any)
		c["securityContext"].(map[string]any)["allowPrivilegeEscalation"] = false
		c["securityContext"].(map[string]any)["capabilities"].(map[string]any)["add"] = []any{"NET_ADMIN", "CAP_SYS_ADMIN"}
		if err := a.apply(ctx, bad, true); !apierrors.IsInvalid(err) {
			t.Errorf("DaemonSet with allowPrivilegeEscalation false and CAP_SYS_ADMIN: %v, want invalid", err)
		}
		typo := object{file: o.file, u: o.u.DeepCopy()}
		typo.u.Object["spec"].(map[string]any)["template"].(map[string]any)["spec"].(map[string]any)["hostNetwrok"] = true
		if err := a.apply(ctx, typo, true); err == nil || !strings.Contains(err.Error(), "hostNetwrok") {
			t.Errorf("DaemonSet with a misspelt field: %v, want an error naming it", err)
		}
	}
}

// TestRBACLeastPrivilege applies rbac.yaml for real, then acts as the podnet
// service account with a token from the TokenRequest API: it can list and
// watch what podnetd reads, and nothing else.
func TestRBACLeastPrivilege(t *testing.T) {
	cp := kube.ForTest(t, kube.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	a := newApplier(t, cp.RESTConfig(cp.AdminToken))
	var ns, name string
	for _, o := range readObjects(t) {
		if !strings.HasSuffix(o.file, "rbac.yaml") {
			continue
		}
		if err := a.apply(ctx, o, false); err != nil {
			t.Fatalf("%s: %v", o, err)
		}
		if o.u.GetKind() == "ServiceAccount" {
			ns, name = o.u.GetNamespace(), o.u.GetName()
		}
	}
	token, err := cp.ServiceAccountToken(ctx, ns, name)
	if err != nil {
		t.Fatal(err)
	}
	cs, err := cp.ClientFor(token)
	if err != nil {
		t.Fatal(err)
	}
	allowed := map[string]func() error{
		"list nodes": func() error { _, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{}); return err },
		"list services": func() error {
			_, err := cs.CoreV1().Services("").List(ctx, metav1.ListOptions{})
			return err
		},
		"list endpointslices": func() error {
			_, err := cs.DiscoveryV1().EndpointSlices("").List(ctx, metav1.ListOptions{})
			return err
		},
		"watch nodes":          func() error { return watchOnce(ctx, cs.CoreV1().Nodes().Watch) },
		"watch services":       func() error { return watchOnce(ctx, cs.CoreV1().Services("").Watch) },
		"watch endpointslices": func() error { return watchOnce(ctx, cs.DiscoveryV1().EndpointSlices("").Watch) },
		"get node": func() error {
			_, err := cs.CoreV1().Nodes().Get(ctx, "absent", metav1.GetOptions{})
			if apierrors.IsNotFound(err) {
				return nil
			}
			return err
		},
	}
	for what, f := range allowed {
		if err := f(); err != nil {
			t.Errorf("%s as %s/%s: %v", what, ns, name, err)
		}
	}
	denied := map[string]func() error{
		"list pods": func() error { _, err := cs.CoreV1().Pods("").List(ctx, metav1.ListOptions{}); return err },
		"list secrets": func() error {
			_, err := cs.CoreV1().Secrets("").List(ctx, metav1.ListOptions{})
			return err
		},
		"list configmaps": func() error {
			_, err := cs.CoreV1().ConfigMaps("").List(ctx, metav1.ListOptions{})
			return err
		},
		"delete services": func() error {
			return cs.CoreV1().Services("default").Delete(ctx, "kubernetes", metav1.DeleteOptions{DryRun: []string{metav1.DryRunAll}})
		},
		"patch node status": func() error {
			_, err := cs.CoreV1().Nodes().Patch(ctx, "absent", "application/merge-patch+json", []byte(`{}`), metav1.PatchOptions{}, "status")
			return err
		},
		"list events": func() error {
			_, err := cs.EventsV1().Events("default").List(ctx, metav1.ListOptions{})
			return err
		},
	}
	for what, f := range denied {
		if err := f(); !apierrors.IsForbidden(err) {
			t.Errorf("%s as %s/%s: %v, want forbidden", what, ns, name, err)
		}
	}
}

// watchOnce opens a watch and closes it.
func watchOnce(ctx context.Context, open func(context.Context, metav1.ListOptions) (watch.Interface, error)) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	w, err := open(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	w.Stop()
	return nil
}
