// Command podnetctl shows what a podnetd believes, over its unix socket.
package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
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
	help  string
	fetch func(context.Context, *client.Client, *opts) (any, error)
	table func(io.Writer, any) error
}

// options are the flags; every command accepts them before or after its name.
type opts struct {
	socket, output  string
	timeout         time.Duration
	from, to        string
	noProbe         bool
	completionShell string
}

var commands = map[string]command{
	"status": {
		help:  "the daemon: node, source, sync state, counts",
		fetch: func(ctx context.Context, c *client.Client, _ *opts) (any, error) { return c.Status(ctx) },
		table: func(w io.Writer, v any) error { return printStatus(w, v.(*api.Status)) },
	},
	"ipam": {
		help:  "pod ranges with used/free counts, and every allocation",
		fetch: func(ctx context.Context, c *client.Client, _ *opts) (any, error) { return c.IPAM(ctx) },
		table: func(w io.Writer, v any) error { return printIPAM(w, v.(*api.IPAM)) },
	},
	"pods": {
		help:  "pod attachments on this node, with what does not add up",
		fetch: func(ctx context.Context, c *client.Client, _ *opts) (any, error) { return c.Pods(ctx) },
		table: func(w io.Writer, v any) error { return printPods(w, v.([]api.Pod)) },
	},
	"routes": {
		help:  "routes to peer nodes' podCIDRs: desired against the kernel's",
		fetch: func(ctx context.Context, c *client.Client, _ *opts) (any, error) { return c.Routes(ctx) },
		table: func(w io.Writer, v any) error { return printRoutes(w, v.(*api.Routes)) },
	},
	"services": {
		help:  "services: each VIP and port with its endpoints; rejected and ignored ones",
		fetch: func(ctx context.Context, c *client.Client, _ *opts) (any, error) { return c.Services(ctx) },
		table: func(w io.Writer, v any) error { return printServices(w, v.(*api.Services)) },
	},
	"nft": {
		help:  "podnet's nftables table as the kernel reports it",
		fetch: func(ctx context.Context, c *client.Client, _ *opts) (any, error) { return c.NFT(ctx) },
		table: func(w io.Writer, v any) error { _, err := io.WriteString(w, v.(*api.NFT).Text); return err },
	},
	"trace": {
		help: "the path of a new connection: --from POD|IP --to IP|SERVICE[:PORT][/PROTO] [--no-probe]",
		fetch: func(ctx context.Context, c *client.Client, o *opts) (any, error) {
			if o.from == "" || o.to == "" {
				return nil, errors.New("trace needs --from and --to")
			}
			return c.Trace(ctx, api.TraceQuery{From: o.from, To: o.to, NoProbe: o.noProbe})
		},
		table: func(w io.Writer, v any) error { return printTrace(w, v.(*api.Trace)) },
	},
}

func run(args []string, out io.Writer) error {
	var o opts
	fs := flag.NewFlagSet("podnetctl", flag.ContinueOnError)
	fs.StringVar(&o.socket, "socket", api.DefaultSocket, "podnetd's unix socket")
	fs.StringVar(&o.output, "o", "table", "output: table or json")
	fs.DurationVar(&o.timeout, "timeout", 10*time.Second, "time limit for the call")
	fs.StringVar(&o.from, "from", "", "trace: the source pod (namespace/name, name, container ID) or address")
	fs.StringVar(&o.to, "to", "", "trace: the destination address or service, [:port][/tcp|udp|sctp]")
	fs.BoolVar(&o.noProbe, "no-probe", false, "trace: do not send a probe packet")
	fs.Usage = func() { usage(fs) }
	if err := fs.Parse(args); err != nil {
		return err
	}
	name := fs.Arg(0)
	if name == "completion" {
		if fs.NArg() != 2 {
			return errors.New("usage: podnetctl completion bash|zsh|fish")
		}
		return completion(out, fs.Arg(1), fs)
	}
	cmd, ok := commands[name]
	if ok { // flags may follow the command
		if err := fs.Parse(fs.Args()[1:]); err != nil {
			return err
		}
	}
	if !ok || fs.NArg() != 0 {
		fs.Usage()
		return errors.New("unknown or missing command")
	}
	if o.output != "table" && o.output != "json" {
		return fmt.Errorf("-o %q: want table or json", o.output)
	}
	ctx, cancel := context.WithTimeout(context.Background(), o.timeout)
	defer cancel()
	v, err := cmd.fetch(ctx, client.New(o.socket, o.timeout), &o)
	if err != nil {
		if errors.Is(err, api.ErrUnreachable) {
			return fmt.Errorf("podnetd is not running or not reachable at %s (%w)", o.socket, err)
		}
		return err
	}
	if o.output == "json" {
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	return cmd.table(out, v)
}

func usage(fs *flag.FlagSet) {
	w := fs.Output()
	fmt.Fprintln(w, "usage: podnetctl [flags] COMMAND [flags]")
	fmt.Fprintln(w, "\ncommands:")
	for _, name := range slices.Sorted(maps.Keys(commands)) {
		fmt.Fprintf(w, "  %-10s %s\n", name, commands[name].help)
	}
	fmt.Fprintf(w, "  %-10s %s\n", "completion", "print a shell completion script: bash, zsh or fish")
	fmt.Fprintln(w, "\nflags:")
	fs.PrintDefaults()
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
	rows := [][]string{{"SERVICE", "VIPS", "PORTS", "ENDPOINT", "NODE", "CONDITIONS", "OPTIONS"}}
	for _, svc := range s.Programmed {
		head := []string{svc.Namespace + "/" + svc.Name, vips(svc), ports(svc)}
		if len(svc.Endpoints) == 0 {
			rows = append(rows, append(head, "(none)", "", "", options(svc)))
		}
		for i, ep := range svc.Endpoints {
			opts := options(svc)
			if i > 0 {
				head, opts = []string{"", "", ""}, ""
			}
			rows = append(rows, append(slices.Clone(head), endpoint(svc, ep), cmp.Or(ep.Node, "-"), conditions(ep), opts))
		}
	}
	if err := table(out, rows); err != nil {
		return err
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
