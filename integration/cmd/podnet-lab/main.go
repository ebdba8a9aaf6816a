// Command podnet-lab runs podnet on a multi-node cluster made of network
// namespaces inside its own `unshare --net --mount` sandbox; nothing outside
// the sandbox is touched.
//
//	podnet-lab run    build the lab, check the connectivity matrix and the web
//	                  service's ClusterIP, tear down
//	podnet-lab up     build the lab with the web service and keep it until
//	                  interrupted (or `down`)
//	podnet-lab down   stop a lab started with `up`
//
// --source kube runs a real etcd and kube-apiserver inside the sandbox and has
// the podnetds read Nodes, Services and EndpointSlices from it, instead of the
// cluster file (--source file, the default). kube-apiserver is built before
// entering the sandbox, once per machine (~5 minutes the first time; `make
// kube-tools` builds it ahead).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/podnet/podnet/integration/kube"
	"github.com/podnet/podnet/integration/lab"
	"github.com/podnet/podnet/integration/sandbox"
)

const pidFile = "/run/podnet-lab.pid"

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "podnet-lab:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	if len(args) == 0 {
		return errors.New("usage: podnet-lab run|up|down [--nodes N] [--pods N] [--bin DIR] [--source file|kube]")
	}
	cmd := args[0]
	fs := flag.NewFlagSet("podnet-lab "+cmd, flag.ContinueOnError)
	self, _ := os.Executable()
	o := lab.Options{Log: os.Stdout}
	fs.IntVar(&o.Nodes, "nodes", 3, "number of nodes")
	fs.IntVar(&o.PodsPerNode, "pods", 2, "pods per node")
	fs.StringVar(&o.BinDir, "bin", filepath.Dir(self), "directory holding podnetd and podnet")
	source := fs.String("source", string(lab.SourceFile), "source of cluster state: file (the cluster file) or kube (a real kube-apiserver in the sandbox)")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if cmd == "down" {
		return down()
	}
	if cmd != "run" && cmd != "up" {
		return fmt.Errorf("unknown command %q", cmd)
	}
	var err error
	if o.Source, err = lab.ParseSource(*source); err != nil {
		return err
	}
	if o.Source == lab.SourceKube && !sandbox.Inside() {
		if err := prepareKube(); err != nil {
			return err
		}
	}
	if !sandbox.Inside() && cmd == "up" {
		if err := os.WriteFile(pidFile, []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
			return err
		}
		defer os.Remove(pidFile)
	}
	reexeced, code, err := sandbox.Enter()
	if err != nil {
		return err
	}
	if reexeced {
		if code != 0 {
			os.Exit(code)
		}
		return nil
	}
	work, err := os.MkdirTemp("", "podnet-lab-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	o.WorkDir = work
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if cmd == "run" {
		_, err := lab.Run(ctx, o)
		if err != nil {
			printLogTails(work)
		}
		return err
	}
	return up(ctx, o)
}

// printLogTails shows the end of each daemon's log, and of the API server's,
// on stderr: the work dir holding them goes when podnet-lab exits.
func printLogTails(work string) {
	logs, _ := filepath.Glob(filepath.Join(work, "node*", "podnetd.log"))
	logs = append(logs, filepath.Join(work, "kube", "kube-apiserver.log"))
	for _, path := range logs {
		b, err := os.ReadFile(path)
		if err != nil {
			continue
		}
		lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
		fmt.Fprintf(os.Stderr, "--- %s (last lines)\n%s\n", strings.TrimPrefix(path, work+"/"), strings.Join(lines[max(0, len(lines)-15):], "\n"))
	}
}

func up(ctx context.Context, o lab.Options) error {
	l, err := lab.Up(ctx, o)
	if err != nil {
		if l != nil {
			l.Down(context.Background())
		}
		return err
	}
	for _, n := range l.Nodes {
		for i := 1; i <= o.PodsPerNode; i++ {
			p, err := l.AddPod(ctx, n, fmt.Sprintf("%s-pod%d", n.Name, i))
			if err != nil {
				l.Down(context.Background())
				return err
			}
			fmt.Printf("pod %s on %s: %s\n", p.Name, n.Name, p.IP)
		}
	}
	if svc, err := l.WebService(); err == nil {
		for _, p := range svc.Endpoints {
			if err := l.ServeService(p, svc.TargetPort); err != nil {
				l.Down(context.Background())
				return err
			}
		}
		if err := l.ApplyServices(ctx, svc); err != nil {
			l.Down(context.Background())
			return err
		}
		fmt.Printf("service %s: %s → %v port %d (each connection gets \"<pod> <client address>\", then an echo)\n",
			svc.Name, svc.Dst(), svc.EndpointNames(), svc.TargetPort)
	}
	if kc := l.AdminKubeconfig(); kc != "" {
		fmt.Printf("the podnetds are %s; admin kubeconfig (in the sandbox): %s\n", l.SourceDescription(), kc)
	}
	fmt.Printf("\nlab is up. Enter it with:\n  nsenter --net=/proc/%d/ns/net --mount=/proc/%d/ns/mnt bash\n", os.Getpid(), os.Getpid())
	fmt.Printf("then e.g. `ip netns exec node1 ip route`, `%s/podnetctl --socket %s status`\n", o.BinDir, l.Nodes[0].Socket())
	fmt.Println("stop with Ctrl-C or `podnet-lab down`")
	<-ctx.Done()
	return l.Down(context.Background())
}

// prepareKube builds kube-apiserver unless the cache holds it, before the
// sandbox, which has no network to fetch modules with.
func prepareKube() error {
	fmt.Printf("▸ source kube: etcd and kube-apiserver %s in the sandbox; kube-apiserver is built once per machine, ~5 minutes the first time (`make kube-tools` builds it ahead; cached in ~/.cache/podnet/kube)\n", kube.Version)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return kube.Prepare(ctx, os.Stderr)
}

// down signals the lab started by `up` (its PID is in the pid file).
func down() error {
	b, err := os.ReadFile(pidFile)
	if err != nil {
		return fmt.Errorf("no running lab (%w)", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return fmt.Errorf("bad pid file %s: %w", pidFile, err)
	}
	return syscall.Kill(pid, syscall.SIGTERM)
}
