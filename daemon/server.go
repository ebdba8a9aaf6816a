package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"go.uber.org/zap"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/podnet/podnet/daemon/api"
)

// maxRequest bounds a request body; CNI configurations are a few KiB.
const maxRequest = 1 << 20

// listen opens the unix socket with mode 0600, creating its directory and
// replacing a stale socket file left by a previous run.
func listen(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("socket dir: %w", err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("remove stale socket: %w", err)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("chmod %s: %w", path, err)
	}
	return ln, nil
}

func (d *Daemon) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/cni", d.serveCNI)
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, d.Status())
	})
	mux.HandleFunc("GET /v1/services", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, d.services.Load().apiServices())
	})
	mux.HandleFunc("GET /v1/ipam", func(w http.ResponseWriter, _ *http.Request) {
		out := []api.Allocation{}
		if d.ipam != nil {
			for _, a := range d.ipam.List() {
				out = append(out, api.Allocation{ContainerID: a.ContainerID, IfName: a.IfName,
					Address: a.Addr.String(), Range: a.Range.String(), Created: a.Created})
			}
		}
		writeJSON(w, http.StatusOK, out)
	})
	return mux
}

func (d *Daemon) serveCNI(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	var req api.CNIRequest
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxRequest))
	if err == nil {
		err = json.Unmarshal(body, &req)
	}
	if err != nil {
		cerr := cniErr(types.ErrDecodingFailure, "malformed request", err)
		d.cniServed(req.Command, start, cerr) // metrics.go
		writeJSON(w, http.StatusBadRequest, cerr)
		return
	}
	resp, cerr := d.cni.Serve(req)
	d.cniServed(req.Command, start, cerr) // metrics.go
	log := d.log.With(zap.String("command", req.Command), zap.String("container", req.ContainerID),
		zap.String("ifName", req.IfName), zap.Duration("took", time.Since(start)))
	if cerr != nil {
		log.Warn("cni call failed", zap.Uint("code", cerr.Code), zap.String("msg", cerr.Msg), zap.String("details", cerr.Details))
		status := http.StatusInternalServerError
		switch cerr.Code {
		case types.ErrDecodingFailure, types.ErrInvalidEnvironmentVariables, types.ErrInvalidNetworkConfig:
			status = http.StatusBadRequest
		case types.ErrTryAgainLater, types.ErrPluginNotAvailable:
			status = http.StatusServiceUnavailable
		}
		writeJSON(w, status, cerr)
		return
	}
	log.Debug("cni call")
	if resp == nil {
		resp = &api.CNIResponse{}
	}
	writeJSON(w, http.StatusOK, resp)
}

// writeJSON always sends a Content-Length body (never chunked): the CNI
// plugin's minimal client relies on it.
func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"code":999,"msg":"encode response"}`)
	}
	b = append(b, '\n')
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// serve runs the HTTP server until ctx ends, then drains it for up to 5 s.
func (d *Daemon) serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{Handler: d.routes(), ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 30 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return srv.Shutdown(sctx)
	}
}
