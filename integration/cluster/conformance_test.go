package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestConformance runs Kubernetes' own sig-network conformance specs against
// the cluster: `make conformance` (docs/conformance.md). It needs
// PODNET_E2E_CONFORMANCE=1 and the paths of e2e.test, ginkgo and kubectl
// (hack/build-e2e.sh builds all three) in PODNET_E2E_TEST, PODNET_E2E_GINKGO
// and PODNET_E2E_KUBECTL; it is skipped without PODNET_E2E_CONFORMANCE, so
// that `make e2e` stays quick, and fails, never skips, once asked for. It brings a cluster up with every image and runs every
// `[sig-network] … [Conformance]` spec but the Serial, Disruptive and
// LoadBalancer ones (none in v1.37.2), PODNET_E2E_PROCS at a time (default 2);
// PODNET_E2E_SKIP_DNS=1 leaves out the DNS specs too. PODNET_E2E_NETWORK=
// reference runs them on the reference network instead of podnet (bridge +
// host-local + portmap and kube-proxy in nftables mode;
// docs/conformance-reference.md). The run passes only if
// ginkgo does and its JSON report has exactly the expected number of specs run,
// every one passed: a focus that matched nothing cannot pass. The report and
// the log go to PODNET_E2E_REPORT (default /tmp/podnet-conformance).
func TestConformance(t *testing.T) {
	if os.Getenv("PODNET_E2E_CONFORMANCE") != "1" {
		t.Skip("conformance: run by `make conformance` (PODNET_E2E_CONFORMANCE=1, see the test's comment)")
	}
	bins := map[string]string{}
	for _, env := range []string{"PODNET_E2E_TEST", "PODNET_E2E_KUBECTL", "PODNET_E2E_GINKGO"} {
		bins[env] = os.Getenv(env)
		if _, err := os.Stat(bins[env]); err != nil {
			t.Fatalf("conformance: %s: %v (hack/build-e2e.sh builds e2e.test, ginkgo and kubectl)", env, err)
		}
	}
	procs := os.Getenv("PODNET_E2E_PROCS")
	if procs == "" {
		procs = "2"
	}
	report := os.Getenv("PODNET_E2E_REPORT")
	if report == "" {
		report = "/tmp/podnet-conformance"
	}
	// A report of an earlier run must not stand in for this one's.
	for _, f := range []string{"report.json", "junit_01.xml", "e2e.log"} {
		if err := os.Remove(filepath.Join(report, f)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(report, 0o755); err != nil {
		t.Fatal(err)
	}
	// v1.37.2 has 47 such specs: 8 DNS, 39 others (e2e.test --list-tests).
	skip, want := `\[Serial\]|\[Disruptive\]|LoadBalancer`, 47
	if os.Getenv("PODNET_E2E_SKIP_DNS") == "1" {
		skip, want = skip+`|\[sig-network\] DNS`, 39
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Minute)
	defer cancel()
	c := ForTest(t, ctx, Options{Required: true, Network: os.Getenv(EnvNetwork)})
	// kubectl as e2e.test calls it: "kubectl" in PATH.
	binDir := t.TempDir()
	if err := os.Symlink(bins["PODNET_E2E_KUBECTL"], filepath.Join(binDir, "kubectl")); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	cmd := exec.CommandContext(ctx, bins["PODNET_E2E_GINKGO"],
		"--procs="+procs, "--no-color", "--timeout=55m", "--output-dir="+report, "--json-report=report.json",
		"--focus="+`\[sig-network\].*\[Conformance\]`,
		"--skip="+skip,
		bins["PODNET_E2E_TEST"], "--",
		"--kubeconfig="+c.CP.AdminKubeconfig,
		"--provider=skeleton",
		"--kubectl-path="+filepath.Join(binDir, "kubectl"),
		"--report-dir="+report,
	)
	log, err := os.Create(filepath.Join(report, "e2e.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	cmd.Stdout, cmd.Stderr = log, log
	cmd.Env = append(os.Environ(), "PATH="+binDir+":"+os.Getenv("PATH"))
	err = cmd.Run()
	t.Logf("e2e run took %s (%v); log %s", time.Since(start).Round(time.Second), err, log.Name())
	b, _ := os.ReadFile(log.Name())
	lines := strings.Split(string(b), "\n")
	if len(lines) > 60 {
		lines = lines[len(lines)-60:]
	}
	t.Log(strings.Join(lines, "\n"))
	if err != nil {
		t.Errorf("ginkgo: %v", err)
	}
	sum, err := readReport(filepath.Join(report, "report.json"))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("conformance: %d specs run, %d passed, %d failed, in %s (ginkgo --procs=%s, network %s)",
		sum.run, sum.passed, len(sum.failed), sum.runTime.Round(time.Second), procs, c.opts.Network)
	for _, f := range sum.failed {
		t.Errorf("failed: %s", f)
	}
	if sum.run != want || sum.passed != want {
		t.Errorf("%d specs run and %d passed, want %d of each", sum.run, sum.passed, want)
	}
}

// reportSummary is what TestConformance checks of ginkgo's JSON report.
type reportSummary struct {
	run, passed int
	failed      []string // "<text>: <state>" of each spec neither passed nor skipped
	runTime     time.Duration
}

// readReport sums up a ginkgo --json-report: its specs (It nodes) that were
// not skipped, and the suite's run time.
func readReport(path string) (reportSummary, error) {
	var suites []struct {
		RunTime     time.Duration
		SpecReports []struct {
			LeafNodeType            string
			LeafNodeText            string
			ContainerHierarchyTexts []string
			State                   string
		}
	}
	var sum reportSummary
	b, err := os.ReadFile(path)
	if err != nil {
		return sum, fmt.Errorf("conformance report: %w", err)
	}
	if err := json.Unmarshal(b, &suites); err != nil {
		return sum, fmt.Errorf("conformance report %s: %w", path, err)
	}
	for _, s := range suites {
		sum.runTime += s.RunTime
		for _, r := range s.SpecReports {
			if r.LeafNodeType != "It" || r.State == "skipped" || r.State == "pending" {
				continue
			}
			sum.run++
			if r.State == "passed" {
				sum.passed++
			} else {
				text := strings.Join(append(r.ContainerHierarchyTexts, r.LeafNodeText), " ")
				sum.failed = append(sum.failed, text+": "+r.State)
			}
		}
	}
	return sum, nil
}
