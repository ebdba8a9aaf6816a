// Package kubesource reads podnet's cluster state from the Kubernetes API:
// Nodes, Services and EndpointSlices (discovery.k8s.io/v1), through client-go
// informers, translated into what podnet programs: Nodes with their
// addresses and podCIDRs, and nft.Services. docs/kubernetes.md gives the
// mapping. It never logs: what it leaves out is in the State it hands on, and
// failed watches go to Options.OnWatchError.
package kubesource

import (
	"cmp"
	"context"
	"errors"
	"io"
	"slices"
	"strings"
	"sync"
	"time"

	v1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	coreinformers "k8s.io/client-go/informers/core/v1"
	discoveryinformers "k8s.io/client-go/informers/discovery/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/podnet/podnet/nft"
)

// State is the cluster as the API server last described it. A State is never
// changed once handed on, and successive States share their services.
type State struct {
	// Nodes are the usable Nodes, sorted by name.
	Nodes []Node
	// Services are the Services to program, oldest first (then by
	// namespace and name), so that of two Services claiming the same VIP
	// port or node port the one that had it first keeps it.
	Services []*nft.Service
	// Rejected are the Services left out because a field cannot be used.
	Rejected []*Problem
	// Ignored are the valid Services no proxy like podnet programs.
	Ignored []IgnoredService
	// Problems are the other objects, or parts of objects, left out: Nodes
	// and node addresses, endpoints of EndpointSlices, load balancer
	// ingress IPs. What they belong to still applies.
	Problems []*Problem
}

// IgnoredService is a Service that no proxy of podnet's kind programs:
// headless, of type ExternalName, or labelled for another proxy.
type IgnoredService struct {
	Namespace, Name, Reason string
}

// Options tune a Source; the zero value is usable.
type Options struct {
	// OnWatchError is called, from an informer's goroutine, when listing or
	// watching resource ("nodes", "services" or "endpointslices") failed:
	// the API server is unreachable, or podnet lacks a permission. The
	// informer retries with backoff; the last State stays in force. Nil:
	// client-go's default handler (klog).
	OnWatchError func(resource string, err error)
}

// Source watches the API server and hands on each new State.
type Source struct {
	client kubernetes.Interface
	opts   Options

	services, slices, nodes cache.SharedIndexInformer

	// What event handlers recorded since Run last looked.
	mu         sync.Mutex
	dirtySvcs  map[string]bool // Service keys (namespace/name)
	dirtyNodes map[string]bool
	wake       chan struct{}

	// Run's own.
	entries   map[string]*serviceEntry
	order     []*serviceEntry // by (created, key)
	nodeState map[string]*nodeEntry
	nodeList  []Node
	nodeProbs []*Problem
}

// serviceEntry is one Service's translation.
type serviceEntry struct {
	key     string
	created time.Time
	res     serviceResult
}

// byService indexes EndpointSlices by the namespace/name of their Service.
const byService = "service"

// New returns a Source reading through client. Run starts it.
func New(client kubernetes.Interface, opts Options) *Source {
	s := &Source{client: client, opts: opts, wake: make(chan struct{}, 1),
		dirtySvcs: map[string]bool{}, dirtyNodes: map[string]bool{},
		entries: map[string]*serviceEntry{}, nodeState: map[string]*nodeEntry{}}
	// EndpointSlices of headless Services and of Services another proxy
	// serves are never used: the API server keeps them out of the cache,
	// as kube-proxy asks it to.
	noSlices := func(o *metav1.ListOptions) {
		o.LabelSelector = "!" + v1.IsHeadlessService + ",!" + LabelServiceProxyName
	}
	s.services = coreinformers.NewServiceInformer(client, metav1.NamespaceAll, 0, cache.Indexers{})
	s.slices = discoveryinformers.NewFilteredEndpointSliceInformer(client, metav1.NamespaceAll, 0,
		cache.Indexers{byService: sliceService}, noSlices)
	s.nodes = coreinformers.NewNodeInformer(client, 0, cache.Indexers{})
	return s
}

// Run watches Nodes, Services and EndpointSlices until ctx ends. Once the
// informers' caches hold the whole cluster it calls update with the first
// State, then with a new State after each batch of changes (changes that
// arrive while update runs are handed on together). It calls update from
// its own goroutine, one call at a time; update must not block for long. Run
// returns nil when ctx ends, or an error if it could not start the informers.
// A Source runs once.
func (s *Source) Run(ctx context.Context, update func(*State)) error {
	var synced []cache.InformerSynced
	for _, inf := range []struct {
		name      string
		informer  cache.SharedIndexInformer
		transform cache.TransformFunc
		handler   cache.ResourceEventHandler
	}{
		{"services", s.services, trimService, s.handler(s.markService, serviceKeys)},
		{"endpointslices", s.slices, trimSlice, s.handler(s.markService, sliceServiceKeys)},
		{"nodes", s.nodes, trimNode, s.handler(s.markNode, nodeKeys)},
	} {
		if err := inf.informer.SetTransform(inf.transform); err != nil {
			return err
		}
		if s.opts.OnWatchError != nil {
			name := inf.name
			if err := inf.informer.SetWatchErrorHandler(func(_ *cache.Reflector, err error) { s.watchError(name, err) }); err != nil {
				return err
			}
		}
		reg, err := inf.informer.AddEventHandler(inf.handler)
		if err != nil {
			return err
		}
		synced = append(synced, reg.HasSynced)
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for _, inf := range []cache.SharedIndexInformer{s.services, s.slices, s.nodes} {
		wg.Go(func() { inf.RunWithContext(ctx) })
	}
	if !cache.WaitForCacheSync(ctx.Done(), synced...) {
		return nil // ctx ended
	}
	for {
		s.mu.Lock()
		svcs, nodes := s.dirtySvcs, s.dirtyNodes
		s.dirtySvcs, s.dirtyNodes = map[string]bool{}, map[string]bool{}
		s.mu.Unlock()
		changed := s.applyServices(svcs)
		if s.applyNodes(nodes) || changed {
			update(s.state())
		}
		select {
		case <-ctx.Done():
			return nil
		case <-s.wake:
		}
	}
}

// watchError passes on a failed list or watch, less the ends of watches
// that client-go takes in its stride.
func (s *Source) watchError(resource string, err error) {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || apierrors.IsResourceExpired(err) || apierrors.IsGone(err) {
		return
	}
	s.opts.OnWatchError(resource, err)
}

// handler records the keys an event touches with mark and wakes Run; it
// does no other work.
func (s *Source) handler(mark func([]string), keys func(any) []string) cache.ResourceEventHandler {
	return cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { mark(keys(obj)) },
		UpdateFunc: func(old, obj any) { mark(append(keys(old), keys(obj)...)) },
		DeleteFunc: func(obj any) {
			if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = d.Obj
			}
			mark(keys(obj))
		},
	}
}

func (s *Source) markService(keys []string) { s.mark(false, keys) }
func (s *Source) markNode(keys []string)    { s.mark(true, keys) }

func (s *Source) mark(nodes bool, keys []string) {
	if len(keys) == 0 {
		return
	}
	s.mu.Lock()
	set := s.dirtySvcs
	if nodes {
		set = s.dirtyNodes
	}
	for _, k := range keys {
		set[k] = true
	}
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func serviceKeys(obj any) []string {
	if svc, ok := obj.(*v1.Service); ok {
		return []string{svc.Namespace + "/" + svc.Name}
	}
	return nil
}

func sliceServiceKeys(obj any) []string {
	keys, _ := sliceService(obj)
	return keys
}

func nodeKeys(obj any) []string {
	if n, ok := obj.(*v1.Node); ok {
		return []string{n.Name}
	}
	return nil
}

// sliceService is the byService index: the Service an EndpointSlice
// belongs to, named by its kubernetes.io/service-name label. A slice without
// the label belongs to no Service.
func sliceService(obj any) ([]string, error) {
	sl, ok := obj.(*discoveryv1.EndpointSlice)
	if !ok || sl.Labels[discoveryv1.LabelServiceName] == "" {
		return nil, nil
	}
	return []string{sl.Namespace + "/" + sl.Labels[discoveryv1.LabelServiceName]}, nil
}

// applyServices translates the Services of keys anew, with their slices,
// and reports whether there were any.
func (s *Source) applyServices(keys map[string]bool) bool {
	for key := range keys {
		old := s.entries[key]
		obj, exists, _ := s.services.GetIndexer().GetByKey(key)
		svc, _ := obj.(*v1.Service)
		if !exists || svc == nil {
			if old != nil {
				s.remove(old)
			}
			continue
		}
		e := &serviceEntry{key: key, created: svc.CreationTimestamp.Time, res: translateService(svc, s.slicesOf(key))}
		if old != nil && old.created.Equal(e.created) {
			*old = *e // same place in order
			continue
		}
		if old != nil {
			s.remove(old) // deleted and created again
		}
		s.entries[key] = e
		i, _ := slices.BinarySearchFunc(s.order, e, compareEntries)
		s.order = slices.Insert(s.order, i, e)
	}
	return len(keys) > 0
}

func (s *Source) remove(e *serviceEntry) {
	delete(s.entries, e.key)
	if i, ok := slices.BinarySearchFunc(s.order, e, compareEntries); ok {
		s.order = slices.Delete(s.order, i, i+1)
	}
}

func compareEntries(a, b *serviceEntry) int {
	return cmp.Or(a.created.Compare(b.created), strings.Compare(a.key, b.key))
}

// slicesOf returns the EndpointSlices of the Service key, sorted by name.
func (s *Source) slicesOf(key string) []*discoveryv1.EndpointSlice {
	objs, _ := s.slices.GetIndexer().ByIndex(byService, key)
	out := make([]*discoveryv1.EndpointSlice, 0, len(objs))
	for _, o := range objs {
		if sl, ok := o.(*discoveryv1.EndpointSlice); ok {
			out = append(out, sl)
		}
	}
	slices.SortFunc(out, func(a, b *discoveryv1.EndpointSlice) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// applyNodes translates the Nodes of names anew and reports whether the
// usable nodes or their problems changed.
func (s *Source) applyNodes(names map[string]bool) bool {
	changed := false
	for name := range names {
		old := s.nodeState[name]
		obj, exists, _ := s.nodes.GetIndexer().GetByKey(name)
		n, _ := obj.(*v1.Node)
		if !exists || n == nil {
			if old != nil {
				delete(s.nodeState, name)
				changed = true
			}
			continue
		}
		e := translateNode(n)
		if old == nil || !sameNode(old, e) {
			s.nodeState[name] = e
			changed = true
		}
	}
	if changed {
		s.nodeList, s.nodeProbs = assembleNodes(s.nodeState)
	}
	return changed
}

// sameNode reports whether two translations of a Node are the same.
func sameNode(a, b *nodeEntry) bool {
	same := func(p, q *Problem) bool { return p == nil && q == nil || p != nil && q != nil && *p == *q }
	return a.node.Name == b.node.Name && a.created.Equal(b.created) &&
		slices.Equal(a.node.Addresses, b.node.Addresses) && slices.Equal(a.node.PodCIDRs, b.node.PodCIDRs) &&
		same(a.rejected, b.rejected) && slices.EqualFunc(a.skipped, b.skipped, same)
}

// state assembles the State of the current translations.
func (s *Source) state() *State {
	st := &State{Nodes: s.nodeList, Services: make([]*nft.Service, 0, len(s.order))}
	for _, e := range s.order {
		r := e.res
		switch {
		case r.svc != nil:
			st.Services = append(st.Services, r.svc)
		case r.rejected != nil:
			st.Rejected = append(st.Rejected, r.rejected)
		case r.ignored != "":
			ns, name, _ := strings.Cut(e.key, "/")
			st.Ignored = append(st.Ignored, IgnoredService{Namespace: ns, Name: name, Reason: r.ignored})
		}
		st.Problems = append(st.Problems, r.skipped...)
	}
	st.Problems = append(st.Problems, s.nodeProbs...)
	return st
}
