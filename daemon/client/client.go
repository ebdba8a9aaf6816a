// Package client is the full HTTP client of podnetd's socket API, for podnetctl
// and tests. The CNI plugin uses api.CallCNI instead, which avoids net/http to
// keep the plugin's start-up (paid on every CNI call) small.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"syscall"
	"time"

	"github.com/podnet/podnet/daemon/api"
)

// Client talks to podnetd over its unix socket. Every call is bounded by Timeout.
type Client struct {
	Socket  string
	Timeout time.Duration
	http    *http.Client
}

// New returns a client for the socket with the given total timeout per call.
func New(socket string, timeout time.Duration) *Client {
	c := &Client{Socket: socket, Timeout: timeout}
	c.http = &http.Client{
		Timeout: timeout,
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				d := net.Dialer{Timeout: 2 * time.Second}
				return d.DialContext(ctx, "unix", socket)
			},
			DisableKeepAlives: true,
		},
	}
	return c
}

// CNI sends one CNI call. A CNI error from the daemon comes back as *Error; a
// failure to reach it wraps ErrUnreachable.
func (c *Client) CNI(ctx context.Context, req api.CNIRequest) (*api.CNIResponse, error) {
	var resp api.CNIResponse
	if err := c.do(ctx, http.MethodPost, "/v1/cni", req, &resp); err != nil {
		return nil, err
	}
	return &resp, nil
}

// Status fetches the daemon's status.
func (c *Client) Status(ctx context.Context) (*api.Status, error) {
	var s api.Status
	if err := c.do(ctx, http.MethodGet, "/v1/status", nil, &s); err != nil {
		return nil, err
	}
	return &s, nil
}

// IPAM fetches the pod ranges with their occupancy and every allocation.
func (c *Client) IPAM(ctx context.Context) (*api.IPAM, error) {
	var out api.IPAM
	if err := c.do(ctx, http.MethodGet, "/v1/ipam", nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Pods lists the pod attachments of the node.
func (c *Client) Pods(ctx context.Context) ([]api.Pod, error) {
	var out []api.Pod
	if err := c.do(ctx, http.MethodGet, "/v1/pods", nil, &out); err != nil {
		return nil, err
	}
	return out, nil
}

// Routes fetches the peer routes, desired against the kernel's.
func (c *Client) Routes(ctx context.Context) (*api.Routes, error) {
	var out api.Routes
	if err := c.do(ctx, http.MethodGet, "/v1/routes", nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// NFT fetches podnet's nftables table as the kernel reports it.
func (c *Client) NFT(ctx context.Context) (*api.NFT, error) {
	var out api.NFT
	if err := c.do(ctx, http.MethodGet, "/v1/nft", nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Trace asks for the path of a new connection.
func (c *Client) Trace(ctx context.Context, q api.TraceQuery) (*api.Trace, error) {
	v := url.Values{"from": {q.From}, "to": {q.To}}
	if q.NoProbe {
		v.Set("probe", "false")
	}
	var out api.Trace
	if err := c.do(ctx, http.MethodGet, "/v1/trace?"+v.Encode(), nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Services lists the services the daemon programmed and those it left out.
func (c *Client) Services(ctx context.Context) (*api.Services, error) {
	var out api.Services
	if err := c.do(ctx, http.MethodGet, "/v1/services", nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("encode request: %w", err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://podnetd"+path, body)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.http.Do(req)
	if errors.Is(err, syscall.EACCES) {
		return fmt.Errorf("%w: cannot open %s (run as root, or as a member of the group podnetd's --socket-group names): %w", api.ErrAccessDenied, c.Socket, err)
	}
	if err != nil {
		return fmt.Errorf("%w at %s: %w", api.ErrUnreachable, c.Socket, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return fmt.Errorf("%w at %s: read response: %w", api.ErrUnreachable, c.Socket, err)
	}
	if resp.StatusCode/100 != 2 {
		e := &api.Error{}
		if json.Unmarshal(data, e) != nil || e.Msg == "" {
			return &api.Error{Code: 999, Msg: fmt.Sprintf("podnetd: HTTP %d", resp.StatusCode), Details: string(data)}
		}
		if resp.StatusCode == http.StatusForbidden {
			return fmt.Errorf("%w: %s", api.ErrAccessDenied, e.Details)
		}
		return e
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("decode response from podnetd: %w", err)
	}
	return nil
}
