// Command podnetctl shows what a podnetd believes, over its unix socket.
package main

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/podnet/podnet/daemon/api"
	"github.com/podnet/podnet/daemon/client"
)

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "podnetctl:", err)
		os.Exit(1)
	}
}

// command fetches one thing from podnetd and prints it as a table.
type command struct {
	fetch func(context.Context, *client.Client) (any, error)
	table func(io.Writer, any) error
}

var commands = map[string]command{
	"status": {
		fetch: func(ctx context.Context, c *client.Client) (any, error) { return c.Status(ctx) },
		table: func(w io.Writer, v any) error { return printStatus(w, v.(*api.Status)) },
	},
	"services": {
		fetch: func(ctx context.Context, c *client.Client) (any, error) { return c.Services(ctx) },
		table: func(w io.Writer, v any) error { return printServices(w, v.(*api.Services)) },
	},
}

func run(args []string, out io.Writer) error {
	fs := flag.NewFlagSet("podnetctl", flag.ContinueOnError)
	socket := fs.String("socket", api.DefaultSocket, "podnetd's unix socket")
	output := fs.String("o", "table", "output: table or json")
	timeout := fs.Duration("timeout", 5*time.Second, "time limit for the call")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: podnetctl [--socket PATH] [-o table|json] status|services")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	cmd, ok := commands[fs.Arg(0)]
	if fs.NArg() != 1 || !ok {
		fs.Usage()
		return errors.New("unknown or missing command")
	}
	if *output != "table" && *output != "json" {
		return fmt.Errorf("-o %q: want table or json", *output)
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	v, err := cmd.fetch(ctx, client.New(*socket, *timeout))
	if err != nil {
		if errors.Is(err, api.ErrUnreachable) {
			return fmt.Errorf("podnetd is not running or not reachable at %s (%w)", *socket, err)
		}
		return err
	}
	if *output == "json" {
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	return cmd.table(out, v)
}

func printStatus(out io.Writer, st *api.Status) error {
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	rows := [][2]string{
		{"node", st.Node}, {"version", st.Version}, {"source", st.Source},
		{"ready", fmt.Sprint(st.Ready)}, {"podCIDRs", strings.Join(st.PodCIDRs, ", ")},
		{"bridge", st.Bridge}, {"mtu", fmt.Sprint(st.MTU)}, {"peers", fmt.Sprint(st.Peers)},
		{"routes", fmt.Sprint(st.Routes)}, {"allocations", fmt.Sprint(st.Allocations)},
		{"services", fmt.Sprintf("%d programmed, %d rejected, %d ignored", st.ServicesProgrammed, st.ServicesRejected, st.ServicesIgnored)},
		{"conntrack", conntrackSummary(st)},
		{"last sync", fmt.Sprintf("%s (%.1f ms, %d syncs)", st.LastSync.Format(time.RFC3339), st.SyncSeconds*1000, st.Syncs)},
		{"started", st.StartedAt.Format(time.RFC3339)},
	}
	if st.LastError != "" {
		rows = append(rows, [2]string{"last error", st.LastError})
	}
	for _, r := range rows {
		fmt.Fprintf(w, "%s:\t%s\n", r[0], r[1])
	}
	return w.Flush()
}

// conntrackSummary says what became of stale UDP conntrack entries.
func conntrackSummary(st *api.Status) string {
	if !st.ConntrackCleanup {
		return "off: stale UDP entries are left to time out"
	}
	s := fmt.Sprintf("%d stale UDP entries deleted, %d failed deletes", st.ConntrackDeleted, st.ConntrackFailures)
	if st.ConntrackLastError != "" {
		s += " (last: " + st.ConntrackLastError + ")"
	}
	return s
}

// printServices prints one line per endpoint of each programmed service (the
// service's columns only on its first line), then the rejected and ignored ones.
func printServices(out io.Writer, s *api.Services) error {
	var table bytes.Buffer
	w := tabwriter.NewWriter(&table, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "SERVICE\tVIPS\tPORTS\tENDPOINT\tNODE\tCONDITIONS\tOPTIONS")
	for _, svc := range s.Programmed {
		head := []string{svc.Namespace + "/" + svc.Name, vips(svc), ports(svc)}
		if len(svc.Endpoints) == 0 {
			fmt.Fprintf(w, "%s\t(none)\t\t\t%s\n", strings.Join(head, "\t"), options(svc))
		}
		for i, ep := range svc.Endpoints {
			opts := options(svc)
			if i > 0 {
				head, opts = []string{"", "", ""}, ""
			}
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", strings.Join(head, "\t"), endpoint(svc, ep), cmp.Or(ep.Node, "-"), conditions(ep), opts)
		}
	}
	if err := w.Flush(); err != nil {
		return err
	}
	for line := range strings.Lines(table.String()) { // no padding after the last cell
		fmt.Fprintln(out, strings.TrimRight(line, " \n"))
	}
	if len(s.Rejected) > 0 {
		fmt.Fprintf(out, "\nREJECTED (%d)\n", len(s.Rejected))
		for _, r := range s.Rejected {
			fmt.Fprintln(out, r.Error)
		}
	}
	if len(s.Ignored) > 0 {
		fmt.Fprintf(out, "\nIGNORED (%d)\n", len(s.Ignored))
		for _, ig := range s.Ignored {
			where := fmt.Sprintf("services[%d]", ig.Index)
			if ig.Index < 0 { // Kubernetes mode: no file
				where = "Service"
			}
			fmt.Fprintf(out, "%s %s/%s: %s\n", where, ig.Namespace, ig.Name, ig.Reason)
		}
	}
	return nil
}

// vips lists the cluster IPs, then the external and load balancer IPs marked so.
func vips(svc api.Service) string {
	out := slices.Clone(svc.ClusterIPs)
	for _, a := range svc.ExternalIPs {
		out = append(out, "external "+a)
	}
	for _, a := range svc.LoadBalancerIPs {
		out = append(out, "lb "+a)
	}
	return strings.Join(out, ", ")
}

// ports reads like "http 80/TCP (nodePort 30080), 53/UDP".
func ports(svc api.Service) string {
	var out []string
	for _, p := range svc.Ports {
		s := fmt.Sprintf("%d/%s", p.Port, p.Protocol)
		if p.Name != "" {
			s = p.Name + " " + s
		}
		if p.NodePort != 0 {
			s += fmt.Sprintf(" (nodePort %d)", p.NodePort)
		}
		out = append(out, s)
	}
	return strings.Join(out, ", ")
}

// options lists the settings that differ from Kubernetes' defaults, or "-".
func options(svc api.Service) string {
	var out []string
	if svc.InternalTrafficPolicy == "Local" {
		out = append(out, "internal=Local")
	}
	if svc.ExternalTrafficPolicy == "Local" {
		out = append(out, "external=Local")
	}
	if svc.SessionAffinityTimeoutSeconds > 0 {
		out = append(out, fmt.Sprintf("affinity=%ds", svc.SessionAffinityTimeoutSeconds))
	}
	if len(svc.LoadBalancerSourceRanges) > 0 {
		out = append(out, "sourceRanges="+strings.Join(svc.LoadBalancerSourceRanges, ","))
	}
	if len(out) == 0 {
		return "-"
	}
	return strings.Join(out, " ")
}

// endpoint is "10.244.1.5:8080" for a one-port service, else the address and
// "name:port" for each service port, in the service's order.
func endpoint(svc api.Service, ep api.Endpoint) string {
	host := ep.Address
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	if len(svc.Ports) == 1 {
		if port, ok := ep.Ports[svc.Ports[0].Name]; ok {
			return fmt.Sprintf("%s:%d", host, port)
		}
	}
	out := []string{ep.Address}
	for _, p := range svc.Ports {
		if port, ok := ep.Ports[p.Name]; ok {
			out = append(out, fmt.Sprintf("%s:%d", p.Name, port))
		}
	}
	return strings.Join(out, " ")
}

func conditions(ep api.Endpoint) string {
	var out []string
	for _, c := range []struct {
		on   bool
		name string
	}{{ep.Ready, "ready"}, {ep.Serving, "serving"}, {ep.Terminating, "terminating"}} {
		if c.on {
			out = append(out, c.name)
		}
	}
	if len(out) == 0 {
		return "-"
	}
	return strings.Join(out, ",")
}
