package daemon

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/go-logr/zapr"
	"go.uber.org/zap"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"

	"github.com/podnet/podnet/kubesource"
)

// kubeSource is the Kubernetes API as a Source: kubesource's informers, its
// States turned into Clusters, and what it leaves out logged.
type kubeSource struct {
	host string
	src  *kubesource.Source
	log  *zap.Logger

	// logged are the problems of the last State, by message, so that each
	// is logged once, when it appears (Run's goroutine only).
	logged map[string]bool

	mu       sync.Mutex
	warnedAt map[string]time.Time // by resource: the last failed watch logged
}

// watchWarnEvery bounds how often a failing list or watch of one resource
// is logged while the API server stays away (client-go retries every
// second or so at first).
const watchWarnEvery = 30 * time.Second

// newKubeSource connects to the API server of cfg.Kubeconfig, or of the
// pod's service account when it is empty. client-go's own logs go to log.
func newKubeSource(cfg Config, log *zap.Logger) (*kubeSource, error) {
	var rc *rest.Config
	var err error
	if cfg.Kubeconfig == "" {
		if rc, err = rest.InClusterConfig(); err != nil {
			return nil, fmt.Errorf("--kubeconfig not given, and no in-cluster config: %w", err)
		}
	} else if rc, err = clientcmd.BuildConfigFromFlags("", cfg.Kubeconfig); err != nil {
		return nil, fmt.Errorf("--kubeconfig: %w", err)
	}
	rc.UserAgent = "podnetd/" + Version
	// Protobuf: at 50k Services and EndpointSlices the first list decodes
	// several times faster than JSON.
	rc.ContentType = "application/vnd.kubernetes.protobuf"
	rc.AcceptContentTypes = "application/vnd.kubernetes.protobuf,application/json"
	client, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	klog.SetLogger(zapr.NewLogger(log.Named("client-go")))
	return newKubeSourceFor(client, rc.Host, log), nil
}

// newKubeSourceFor is a kubeSource reading through client from host.
func newKubeSourceFor(client kubernetes.Interface, host string, log *zap.Logger) *kubeSource {
	k := &kubeSource{host: host, log: log, logged: map[string]bool{}, warnedAt: map[string]time.Time{}}
	k.src = kubesource.New(client, kubesource.Options{OnWatchError: k.watchError})
	return k
}

func (k *kubeSource) Name() string { return "kube:" + k.host }

// Run hands on a Cluster once the caches have synced, then at each change;
// while the API server is away, the last one stays in force.
func (k *kubeSource) Run(ctx context.Context, update func(*Cluster)) error {
	start := time.Now()
	k.log.Info("waiting for the Kubernetes caches to sync (Nodes, Services, EndpointSlices); nothing is programmed until then",
		zap.String("server", k.host))
	first := true
	return k.src.Run(ctx, func(st *kubesource.State) {
		c := clusterFromKube(st)
		k.logProblems(st)
		counts := []zap.Field{zap.Int("nodes", len(c.Nodes)), zap.Int("services", len(c.Services)),
			zap.Int("servicesRejected", len(c.RejectedServices)), zap.Int("servicesIgnored", len(c.IgnoredServices))}
		if first {
			first = false
			k.log.Info("Kubernetes caches synced", append(counts, zap.String("server", k.host), zap.Duration("took", time.Since(start)))...)
		} else {
			k.log.Debug("cluster state changed", counts...)
		}
		update(c)
	})
}

// clusterFromKube is the Cluster of a State. It shares the State's
// services, which are never changed.
func clusterFromKube(st *kubesource.State) *Cluster {
	c := &Cluster{Nodes: make([]Node, len(st.Nodes)), Services: st.Services, fromAPI: true}
	for i, n := range st.Nodes {
		c.Nodes[i] = Node(n)
	}
	for _, p := range st.Rejected {
		c.RejectedServices = append(c.RejectedServices, &ServiceError{Index: -1, Namespace: p.Namespace, Name: p.Name,
			Field: p.Field, Value: p.Value, Reason: p.Reason})
	}
	for _, ig := range st.Ignored {
		c.IgnoredServices = append(c.IgnoredServices, IgnoredService{Index: -1, Namespace: ig.Namespace, Name: ig.Name, Reason: ig.Reason})
	}
	return c
}

// logProblems logs what a State leaves out that the last one did not.
func (k *kubeSource) logProblems(st *kubesource.State) {
	now := make(map[string]bool, len(st.Rejected)+len(st.Problems))
	for _, p := range st.Rejected {
		now[p.Error()] = true
		if !k.logged[p.Error()] {
			k.log.Warn("service rejected", zap.String("service", p.Namespace+"/"+p.Name),
				zap.String("field", p.Field), zap.String("value", p.Value), zap.String("reason", p.Reason))
		}
	}
	for _, p := range st.Problems {
		now[p.Error()] = true
		if !k.logged[p.Error()] {
			name := p.Name
			if p.Namespace != "" {
				name = p.Namespace + "/" + name
			}
			k.log.Warn("object skipped", zap.String("kind", p.Kind), zap.String("name", name),
				zap.String("field", p.Field), zap.String("value", p.Value), zap.String("reason", p.Reason))
		}
	}
	for _, ig := range st.Ignored {
		msg := "ignored " + ig.Namespace + "/" + ig.Name + ": " + ig.Reason
		if !k.logged[msg] {
			k.log.Debug("service ignored", zap.String("service", ig.Namespace+"/"+ig.Name), zap.String("reason", ig.Reason))
		}
		now[msg] = true
	}
	k.logged = now
}

// watchError logs a failed list or watch, at most every watchWarnEvery per
// resource. client-go retries it with backoff.
func (k *kubeSource) watchError(resource string, err error) {
	k.mu.Lock()
	last := k.warnedAt[resource]
	quiet := time.Since(last) < watchWarnEvery
	if !quiet {
		k.warnedAt[resource] = time.Now()
	}
	k.mu.Unlock()
	if quiet {
		k.log.Debug("Kubernetes API watch failed", zap.String("resource", resource), zap.Error(err))
		return
	}
	k.log.Warn("Kubernetes API watch failed; retrying, the datapath stays as programmed", zap.String("server", k.host),
		zap.String("resource", resource), zap.Error(err))
}
