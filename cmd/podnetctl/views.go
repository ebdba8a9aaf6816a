package main

import (
	"bytes"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/podnet/podnet/daemon/api"
)

// now is the clock ages are measured against (tests fix it).
var now = time.Now

// table writes rows as aligned columns, without padding after the last cell.
func table(out io.Writer, rows [][]string) error {
	var buf bytes.Buffer
	w := tabwriter.NewWriter(&buf, 0, 4, 2, ' ', 0)
	for _, r := range rows {
		fmt.Fprintln(w, strings.Join(r, "\t"))
	}
	if err := w.Flush(); err != nil {
		return err
	}
	for line := range strings.Lines(buf.String()) {
		if _, err := fmt.Fprintln(out, strings.TrimRight(line, " \n")); err != nil {
			return err
		}
	}
	return nil
}

// age is a duration rounded for humans: 42s, 5m, 3h, 2d.
func age(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	d := now().Sub(t)
	switch {
	case d < 0:
		return "0s"
	case d < 2*time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < 2*time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh", int(d.Hours()))
	}
	return fmt.Sprintf("%dd", int(d.Hours()/24))
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func printIPAM(out io.Writer, v *api.IPAM) error {
	rows := [][]string{{"RANGE", "GATEWAY", "SIZE", "USED", "FREE"}}
	for _, r := range v.Ranges {
		rows = append(rows, []string{r.Range, r.Gateway, fmt.Sprint(r.Size), fmt.Sprint(r.Used), fmt.Sprint(r.Free)})
	}
	if err := table(out, rows); err != nil {
		return err
	}
	fmt.Fprintln(out)
	rows = [][]string{{"ADDRESS", "CONTAINER", "IFNAME", "RANGE", "AGE"}}
	for _, a := range v.Allocations {
		rows = append(rows, []string{a.Address, shortID(a.ContainerID), a.IfName, a.Range, age(a.Created)})
	}
	return table(out, rows)
}

func shortID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

func printPods(out io.Writer, pods []api.Pod) error {
	rows := [][]string{{"POD", "CONTAINER", "IF", "ADDRESSES", "VETH", "HOSTPORTS", "AGE", "PROBLEMS"}}
	for _, p := range pods {
		name := "-"
		if p.Name != "" {
			name = p.Namespace + "/" + p.Name
		}
		rows = append(rows, []string{name, shortID(p.ContainerID), p.IfName, dash(strings.Join(p.Addresses, ",")),
			dash(p.HostVeth), dash(strings.Join(p.HostPorts, ",")), age(p.Created), dash(strings.Join(p.Problems, "; "))})
	}
	return table(out, rows)
}

func printRoutes(out io.Writer, v *api.Routes) error {
	rows := [][]string{{"NODE", "DESTINATION", "VIA", "KERNEL", "STATE"}}
	for _, r := range v.Routes {
		rows = append(rows, []string{dash(r.Node), r.Dst, dash(r.Via), dash(r.Kernel), r.State})
	}
	if err := table(out, rows); err != nil {
		return err
	}
	if v.Drift == 0 {
		fmt.Fprintln(out, "\nno drift: the kernel holds every route as desired")
	} else {
		fmt.Fprintf(out, "\nDRIFT: %d route(s) not as desired; podnetd repairs them at its next sync\n", v.Drift)
	}
	for _, s := range v.Skipped {
		fmt.Fprintln(out, "skipped: "+s)
	}
	return nil
}

// printTrace prints the path as numbered hops, then the outcome and what the
// probe confirmed.
func printTrace(out io.Writer, t *api.Trace) error {
	fmt.Fprintf(out, "trace %s → %s, %s port %d\n\n", t.From, t.To, t.Proto, t.Port)
	rows := [][]string{}
	for i, h := range t.Hops {
		rows = append(rows, []string{fmt.Sprintf("%2d", i+1), h.Where, h.What})
		if h.Rule != "" {
			rows = append(rows, []string{"", "", "  ↳ " + h.Rule})
		}
	}
	if err := table(out, rows); err != nil {
		return err
	}
	fmt.Fprintf(out, "\noutcome: %s", t.Outcome)
	if len(t.Endpoints) > 0 {
		fmt.Fprintf(out, " (endpoints: %s)", strings.Join(t.Endpoints, ", "))
	}
	fmt.Fprintln(out)
	p := t.Probe
	switch {
	case p == nil:
		fmt.Fprintln(out, "probe: not sent (--no-probe)")
	case !p.Sent:
		fmt.Fprintln(out, "probe: not sent: "+p.Skipped)
	default:
		fmt.Fprintf(out, "probe: %s; nftrace: %s", p.Result, dash(strings.Join(p.Chains, " → ")))
		if p.Verdict != "" {
			fmt.Fprintf(out, " (%s)", p.Verdict)
		}
		if p.DNAT != "" {
			fmt.Fprintf(out, "; DNAT to %s", p.DNAT)
		}
		if p.Agrees {
			fmt.Fprintln(out, "; agrees with the path above")
		} else {
			fmt.Fprintln(out, "; DOES NOT AGREE: "+strings.Join(p.Mismatches, "; "))
		}
	}
	return nil
}
