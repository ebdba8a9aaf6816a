package daemon

import (
	"testing"

	"github.com/podnet/podnet/integration/sandbox"
)

// TestMain runs the package's tests inside a sandbox when root, for the kernel
// tests (conntrack_kernel_test.go); the others run there unchanged.
func TestMain(m *testing.M) { sandbox.Main(m) }
