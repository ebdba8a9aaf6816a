// Command podnetctl shows what a podnetd believes, over its unix socket.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
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

func run(args []string, out io.Writer) error {
	fs := flag.NewFlagSet("podnetctl", flag.ContinueOnError)
	socket := fs.String("socket", api.DefaultSocket, "podnetd's unix socket")
	output := fs.String("o", "table", "output: table or json")
	timeout := fs.Duration("timeout", 5*time.Second, "time limit for the call")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: podnetctl [--socket PATH] [-o table|json] status")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 || fs.Arg(0) != "status" {
		fs.Usage()
		return errors.New("unknown or missing command")
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	st, err := client.New(*socket, *timeout).Status(ctx)
	if err != nil {
		if errors.Is(err, api.ErrUnreachable) {
			return fmt.Errorf("podnetd is not running or not reachable at %s (%w)", *socket, err)
		}
		return err
	}
	if *output == "json" {
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		return enc.Encode(st)
	}
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	rows := [][2]string{
		{"node", st.Node}, {"version", st.Version}, {"source", st.Source},
		{"ready", fmt.Sprint(st.Ready)}, {"podCIDRs", strings.Join(st.PodCIDRs, ", ")},
		{"bridge", st.Bridge}, {"mtu", fmt.Sprint(st.MTU)}, {"peers", fmt.Sprint(st.Peers)},
		{"routes", fmt.Sprint(st.Routes)}, {"allocations", fmt.Sprint(st.Allocations)},
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
