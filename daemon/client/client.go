// Package client is the full HTTP client of podnetd's socket API, for podnetctl
// and tests. The CNI plugin uses api.CallCNI instead, which avoids net/http to
// keep the plugin's start-up (paid on every CNI call) small.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
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

// IPAM lists the daemon's address allocations.
func (c *Client) IPAM(ctx context.Context) ([]api.Allocation, error) {
	var out []api.Allocation
	if err := c.do(ctx, http.MethodGet, "/v1/ipam", nil, &out); err != nil {
		return nil, err
	}
	return out, nil
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
