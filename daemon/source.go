package daemon

import (
	"context"
	"errors"
	"fmt"
	"os"

	"go.uber.org/zap"
)

// Source feeds the daemon the cluster state: the cluster file (standalone
// mode) or the Kubernetes API. Config selects it.
type Source interface {
	// Name says where the state comes from, as GET /v1/status shows it:
	// "file:/etc/podnet/cluster.yaml", "kube:https://10.0.0.1:6443".
	Name() string
	// Run calls update with the whole cluster state, first as soon as it
	// is known, then at each change, until ctx ends. A Cluster passed to
	// update is never changed afterwards. An error before the first
	// update (the state cannot be read at all) stops podnetd; later
	// problems are the source's to log and retry, the last state staying
	// in force. Run returns nil when ctx ends.
	Run(ctx context.Context, update func(*Cluster)) error
}

// The cluster-state sources (Config.Source).
const (
	SourceFile = "file"
	SourceKube = "kube"
)

// source is the source c selects.
func (c Config) source() string {
	switch {
	case c.Source != "":
		return c.Source
	case c.Kubeconfig != "":
		return SourceKube
	case c.ClusterFile == "" && os.Getenv("KUBERNETES_SERVICE_HOST") != "":
		return SourceKube // in a pod
	}
	return SourceFile
}

// validateSource checks the flags of the source c selects.
func (c Config) validateSource() error {
	var errs []error
	switch c.source() {
	case SourceFile:
		if c.ClusterFile == "" {
			errs = append(errs, errors.New("--cluster-file: required in standalone mode"))
		}
		if c.Kubeconfig != "" {
			errs = append(errs, errors.New("--kubeconfig: not used with --source file"))
		}
	case SourceKube:
		if c.ClusterFile != "" {
			errs = append(errs, errors.New("--cluster-file: not used in Kubernetes mode (--source kube or --kubeconfig)"))
		}
	default:
		errs = append(errs, fmt.Errorf("--source: must be file or kube, got %q", c.Source))
	}
	return errors.Join(errs...)
}

// errNoPodCIDR: this node has no podCIDR yet (Kubernetes assigns it after
// the Node registers).
var errNoPodCIDR = errors.New("no podCIDR")

// newSource returns the source cfg selects.
func newSource(cfg Config, d *Daemon) (Source, error) {
	if cfg.source() == SourceKube {
		return newKubeSource(cfg, d.log)
	}
	return fileSource{d}, nil
}

// setCluster makes c the cluster state and asks for a sync.
func (d *Daemon) setCluster(c *Cluster) {
	d.cluster.Store(c)
	select {
	case d.updated <- struct{}{}:
	default:
	}
	d.Trigger()
}

// startSource runs the source until stop is called, and returns its first
// state. Nothing is synced before it: in Kubernetes mode the API server may
// take a while, and meanwhile the kernel keeps what the last run programmed.
// An error of the source before its first state is returned; ctx ending
// first returns a nil Cluster.
func (d *Daemon) startSource(ctx context.Context) (c *Cluster, stop func(), err error) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- d.source.Run(ctx, d.setCluster) }()
	stop = func() {
		cancel()
		if err := <-done; err != nil {
			d.log.Error("cluster state source stopped", zap.String("source", d.source.Name()), zap.Error(err))
		}
	}
	select {
	case <-d.updated:
		return d.cluster.Load(), stop, nil
	case err := <-done:
		cancel()
		if err == nil {
			err = fmt.Errorf("source %s ended before the cluster state was known", d.source.Name())
		}
		return nil, nil, err
	case <-ctx.Done():
		stop()
		return nil, nil, nil
	}
}

// waiting reports whether a sync failed with err only because this node
// cannot be set up yet: it is not in the cluster state, or has no podCIDR.
// That is logged once, not retried: the source's next state triggers the
// next sync. It is called after each sync, from the sync loop only.
func (d *Daemon) waiting(err error) bool {
	if err == nil || !errors.Is(err, errNoNode) && !errors.Is(err, errNoPodCIDR) {
		d.waitLogged = ""
		return false
	}
	if msg := err.Error(); msg != d.waitLogged {
		d.waitLogged = msg
		d.log.Info("waiting for this node's podCIDR in the cluster state; nothing is programmed until then",
			zap.String("node", d.cfg.NodeName), zap.String("source", d.source.Name()), zap.String("reason", msg))
	}
	return true
}

// fileSource is the cluster file, watched for changes (watchFile).
type fileSource struct{ d *Daemon }

func (f fileSource) Name() string { return "file:" + f.d.cfg.ClusterFile }

// Run reads the file; an unreadable or invalid file, or one that does not
// list this node, is an error. Then it watches the file, keeping the last
// good state when the file becomes invalid.
func (f fileSource) Run(ctx context.Context, update func(*Cluster)) error {
	d := f.d
	raw, err := os.ReadFile(d.cfg.ClusterFile)
	if err != nil {
		return fmt.Errorf("cluster file: %w", err)
	}
	c, err := d.parser.parse(raw)
	if err != nil {
		return fmt.Errorf("cluster file %s: %w", d.cfg.ClusterFile, err)
	}
	if _, ok := c.Node(d.cfg.NodeName); !ok {
		return fmt.Errorf("cluster file %s: node %q is not listed", d.cfg.ClusterFile, d.cfg.NodeName)
	}
	d.logLoad("cluster file loaded", c)
	update(c)
	d.watchFile(ctx, raw) // stores each change with d.setCluster's effect
	return nil
}
