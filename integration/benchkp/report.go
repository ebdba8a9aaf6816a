package benchkp

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/podnet/podnet/integration/bench"
	"github.com/podnet/podnet/integration/benchsvc"
)

func ms(d time.Duration) string {
	switch {
	case d == 0:
		return "–"
	case d >= 10*time.Second:
		return fmt.Sprintf("%.1f s", d.Seconds())
	case d >= time.Second:
		return fmt.Sprintf("%.2f s", d.Seconds())
	case d >= 10*time.Millisecond:
		return fmt.Sprintf("%.0f ms", float64(d)/float64(time.Millisecond))
	}
	return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond))
}

func mib(kb int64) string { return fmt.Sprintf("%.0f MiB", float64(kb)/1024) }

// childPeak is the peak RSS of the proxy's largest child when ru_maxrss
// shows one above the proxy's own peak and above what every child starts
// from (BenchHWM), "–" otherwise.
func childPeak(run *ProxyRun) string {
	if run.MaxRSS > max(run.HWM, run.BenchHWM) {
		return mib(run.MaxRSS)
	}
	return "–"
}

func ratio(a, b float64) string {
	if b == 0 {
		return "–"
	}
	return fmt.Sprintf("%.1f×", a/b)
}

// samples returns the Total of each change, the API round trips, the time
// until the sync started and the syncs.
func samples(cs []Change) (total, api, syncStart, sync benchsvc.Sample) {
	for _, c := range cs {
		total = append(total, c.Total)
		api = append(api, c.API)
		if c.Sync > 0 {
			syncStart, sync = append(syncStart, c.SyncStart), append(sync, c.Sync)
		}
	}
	return
}

// byProxy returns r's run of the named proxy, nil if none.
func (r *Result) byProxy(name string) *ProxyRun {
	for _, run := range r.Runs {
		if run.Proxy == name {
			return run
		}
	}
	return nil
}

// printReport writes the settings, one table per measurement, the ratios
// and the verdict on each target, as markdown.
func printReport(w io.Writer, cfg Config, m bench.Machine, podnetdVersion string, rs []*Result) {
	counts := make([]string, len(rs))
	for i, r := range rs {
		counts[i] = fmt.Sprint(r.Services)
	}
	fmt.Fprintf(w, "\n## podnetd against kube-proxy: %s services\n\n", strings.Join(counts, ", "))
	fmt.Fprintf(w, "Machine: %d CPUs (nproc), %s, kernel %s, %s; load average at start %s\n\n", m.CPUs, m.CPU, m.Kernel, m.Go, m.Load)
	fmt.Fprintf(w, "Each service: ClusterIP, TCP %d (port %q) → %d, one EndpointSlice with %d ready endpoints on two other Nodes. "+
		"kube-proxy %s: `%s`. podnetd %s: `%s`. Each proxy alone, in its own network namespace; %d changes each, one endpoint address of one "+
		"EndpointSlice each, %s + 0–300 ms apart.\n\n",
		benchsvc.ServicePort, portName, benchsvc.TargetPort, benchsvc.EndpointsPerService, "v1.37.2",
		strings.Join(kubeProxyArgs(), " "), podnetdVersion, strings.Join(podnetdArgs(), " "), cfg.Changes, cfg.Pause)

	fmt.Fprintln(w, "The API server (etcd and kube-apiserver in the same sandbox):")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| services | Services + EndpointSlices created for this count | until the API server held them | objects/s | LIST of all Services + all EndpointSlices (watch cache) |")
	fmt.Fprintln(w, "|--:|--:|--:|--:|--:|")
	for _, r := range rs {
		fmt.Fprintf(w, "| %d | %d + %d | %s | %.0f | %s |\n", r.Services, r.Created, r.Created, ms(r.Create),
			float64(2*r.Created)/r.Create.Seconds(), ms(r.List))
	}

	fmt.Fprintln(w, "\nCold start (proxy exec → the last service's endpoints in its kernel table, polled every 2 ms through netlink) and memory:")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| services | proxy | cold start | exec → caches synced | exec → first sync start | first sync | CPU to the first sync's end: own user / sys | children (nft) user / sys | VmHWM after cold | VmHWM at end | child peak RSS (nft) | service ports in table |")
	fmt.Fprintln(w, "|--:|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
	for _, r := range rs {
		for _, run := range r.Runs {
			c := run.ColdCPU
			fmt.Fprintf(w, "| %d | %s | %s | %s | %s | %s | %s / %s | %s / %s | %s | %s | %s | %d |\n", r.Services, run.Proxy,
				ms(run.Cold), ms(run.CachesSynced), ms(run.SyncStart), ms(run.FirstSync), ms(c.User), ms(c.Sys),
				ms(c.ChildUser), ms(c.ChildSys), mib(run.HWMCold), mib(run.HWM), childPeak(run), run.Programmed)
		}
	}
	fmt.Fprintln(w, "\nchild peak RSS: ru_maxrss of wait4 on the proxy is the largest of its own peak and its reaped children's; "+
		"each of those starts from the peak of the spawning process (at exec the kernel records the shared memory's), so a value above "+
		"the proxy's VmHWM and the benchmark's own VmHWM at the proxy's start is a child's own peak (kube-proxy runs `nft -f -` "+
		"for each transaction, beside itself); \"–\": none seen.")

	fmt.Fprintln(w, "\nOne EndpointSlice changed (update request sent → new endpoints in the kernel table, polled every 1 ms); "+
		"API = the update's round trip; → sync = until the proxy's sync started (watch delivery, queueing); sync = the sync that applied it:")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| services | proxy | p50 | p99 | max | API p50 | → sync p50 | sync p50 / p99 |")
	fmt.Fprintln(w, "|--:|---|--:|--:|--:|--:|--:|--:|")
	for _, r := range rs {
		for _, run := range r.Runs {
			total, api, start, sync := samples(run.Changes)
			fmt.Fprintf(w, "| %d | %s | %s | %s | %s | %s | %s | %s / %s |\n", r.Services, run.Proxy,
				ms(total.Percentile(.5)), ms(total.Percentile(.99)), ms(total.Max()), ms(api.Percentile(.5)),
				ms(start.Percentile(.5)), ms(sync.Percentile(.5)), ms(sync.Percentile(.99)))
		}
	}
	printRatios(w, rs)
	for _, r := range rs {
		for _, run := range r.Runs {
			for _, p := range run.Problems {
				fmt.Fprintf(w, "- FAILED, %s at %d services: %s\n", run.Proxy, r.Services, p)
			}
		}
	}
}

// printRatios writes kube-proxy's figures over podnetd's and judges the
// targets at targetServices and above.
func printRatios(w io.Writer, rs []*Result) {
	fmt.Fprintln(w, "\nkube-proxy / podnetd (higher: podnetd better):")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| services | cold start | change p50 | change p99 | VmHWM at end |")
	fmt.Fprintln(w, "|--:|--:|--:|--:|--:|")
	var verdicts []string
	verdict := func(ok bool) string {
		if ok {
			return "met"
		}
		return "MISSED"
	}
	for _, r := range rs {
		kp, pn := r.byProxy("kube-proxy"), r.byProxy("podnetd")
		if kp == nil || pn == nil {
			continue
		}
		kt, _, _, _ := samples(kp.Changes)
		pt, _, _, _ := samples(pn.Changes)
		fmt.Fprintf(w, "| %d | %s | %s | %s | %s |\n", r.Services, ratio(kp.Cold.Seconds(), pn.Cold.Seconds()),
			ratio(kt.Percentile(.5).Seconds(), pt.Percentile(.5).Seconds()),
			ratio(kt.Percentile(.99).Seconds(), pt.Percentile(.99).Seconds()), ratio(float64(kp.HWM), float64(pn.HWM)))
		if r.Services < targetServices {
			continue
		}
		cold := kp.Cold.Seconds() / pn.Cold.Seconds()
		p99 := kt.Percentile(.99).Seconds() / pt.Percentile(.99).Seconds()
		verdicts = append(verdicts,
			fmt.Sprintf("- %d services: cold start %s vs %s = %.1f×, target ≥ %.0f×: %s", r.Services, ms(kp.Cold), ms(pn.Cold), cold, TargetRatio, verdict(cold >= TargetRatio)),
			fmt.Sprintf("- %d services: change p99 %s vs %s = %.1f×, target ≥ %.0f×: %s", r.Services, ms(kt.Percentile(.99)), ms(pt.Percentile(.99)), p99, TargetRatio, verdict(p99 >= TargetRatio)),
			fmt.Sprintf("- %d services: peak RSS (VmHWM) %s vs %s, target less: %s", r.Services, mib(kp.HWM), mib(pn.HWM), verdict(pn.HWM < kp.HWM)))
	}
	if len(verdicts) > 0 {
		fmt.Fprintf(w, "\nTargets (issue 4, at %d services and more):\n\n%s\n", targetServices, strings.Join(verdicts, "\n"))
	}
}
