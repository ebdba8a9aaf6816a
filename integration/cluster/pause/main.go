// Command pause is the e2e cluster's pod sandbox process: it holds a pod's
// namespaces, reaps the zombies it inherits as PID 1, and exits 0 on SIGINT or
// SIGTERM, like registry.k8s.io/pause. It is built static and packed into an
// image by integration/cluster (see PauseImage), because no registry is reachable.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for s := range sigs {
		if s != syscall.SIGCHLD {
			os.Exit(0)
		}
		for {
			var ws syscall.WaitStatus
			pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
