// Command pause is the pod sandbox's process, as Kubernetes' build/pause/linux/pause.c:
// it sleeps until SIGINT or SIGTERM, on which it exits 0, and reaps the zombies of
// the pod's processes it inherits as PID 1 of a shared PID namespace. `-v` prints
// its version.
package main

import (
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

const version = "3.10.2"

func main() {
	for _, a := range os.Args[1:] {
		if strings.EqualFold(a, "-v") {
			fmt.Printf("pause.go %s\n", version)
			return
		}
	}
	if os.Getpid() != 1 {
		// Not an error because pause sees use outside of infra containers.
		fmt.Fprintln(os.Stderr, "Warning: pause should be the first process")
	}
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for sig := range sigs {
		if sig != syscall.SIGCHLD {
			fmt.Fprintf(os.Stderr, "Shutting down, got signal: %v\n", sig)
			os.Exit(0)
		}
		reap()
	}
}

// reap collects every child that has exited; signals coalesce, so one SIGCHLD may
// stand for several.
func reap() {
	for {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
		if pid <= 0 || err != nil {
			return
		}
	}
}
