package benchsvc

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/podnet/podnet/integration/bench"
)

func ms(d time.Duration) string {
	switch {
	case d >= 10*time.Second:
		return fmt.Sprintf("%.1f s", d.Seconds())
	case d >= time.Second:
		return fmt.Sprintf("%.2f s", d.Seconds())
	case d >= 10*time.Millisecond:
		return fmt.Sprintf("%.0f ms", float64(d)/float64(time.Millisecond))
	}
	return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond))
}

func us(d time.Duration) string { return fmt.Sprintf("%.0f µs", float64(d)/float64(time.Microsecond)) }

func mib(kb int64) string { return fmt.Sprintf("%.0f MiB", float64(kb)/1024) }

func orDash(d time.Duration) string {
	if d == 0 {
		return "–"
	}
	return ms(d)
}

// printReport writes the machine, the settings, one table per measurement
// and the verdict on each target, as markdown.
func printReport(w io.Writer, cfg Config, m bench.Machine, rs []*Result) {
	counts := make([]string, len(rs))
	for i, r := range rs {
		counts[i] = fmt.Sprint(r.Services)
	}
	fmt.Fprintf(w, "\n## Services benchmark: podnetd with %s services\n\n", strings.Join(counts, ", "))
	fmt.Fprintf(w, "Machine: %d CPUs (nproc), %s, kernel %s, %s; load average at start %s\n\n", m.CPUs, m.CPU, m.Kernel, m.Go, m.Load)
	fmt.Fprintf(w, "podnetd on node1: `--poll-interval %s --resync-interval %s --log-format json --log-level info`. "+
		"Each service: one ClusterIP, TCP %d → %d, %d ready endpoints (2 pod addresses on node1, 2 on node2).\n\n",
		cfg.PollInterval, cfg.ResyncInterval, ServicePort, TargetPort, EndpointsPerService)

	fmt.Fprintln(w, "Cold start (empty table; podnetd exec → the last service's backends in the kernel) and memory:")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| services | cluster file | table elements | cold start | exec → file parsed | → sync start | first sync | peak RSS after cold | peak RSS at end | RSS at end | CPU when idle (file polling) |")
	fmt.Fprintln(w, "|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
	for _, r := range rs {
		total := 0
		for _, n := range r.Elements {
			total += n
		}
		fmt.Fprintf(w, "| %d | %.1f MB | %d | %s | %s | %s | %s | %s | %s | %s | %.0f %% |\n", r.Services,
			float64(r.FileBytes)/1e6, total, ms(r.Cold), ms(r.ColdParsed), orDash(r.ColdSyncStart), orDash(r.ColdSync),
			mib(r.HWMCold), mib(r.HWM), mib(r.RSS), 100*r.IdleCPU)
	}

	fmt.Fprintf(w, "\nOne endpoint address changed (file renamed into place → new backend in the kernel), %d changes; "+
		"detect = until podnetd logged \"cluster file changed\" (poll wait, read, parse); queue = until the node sync started; "+
		"sync = the node sync (status syncSeconds):\n\n", cfg.Changes)
	fmt.Fprintln(w, "| services | total p50 | total p99 | detect p50 / p99 | queue p50 | sync p50 / p99 | parse (bench process) | one poll, unchanged file | nft.Table.Sync (bench process) p50 / max |")
	fmt.Fprintln(w, "|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
	for _, r := range rs {
		var total, detect, queue, sync Sample
		for _, c := range r.Changes {
			total, detect, queue, sync = append(total, c.Total), append(detect, c.Detect), append(queue, c.Queue), append(sync, c.Sync)
		}
		fmt.Fprintf(w, "| %d | %s | %s | %s / %s | %s | %s / %s | %s | %s | %s / %s |\n", r.Services,
			ms(total.Percentile(.5)), ms(total.Percentile(.99)), ms(detect.Percentile(.5)), ms(detect.Percentile(.99)),
			ms(queue.Percentile(.5)), ms(sync.Percentile(.5)), ms(sync.Percentile(.99)), ms(r.Parse), ms(r.ReadCompare),
			ms(r.SyncInProc.Percentile(.5)), ms(r.SyncInProc.Max()))
	}

	fmt.Fprintf(w, "\nconnect() latency (SYN → SYN/ACK) from a pod on node1, %d per target, targets interleaved:\n\n", cfg.Connects)
	fmt.Fprintln(w, "| services | target | p50 | p90 | p99 | VIP / direct p50 | VIP / direct p99 |")
	fmt.Fprintln(w, "|--:|---|--:|--:|--:|--:|--:|")
	for _, r := range rs {
		for _, pair := range connectPairs {
			v, d := r.Connect[pair[0]], r.Connect[pair[1]]
			if len(v) == 0 || len(d) == 0 {
				continue
			}
			fmt.Fprintf(w, "| %d | %s | %s | %s | %s | %.2f | %.2f |\n", r.Services, pair[0],
				us(v.Percentile(.5)), us(v.Percentile(.9)), us(v.Percentile(.99)),
				ratio(v.Percentile(.5), d.Percentile(.5)), ratio(v.Percentile(.99), d.Percentile(.99)))
			fmt.Fprintf(w, "| %d | %s | %s | %s | %s | | |\n", r.Services, pair[1],
				us(d.Percentile(.5)), us(d.Percentile(.9)), us(d.Percentile(.99)))
		}
	}

	fmt.Fprintln(w, "\nThe table's creation on its own: nft.Table.Sync of every service into an empty table, in the benchmark process (user CPU: Go; system CPU: the kernel processing the batch):")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| services | wall | user CPU | system CPU |")
	fmt.Fprintln(w, "|--:|--:|--:|--:|")
	for _, r := range rs {
		fmt.Fprintf(w, "| %d | %s | %s | %s |\n", r.Services, ms(r.ColdSyncInProc), ms(r.ColdSyncUser), ms(r.ColdSyncSys))
	}

	fmt.Fprintln(w, "\nMemory, measured in the benchmark process with the same code: live heap of the parsed cluster and of an nft.Table that applied it, and what one parse allocates:")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| services | parsed cluster (live) | nft.Table (live) | allocated per parse |")
	fmt.Fprintln(w, "|--:|--:|--:|--:|")
	for _, r := range rs {
		fmt.Fprintf(w, "| %d | %s | %s | %s |\n", r.Services, mib(r.ClusterHeap>>10), mib(r.TableHeap>>10), mib(int64(r.ParseAlloc>>10)))
	}

	printElements(w, rs)
	printTargets(w, rs)
	for _, r := range rs {
		for _, p := range r.Problems {
			fmt.Fprintf(w, "- FAILED, %d services: %s\n", r.Services, p)
		}
	}
}

func ratio(a, b time.Duration) float64 {
	if b == 0 {
		return 0
	}
	return float64(a) / float64(b)
}

// printElements lists the table's element count per set for each count.
func printElements(w io.Writer, rs []*Result) {
	names := map[string]bool{}
	for _, r := range rs {
		for n, c := range r.Elements {
			if c > 0 {
				names[n] = true
			}
		}
	}
	sets := slices.Sorted(maps.Keys(names))
	fmt.Fprintf(w, "\nElements per set of table inet podnet (sets with none left out):\n\n| services | %s |\n|--:|%s\n",
		strings.Join(sets, " | "), strings.Repeat("--:|", len(sets)))
	for _, r := range rs {
		fmt.Fprintf(w, "| %d |", r.Services)
		for _, s := range sets {
			fmt.Fprintf(w, " %d |", r.Elements[s])
		}
		fmt.Fprintln(w)
	}
}

// printTargets judges the targets at 50000 services, or at the
// largest count measured when that is fewer.
func printTargets(w io.Writer, rs []*Result) {
	if len(rs) == 0 {
		return
	}
	r := slices.MaxFunc(rs, func(a, b *Result) int { return a.Services - b.Services })
	note := ""
	if r.Services != targetServices {
		note = fmt.Sprintf(" (the targets are set for %d services)", targetServices)
	}
	verdict := func(ok bool) string {
		if ok {
			return "met"
		}
		return "MISSED"
	}
	var total Sample
	for _, c := range r.Changes {
		total = append(total, c.Total)
	}
	fmt.Fprintf(w, "\nTargets at %d services%s:\n\n", r.Services, note)
	fmt.Fprintf(w, "- cold start %s, target < %s: %s\n", ms(r.Cold), ms(TargetCold), verdict(r.Cold < TargetCold))
	p99 := total.Percentile(.99)
	fmt.Fprintf(w, "- incremental p99 %s, target < %s: %s\n", ms(p99), ms(TargetIncremental), verdict(p99 < TargetIncremental))
	fmt.Fprintf(w, "- peak RSS %s, target < %s: %s\n", mib(r.HWM), mib(TargetRSS>>10), verdict(r.HWM<<10 < TargetRSS))
	v, d := r.Connect[tVIPAll], r.Connect[tDirectAll]
	if len(v) > 0 && len(d) > 0 {
		q := ratio(v.Percentile(.5), d.Percentile(.5))
		fmt.Fprintf(w, "- VIP connect p50 %s vs direct %s: %.2f×, target ≤ %.2f×: %s\n", us(v.Percentile(.5)), us(d.Percentile(.5)),
			q, TargetConnect, verdict(q <= TargetConnect))
	}
}
