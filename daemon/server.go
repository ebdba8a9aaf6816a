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

// maxHeader bounds a request's header (431 above it): the API takes short
// query strings only.
const maxHeader = 16 << 10

// listen opens the unix socket with mode 0600, or 0660 owned by group gid
// when gid >= 0, creating its directory and replacing a stale socket file
// left by a previous run.
func listen(path string, gid int) (net.Listener, error) {
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
	mode := os.FileMode(0o600)
	if gid >= 0 {
		mode = 0o660
		if err := os.Chown(path, -1, gid); err != nil {
			ln.Close()
			return nil, fmt.Errorf("chown %s: %w", path, err)
		}
	}
	if err := os.Chmod(path, mode); err != nil {
		ln.Close()
		return nil, fmt.Errorf("chmod %s: %w", path, err)
	}
	return ln, nil
}

func (d *Daemon) routes() http.Handler {
	mux := http.NewServeMux()
	known := map[string]string{"/v1/cni": "POST"}
	mux.HandleFunc("POST /v1/cni", d.guard(accessRoot, d.serveCNI))
	get := func(path string, view func() (any, error)) {
		known[path] = "GET"
		mux.HandleFunc("GET "+path, d.guard(accessRead, func(w http.ResponseWriter, r *http.Request) {
			if len(r.URL.Query()) > 0 {
				writeJSON(w, http.StatusBadRequest, &api.Error{Msg: "malformed request", Details: path + " takes no query parameters"})
				return
			}
			v, err := view()
			if err != nil {
				writeJSON(w, http.StatusInternalServerError, &api.Error{Msg: "cannot read state", Details: err.Error()})
				return
			}
			writeJSON(w, http.StatusOK, v)
		}))
	}
	get("/v1/status", func() (any, error) { return d.Status(), nil })
	get("/v1/services", func() (any, error) { return d.services.Load().apiServices(), nil })
	get("/v1/ipam", func() (any, error) { return d.ipamView(), nil })
	get("/v1/pods", func() (any, error) { return d.podsView() })
	get("/v1/routes", func() (any, error) { return d.routesView() })
	get("/v1/nft", func() (any, error) { return d.nftView() })
	known["/v1/trace"] = "GET"
	mux.HandleFunc("GET /v1/trace", d.guard(accessRead, d.serveTrace))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if m, ok := known[r.URL.Path]; ok {
			w.Header().Set("Allow", m)
			writeJSON(w, http.StatusMethodNotAllowed, &api.Error{Msg: "method not allowed", Details: r.URL.Path + " takes " + m})
			return
		}
		writeJSON(w, http.StatusNotFound, &api.Error{Msg: "no such endpoint", Details: r.Method + " " + r.URL.Path +
			" (API v1: GET /v1/status, /v1/ipam, /v1/pods, /v1/routes, /v1/services, /v1/nft, /v1/trace; POST /v1/cni)"})
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

// httpServer is the socket's HTTP server: bounded header size and read times,
// each connection's peer credentials in its requests' context (access.go).
func (d *Daemon) httpServer() *http.Server {
	return &http.Server{Handler: d.routes(), ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 30 * time.Second,
		MaxHeaderBytes: maxHeader, ConnContext: peerContext,
		ErrorLog: zap.NewStdLog(d.log.Named("http"))}
}

// serve runs the HTTP server until ctx ends, then drains it for up to 5 s.
func (d *Daemon) serve(ctx context.Context, ln net.Listener) error {
	srv := d.httpServer()
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
