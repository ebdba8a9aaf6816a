package bench

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Machine describes where the benchmark ran.
type Machine struct {
	CPUs   int    // CPUs this process may run on, as nproc counts them
	CPU    string // model name from /proc/cpuinfo
	Kernel string // uname -r
	Go     string
	Load   string // the load averages when the run started, from /proc/loadavg
}

// MachineInfo reads the machine description; unknown parts stay "unknown".
func MachineInfo() Machine {
	m := Machine{CPUs: runtime.NumCPU(), CPU: "unknown", Kernel: "unknown", Go: runtime.Version()}
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			k, v, ok := strings.Cut(sc.Text(), ":")
			if ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
		f.Close()
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		if f := strings.Fields(string(b)); len(f) >= 3 {
			m.Load = strings.Join(f[:3], " ")
		}
	}
	var u unix.Utsname
	if unix.Uname(&u) == nil {
		m.Kernel = unix.ByteSliceToString(u.Release[:])
	}
	return m
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond)) }

func modeName(workers int) string {
	if workers == 1 {
		return "1 at a time"
	}
	return fmt.Sprintf("%d at a time", workers)
}

// printReport writes the machine, the results table, the podnet/reference
// ratios and, for podnet, the daemon-side share of each call, as markdown.
func printReport(w io.Writer, cfg Config, m Machine, rounds []*Round) {
	fmt.Fprintf(w, "\n## CNI ADD/DEL benchmark: %d pods through libcni\n\n", cfg.Pods)
	fmt.Fprintf(w, "Machine: %d CPUs (nproc), %s, kernel %s, %s; load average at start %s\n\n", m.CPUs, m.CPU, m.Kernel, m.Go, m.Load)
	fmt.Fprintln(w, "| setup | mode | ADD pods/s | ADD p50 | ADD p90 | ADD p99 | DEL pods/s | DEL p50 | DEL p99 | ADD+DEL pods/s | checks |")
	fmt.Fprintln(w, "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|---|")
	for _, r := range rounds {
		checks := "ok"
		if len(r.Problems) > 0 {
			checks = fmt.Sprintf("**FAILED (%d)**", len(r.Problems))
		}
		fmt.Fprintf(w, "| %s | %s | %.1f | %s | %s | %s | %.1f | %s | %s | %.1f | %s |\n",
			r.Setup, modeName(r.Workers), r.Add.Rate(), ms(r.Add.Percentile(.5)), ms(r.Add.Percentile(.9)),
			ms(r.Add.Percentile(.99)), r.Del.Rate(), ms(r.Del.Percentile(.5)), ms(r.Del.Percentile(.99)),
			r.Rate(), checks)
	}
	fmt.Fprintln(w)
	for _, workers := range []int{1, cfg.Workers} {
		pn, ref := find(rounds, "podnet", workers), find(rounds, "reference", workers)
		if pn == nil || ref == nil || ref.Rate() == 0 || ref.Add.Rate() == 0 || ref.Del.Rate() == 0 {
			continue
		}
		ratio := pn.Rate() / ref.Rate()
		verdict := "met"
		if ratio < TargetRatio {
			verdict = "MISSED"
		}
		fmt.Fprintf(w, "- %s: podnet/reference ADD+DEL pods/s = **%.2f×** (ADD %.2f×, DEL %.2f×); target ≥ %.0f×: %s\n",
			modeName(workers), ratio, pn.Add.Rate()/ref.Add.Rate(), pn.Del.Rate()/ref.Del.Rate(), TargetRatio, verdict)
	}
	printCPU(w, rounds)
	printGrowth(w, rounds)
	printDaemonShare(w, rounds)
	for _, r := range rounds {
		for _, p := range r.Problems {
			fmt.Fprintf(w, "- FAILED %s, %s: %v\n", r.Setup, modeName(r.Workers), p)
		}
	}
}

// printDaemonShare compares podnetd's own time per call with what libcni saw:
// the difference is plugin exec, libcni and the socket round trip.
func printDaemonShare(w io.Writer, rounds []*Round) {
	header := false
	for _, r := range rounds {
		if len(r.DaemonAdd) == 0 {
			continue
		}
		if !header {
			fmt.Fprintln(w, "\npodnetd's own time per call (\"cni call\" took= in its debug log) against the time libcni saw:")
			fmt.Fprintln(w)
			fmt.Fprintln(w, "| mode | daemon ADD p50 / p90 / p99 | libcni ADD p50 | daemon DEL p50 / p99 | libcni DEL p50 | node syncs during ADD / DEL |")
			fmt.Fprintln(w, "|---|--:|--:|--:|--:|--:|")
			header = true
		}
		fmt.Fprintf(w, "| %s | %s / %s / %s | %s | %s / %s | %s | %d / %d |\n", modeName(r.Workers),
			ms(percentile(r.DaemonAdd, .5)), ms(percentile(r.DaemonAdd, .9)), ms(percentile(r.DaemonAdd, .99)),
			ms(r.Add.Percentile(.5)), ms(percentile(r.DaemonDel, .5)), ms(percentile(r.DaemonDel, .99)),
			ms(r.Del.Percentile(.5)), r.SyncsAdd, r.SyncsDel)
	}
}

// printCPU shows the CPU time each setup spends per pod: a cost that does not
// depend on how busy the rest of the machine is.
func printCPU(w io.Writer, rounds []*Round) {
	fmt.Fprintln(w, "\nCPU time per pod (user+system; runtime = this process, libcni included; plugins = every process libcni ran; daemon = podnetd):")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| setup | mode | ADD runtime | ADD plugins | ADD daemon | DEL runtime | DEL plugins | DEL daemon | ADD+DEL total |")
	fmt.Fprintln(w, "|---|---|--:|--:|--:|--:|--:|--:|--:|")
	for _, r := range rounds {
		per := func(d time.Duration) time.Duration { return d / time.Duration(max(1, r.Pods)) }
		a, d := r.AddCPU, r.DelCPU
		daemon := func(t time.Duration) string {
			if !r.HasDaemon {
				return "–"
			}
			return ms(per(t))
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", r.Setup, modeName(r.Workers),
			ms(per(a.runtime)), ms(per(a.plugins)), daemon(a.daemon),
			ms(per(d.runtime)), ms(per(d.plugins)), daemon(d.daemon), ms(per(a.total()+d.total())))
	}
}

// printGrowth shows, for the serial rounds, whether a call gets slower as the
// node fills up: the mean latency of the first and the last tenth of the pods.
func printGrowth(w io.Writer, rounds []*Round) {
	fmt.Fprintln(w, "\nLatency as the node fills up (1 at a time; mean of the first and last 10% of pods):")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| setup | ADD first | ADD last | DEL first | DEL last |")
	fmt.Fprintln(w, "|---|--:|--:|--:|--:|")
	for _, r := range rounds {
		if r.Workers != 1 {
			continue
		}
		n := max(1, r.Pods/10)
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s |\n", r.Setup,
			ms(meanOf(r.Add.ByPod, 0, n)), ms(meanOf(r.Add.ByPod, r.Pods-n, r.Pods)),
			ms(meanOf(r.Del.ByPod, 0, n)), ms(meanOf(r.Del.ByPod, r.Pods-n, r.Pods)))
	}
}

func find(rounds []*Round, setup string, workers int) *Round {
	for _, r := range rounds {
		if r.Setup == setup && r.Workers == workers {
			return r
		}
	}
	return nil
}
