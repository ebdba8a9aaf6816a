package daemon

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"go.uber.org/zap"

	"github.com/podnet/podnet/daemon/api"
	"github.com/podnet/podnet/nft"
)

// serviceView is what the last sync that programmed the nft table did with the
// cluster's services. The debug API and the status report it.
type serviceView struct {
	programmed []*nft.Service
	rejected   []*ServiceError // by the cluster file
	refused    []*ServiceError // valid in the file, but skipped by the table
	ignored    []IgnoredService
	// problems are the table's other skipped values (not services').
	problems []string
}

// newServiceView builds the view of a sync of c whose table skipped skipped.
// Services the table skipped are refused, not programmed.
func newServiceView(c *Cluster, skipped *nft.SkippedError) *serviceView {
	byTable, problems := tableRejections(skipped, len(c.Services))
	v := &serviceView{rejected: c.RejectedServices, ignored: c.IgnoredServices, problems: problems}
	if len(byTable) == 0 {
		v.programmed = c.Services // a Cluster is never changed once stored
		return v
	}
	for i, svc := range c.Services {
		reason, ok := byTable[i]
		if !ok {
			v.programmed = append(v.programmed, svc)
			continue
		}
		v.refused = append(v.refused, &ServiceError{Index: c.fileIndex(i), Namespace: svc.Namespace, Name: svc.Name,
			Reason: "not programmed by the nft table: " + reason})
	}
	return v
}

// tableRejections maps the index in State.Services of each service the table
// skipped to the table's reason, reading the problems nft reports in the form
// "Services[i] namespace/name: reason". It returns the other problems apart.
func tableRejections(skipped *nft.SkippedError, n int) (map[int]string, []string) {
	out := map[int]string{}
	var other []string
	if skipped == nil {
		return out, nil
	}
	for _, p := range skipped.Problems {
		var i int
		_, reason, found := strings.Cut(p, ": ")
		if _, err := fmt.Sscanf(p, "Services[%d]", &i); err != nil || i < 0 || i >= n || !found {
			other = append(other, p)
			continue
		}
		out[i] = reason
	}
	return out, other
}

// splitSkipped separates the *nft.SkippedError in err, which reports values
// left out (retrying cannot fix them), from the errors that mean the sync failed.
func splitSkipped(err error) (*nft.SkippedError, error) {
	var skipped *nft.SkippedError
	if !errors.As(err, &skipped) {
		return nil, err
	}
	if err == error(skipped) {
		return skipped, nil
	}
	joined, ok := err.(interface{ Unwrap() []error })
	if !ok {
		return skipped, err // wrapped with context we cannot drop
	}
	var rest []error
	for _, e := range joined.Unwrap() {
		if e != error(skipped) {
			rest = append(rest, e)
		}
	}
	return skipped, errors.Join(rest...)
}

// logLoad logs a load of the cluster file, with each rejected service.
func (d *Daemon) logLoad(msg string, c *Cluster, extra ...zap.Field) {
	for _, e := range c.RejectedServices {
		d.log.Warn("service rejected", serviceErrorFields(e)...)
	}
	for _, ig := range c.IgnoredServices {
		d.log.Debug("service ignored", zap.Int("index", ig.Index),
			zap.String("service", ig.Namespace+"/"+ig.Name), zap.String("reason", ig.Reason))
	}
	d.log.Info(msg, append([]zap.Field{zap.String("file", d.cfg.ClusterFile), zap.Int("nodes", len(c.Nodes)),
		zap.Int("services", len(c.Services)), zap.Int("servicesRejected", len(c.RejectedServices)),
		zap.Int("servicesIgnored", len(c.IgnoredServices))}, extra...)...)
}

// logRefused logs what the table skipped that it did not skip in the previous
// view, so that a periodic resync does not repeat it.
func (d *Daemon) logRefused(prev, cur *serviceView) {
	seen := map[string]bool{}
	if prev != nil {
		for _, e := range prev.refused {
			seen[e.Error()] = true
		}
	}
	if len(cur.problems) > 0 && (prev == nil || !slices.Equal(prev.problems, cur.problems)) {
		d.log.Warn("nft table skipped invalid values", zap.Strings("problems", cur.problems))
	}
	for _, e := range cur.refused {
		if !seen[e.Error()] {
			d.log.Warn("service rejected", serviceErrorFields(e)...)
		}
	}
}

func serviceErrorFields(e *ServiceError) []zap.Field {
	return []zap.Field{zap.Int("index", e.Index), zap.String("service", e.Namespace+"/"+e.Name),
		zap.String("field", e.Field), zap.String("value", e.Value), zap.String("reason", e.Reason)}
}

// apiServices is the view as the debug API shows it.
func (v *serviceView) apiServices() api.Services {
	out := api.Services{Programmed: []api.Service{}, Rejected: []api.RejectedService{}, Ignored: []api.IgnoredService{}}
	if v == nil {
		return out
	}
	for _, svc := range v.programmed {
		out.Programmed = append(out.Programmed, apiService(*svc))
	}
	rejected := slices.Concat(v.rejected, v.refused)
	slices.SortStableFunc(rejected, func(a, b *ServiceError) int { return a.Index - b.Index })
	for _, e := range rejected {
		reason := e.Reason
		if e.Value != "" {
			reason = e.Value + ": " + reason
		}
		out.Rejected = append(out.Rejected, api.RejectedService{Index: e.Index, Namespace: e.Namespace, Name: e.Name,
			Field: e.Field, Reason: reason, Error: e.Error()})
	}
	for _, ig := range v.ignored {
		out.Ignored = append(out.Ignored, api.IgnoredService{Index: ig.Index, Namespace: ig.Namespace, Name: ig.Name, Reason: ig.Reason})
	}
	return out
}

func apiService(svc nft.Service) api.Service {
	s := api.Service{
		Namespace: svc.Namespace, Name: svc.Name,
		ClusterIPs: strs(svc.ClusterIPs), ExternalIPs: strs(svc.ExternalIPs),
		LoadBalancerIPs: strs(svc.LoadBalancerIPs), LoadBalancerSourceRanges: strs(svc.LoadBalancerSourceRanges),
		InternalTrafficPolicy:         string(orCluster(svc.InternalTrafficPolicy)),
		ExternalTrafficPolicy:         string(orCluster(svc.ExternalTrafficPolicy)),
		SessionAffinityTimeoutSeconds: int(svc.AffinityTimeout.Seconds()),
		Ports:                         []api.ServicePort{},
		Endpoints:                     []api.Endpoint{},
	}
	for _, p := range svc.Ports {
		s.Ports = append(s.Ports, api.ServicePort{Name: p.Name, Protocol: string(p.Protocol), Port: int(p.Port), NodePort: int(p.NodePort)})
	}
	for _, ep := range svc.Endpoints {
		ports := map[string]int{}
		for name, port := range ep.Ports {
			ports[name] = int(port)
		}
		s.Endpoints = append(s.Endpoints, api.Endpoint{Address: ep.Address.String(), Node: ep.NodeName, Ports: ports,
			Ready: ep.Ready, Serving: ep.Serving, Terminating: ep.Terminating})
	}
	return s
}

func orCluster(p nft.TrafficPolicy) nft.TrafficPolicy {
	if p == "" {
		return nft.PolicyCluster
	}
	return p
}

// strs formats addresses or prefixes.
func strs[T fmt.Stringer](vs []T) []string {
	var out []string
	for _, v := range vs {
		out = append(out, v.String())
	}
	return out
}
