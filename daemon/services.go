package daemon

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"strconv"
	"strings"

	"github.com/podnet/podnet/nft"
)

// ServiceError is why the cluster file's services[Index] was left out. Only that
// service is left out: the nodes and the other services still apply.
type ServiceError struct {
	// Index is -1 for a Service read from the Kubernetes API.
	Index int
	// Namespace and Name are the service's, as far as they could be read; Name
	// is empty when it is missing or the entry could not be decoded.
	Namespace, Name string
	// Field is the offending field inside the service, e.g. "ports[1].protocol",
	// or "" when the entry as a whole is wrong (an unknown field, not a mapping).
	Field string
	// Value is the offending value as the message shows it (strings quoted), or "".
	Value  string
	Reason string
}

// Error reads like `services[2] default/web: ports[1].protocol "FOO": want TCP, UDP or SCTP`,
// or for a Service of the Kubernetes API `Service default/web: spec.ports[1].protocol "FOO": ...`.
func (e *ServiceError) Error() string {
	var b strings.Builder
	if e.Index < 0 {
		b.WriteString("Service")
	} else {
		fmt.Fprintf(&b, "services[%d]", e.Index)
	}
	if e.Name != "" {
		b.WriteString(" " + e.Namespace + "/" + e.Name)
	}
	b.WriteString(": ")
	if e.Field != "" {
		b.WriteString(e.Field)
		if e.Value != "" {
			b.WriteString(" " + e.Value)
		}
		b.WriteString(": ")
	}
	b.WriteString(e.Reason)
	return b.String()
}

// IgnoredService is a valid entry of the cluster file's services that no proxy
// programs: a headless service, or one labelled for another proxy.
type IgnoredService struct {
	Index           int
	Namespace, Name string
	Reason          string
}

// Kubernetes names used by the services schema.
const (
	// labelServiceProxyName marks a service handled by another proxy; kube-proxy
	// ignores such services, and so does podnet (KEP-2447).
	labelServiceProxyName = "service.kubernetes.io/service-proxy-name"

	typeClusterIP    = "ClusterIP"
	typeNodePort     = "NodePort"
	typeLoadBalancer = "LoadBalancer"

	affinityNone     = "None"
	affinityClientIP = "ClientIP"

	// maxAffinitySeconds is Kubernetes' limit on sessionAffinityConfig.clientIP.timeoutSeconds.
	maxAffinitySeconds = 86400
)

// parseServices checks every entry of the file's services on its own and
// translates the valid ones. An invalid entry, or one that conflicts with an
// earlier valid one (same namespace/name, same nodePort, same VIP and port), is
// returned in rejected; the others are unaffected. index[i] is the position of
// svcs[i] in raws. nodes holds the node names of the file, which endpoints may
// name.
func parseServices(raws []json.RawMessage, nodes map[string]bool) (svcs []*nft.Service, index []int, rejected []*ServiceError, ignored []IgnoredService) {
	claims := serviceClaims{}
	for i, raw := range raws {
		id := peekID(raw)
		svc, why, ferr := parseService(raw, nodes)
		if ferr == nil && why == "" {
			ferr = claims.check(svc)
		}
		switch {
		case ferr != nil:
			rejected = append(rejected, &ServiceError{Index: i, Namespace: id.Namespace, Name: id.Name,
				Field: ferr.field, Value: ferr.value, Reason: ferr.reason})
		case why != "":
			ignored = append(ignored, IgnoredService{Index: i, Namespace: id.Namespace, Name: id.Name, Reason: why})
		default:
			claims.add(svc, i)
			svcs, index = append(svcs, &svc), append(index, i)
		}
	}
	return svcs, index, rejected, ignored
}

type serviceID struct {
	Name      string `json:"name"`
	Namespace string `json:"namespace"`
}

// peekID reads the name and namespace of an entry leniently, so that the error
// of an entry that does not decode still names the service.
func peekID(raw json.RawMessage) serviceID {
	var id serviceID
	_ = json.Unmarshal(raw, &id) // best effort: fields of the wrong type stay empty
	if id.Namespace == "" {
		id.Namespace = "default"
	}
	return id
}

// serviceClaims maps what valid services took so far (a namespace/name, a
// protocol and nodePort, a VIP, protocol and port) to the service that took it.
type serviceClaims map[string]claimOwner

// claimOwner is the valid service at index of the file's services.
type claimOwner struct {
	index           int
	namespace, name string
}

func (o claimOwner) String() string {
	return fmt.Sprintf("services[%d] %s/%s", o.index, o.namespace, o.name)
}

// claim is one thing a service takes; reason completes "<reason> <owner>".
type claim struct{ key, field, value, reason string }

// claimsOf lists what svc takes, in a fixed order so that errors are stable.
func claimsOf(svc nft.Service) []claim {
	out := []claim{{key: "name " + svc.Namespace + "/" + svc.Name, field: "name", value: strconv.Quote(svc.Name), reason: "duplicate of"}}
	vips := []struct {
		list  string
		addrs []netip.Addr
	}{{"clusterIPs", svc.ClusterIPs}, {"externalIPs", svc.ExternalIPs}, {"loadBalancerIPs", svc.LoadBalancerIPs}}
	for j, p := range svc.Ports {
		if p.NodePort != 0 {
			out = append(out, claim{key: fmt.Sprintf("nodePort %s %d", p.Protocol, p.NodePort),
				field: fmt.Sprintf("ports[%d].nodePort", j), value: strconv.Itoa(int(p.NodePort)),
				reason: fmt.Sprintf("%s node port %d is already taken by", p.Protocol, p.NodePort)})
		}
		for _, v := range vips {
			for k, a := range v.addrs {
				out = append(out, claim{key: fmt.Sprintf("vip %s %s %d", a, p.Protocol, p.Port),
					field: fmt.Sprintf("%s[%d]", v.list, k), value: strconv.Quote(a.String()),
					reason: fmt.Sprintf("%s port %d of this address is already served by", p.Protocol, p.Port)})
			}
		}
	}
	return out
}

// check reports the first thing svc takes that an earlier valid service took.
func (c serviceClaims) check(svc nft.Service) *fieldError { return c.checkClaims(claimsOf(svc)) }

// checkClaims reports the first of claims that an earlier valid service took.
func (c serviceClaims) checkClaims(claims []claim) *fieldError {
	for _, cl := range claims {
		if owner, ok := c[cl.key]; ok {
			return &fieldError{field: cl.field, value: cl.value, reason: cl.reason + " " + owner.String()}
		}
	}
	return nil
}

// add records what the valid services[index] takes.
func (c serviceClaims) add(svc nft.Service, index int) { c.addClaims(claimsOf(svc), index, svc) }

// addClaims records claims as taken by svc, services[index].
func (c serviceClaims) addClaims(claims []claim, index int, svc nft.Service) {
	for _, cl := range claims {
		c[cl.key] = claimOwner{index: index, namespace: svc.Namespace, name: svc.Name}
	}
}

// fieldError is a problem with one field of a service.
type fieldError struct{ field, value, reason string }

// bad returns a fieldError; value is a string (shown quoted), an int, or nil (not shown).
func bad(field string, value any, format string, args ...any) *fieldError {
	e := &fieldError{field: field, reason: fmt.Sprintf(format, args...)}
	switch v := value.(type) {
	case string:
		e.value = strconv.Quote(v)
	case int:
		e.value = strconv.Itoa(v)
	}
	return e
}

// decodeStrict decodes one service entry; unknown fields and values of the wrong
// type are errors naming the field.
func decodeStrict(raw json.RawMessage, f *serviceFile) *fieldError {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	err := dec.Decode(f)
	if err == nil {
		return nil
	}
	if te := (*json.UnmarshalTypeError)(nil); errors.As(err, &te) {
		return &fieldError{field: te.Field, reason: fmt.Sprintf("want %s, got %s", kindName(te.Type), te.Value)}
	}
	return &fieldError{reason: strings.TrimPrefix(err.Error(), "json: ")}
}

// kindName names a Go type as a YAML author knows it.
func kindName(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Int, reflect.Int32, reflect.Int64, reflect.Uint16:
		return "a whole number"
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Slice:
		return "a list"
	case reflect.Map, reflect.Struct, reflect.Pointer:
		return "a mapping"
	default:
		return t.String()
	}
}
