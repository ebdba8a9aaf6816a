package cluster

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestConformance is a first, manual run of Kubernetes' sig-network
// conformance specs against the cluster (toward `make conformance`): with
// PODNET_E2E_CONFORMANCE=1 and the paths of e2e.test (hack/build-e2e.sh),
// kubectl and ginkgo in PODNET_E2E_TEST, PODNET_E2E_KUBECTL and
// PODNET_E2E_GINKGO, it brings a cluster up with every image and runs the
// non-DNS `[sig-network] … [Conformance]` specs, PODNET_E2E_PROCS at a time
// (default 2). The report goes to PODNET_E2E_REPORT (default
// /tmp/podnet-conformance). Skipped otherwise.
func TestConformance(t *testing.T) {
	if os.Getenv("PODNET_E2E_CONFORMANCE") != "1" {
		t.Skip("conformance: a manual run for now (PODNET_E2E_CONFORMANCE=1, see the test's comment)")
	}
	bins := map[string]string{}
	for _, env := range []string{"PODNET_E2E_TEST", "PODNET_E2E_KUBECTL", "PODNET_E2E_GINKGO"} {
		bins[env] = os.Getenv(env)
		if _, err := os.Stat(bins[env]); err != nil {
			t.Skipf("conformance: %s: %v", env, err)
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
	if err := os.MkdirAll(report, 0o755); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Minute)
	defer cancel()
	c := ForTest(t, ctx, Options{})
	// kubectl as e2e.test calls it: "kubectl" in PATH.
	binDir := t.TempDir()
	if err := os.Symlink(bins["PODNET_E2E_KUBECTL"], filepath.Join(binDir, "kubectl")); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	cmd := exec.CommandContext(ctx, bins["PODNET_E2E_GINKGO"],
		"--procs="+procs, "--no-color", "--timeout=55m", "--output-dir="+report, "--json-report=report.json",
		"--focus="+`\[sig-network\].*\[Conformance\]`,
		"--skip="+`Serial|Disruptive|LoadBalancer|DNS`,
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
		t.Fail()
	}
}
