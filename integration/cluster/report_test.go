package cluster

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// readReport counts the specs ginkgo ran, not the skipped ones nor the suite
// nodes, and names every spec that did not pass.
func TestReadReport(t *testing.T) {
	const report = `[{"RunTime": 245000000000, "SpecReports": [
	  {"LeafNodeType": "SynchronizedBeforeSuite", "State": "passed"},
	  {"LeafNodeType": "It", "ContainerHierarchyTexts": ["[sig-network] Services"], "LeafNodeText": "should serve a basic endpoint from pods [Conformance]", "State": "passed"},
	  {"LeafNodeType": "It", "ContainerHierarchyTexts": ["[sig-network] Services"], "LeafNodeText": "should have session affinity work for NodePort service [Conformance]", "State": "failed"},
	  {"LeafNodeType": "It", "ContainerHierarchyTexts": ["[sig-storage] Volumes"], "LeafNodeText": "should store data", "State": "skipped"},
	  {"LeafNodeType": "It", "ContainerHierarchyTexts": ["[sig-network] DNS"], "LeafNodeText": "should provide DNS for services [Conformance]", "State": "timedout"},
	  {"LeafNodeType": "ReportAfterSuite", "State": "passed"}
	]}]`
	path := filepath.Join(t.TempDir(), "report.json")
	if err := os.WriteFile(path, []byte(report), 0o644); err != nil {
		t.Fatal(err)
	}
	sum, err := readReport(path)
	if err != nil {
		t.Fatal(err)
	}
	if sum.run != 3 || sum.passed != 1 || sum.runTime != 245*time.Second {
		t.Errorf("run %d passed %d in %s, want 3, 1 in 4m5s", sum.run, sum.passed, sum.runTime)
	}
	want := "[sig-network] Services should have session affinity work for NodePort service [Conformance]: failed\n" +
		"[sig-network] DNS should provide DNS for services [Conformance]: timedout"
	if got := strings.Join(sum.failed, "\n"); got != want {
		t.Errorf("failed:\n%s\nwant:\n%s", got, want)
	}
	if _, err := readReport(filepath.Join(t.TempDir(), "none.json")); err == nil {
		t.Error("a missing report read without an error")
	}
}
