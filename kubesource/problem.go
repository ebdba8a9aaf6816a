package kubesource

import (
	"fmt"
	"strconv"
	"strings"
)

// The kinds of object a Problem names.
const (
	KindService       = "Service"
	KindEndpointSlice = "EndpointSlice"
	KindNode          = "Node"
)

// Problem is an object, or a part of one, that podnet leaves out because it
// cannot use it. Each is left out alone: the rest of the cluster applies.
type Problem struct {
	Kind            string // KindService, KindEndpointSlice or KindNode
	Namespace, Name string // Namespace is empty for a Node
	// Field is the offending field, e.g. "spec.ports[1].protocol", or ""
	// when the object as a whole is left out for Reason.
	Field string
	// Value is the offending value as the message shows it (quoted), or "".
	Value  string
	Reason string
}

// Error reads like `Service default/web: spec.ports[1].protocol "FOO": want TCP, UDP or SCTP`.
func (p *Problem) Error() string {
	var b strings.Builder
	b.WriteString(p.Kind + " ")
	if p.Namespace != "" {
		b.WriteString(p.Namespace + "/")
	}
	b.WriteString(p.Name + ": ")
	if p.Field != "" {
		b.WriteString(p.Field)
		if p.Value != "" {
			b.WriteString(" " + p.Value)
		}
		b.WriteString(": ")
	}
	b.WriteString(p.Reason)
	return b.String()
}

// fieldError is a problem with one field, before it is tied to its object.
type fieldError struct{ field, value, reason string }

// bad returns a fieldError; value is a string (shown quoted), an int, or nil
// (not shown).
func bad(field string, value any, format string, args ...any) *fieldError {
	e := &fieldError{field: field, reason: fmt.Sprintf(format, args...)}
	switch v := value.(type) {
	case string:
		e.value = strconv.Quote(v)
	case int:
		e.value = strconv.Itoa(v)
	case int32:
		e.value = strconv.Itoa(int(v))
	}
	return e
}

func (e *fieldError) problem(kind, namespace, name string) *Problem {
	return &Problem{Kind: kind, Namespace: namespace, Name: name, Field: e.field, Value: e.value, Reason: e.reason}
}
