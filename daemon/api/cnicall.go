package api

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"
)

// ErrUnreachable wraps every failure to reach the daemon at all (no socket,
// connection refused, timeout), as opposed to an error the daemon returned.
var ErrUnreachable = errors.New("podnetd unreachable")

// CallCNI sends one CNI call to podnetd at socket as a plain HTTP/1.1 request
// (Connection: close), without net/http: the plugin runs once per CNI call, and
// its start-up time is on every pod's critical path. The whole call is bounded
// by timeout. A CNI error from the daemon comes back as *Error; a failure to
// reach it wraps ErrUnreachable.
func CallCNI(ctx context.Context, socket string, timeout time.Duration, req CNIRequest) (*CNIResponse, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return nil, fmt.Errorf("encode request: %w", err)
	}
	d := net.Dialer{Timeout: min(2*time.Second, timeout)}
	conn, err := d.DialContext(ctx, "unix", socket)
	if err != nil {
		return nil, fmt.Errorf("%w at %s: %w", ErrUnreachable, socket, err)
	}
	defer conn.Close()
	deadline := time.Now().Add(timeout)
	if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
		deadline = dl
	}
	conn.SetDeadline(deadline)
	head := "POST /v1/cni HTTP/1.1\r\nHost: podnetd\r\nContent-Type: application/json\r\n" +
		"Connection: close\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n"
	if _, err := conn.Write(append([]byte(head), body...)); err != nil {
		return nil, fmt.Errorf("%w at %s: send: %w", ErrUnreachable, socket, err)
	}
	status, data, err := readResponse(bufio.NewReader(conn))
	if err != nil {
		return nil, fmt.Errorf("%w at %s: %w", ErrUnreachable, socket, err)
	}
	if status/100 != 2 {
		e := &Error{}
		if json.Unmarshal(data, e) != nil || e.Msg == "" {
			return nil, &Error{Code: 999, Msg: fmt.Sprintf("podnetd: HTTP %d", status), Details: string(data)}
		}
		return nil, e
	}
	var resp CNIResponse
	if err := json.Unmarshal(data, &resp); err != nil {
		return nil, fmt.Errorf("decode response from podnetd: %w", err)
	}
	return &resp, nil
}

// readResponse parses an HTTP/1.1 response with a Content-Length body (the
// daemon always sends one) or a body that ends when the connection closes.
func readResponse(r *bufio.Reader) (int, []byte, error) {
	line, err := r.ReadString('\n')
	if err != nil {
		return 0, nil, fmt.Errorf("read status: %w", err)
	}
	parts := strings.SplitN(strings.TrimSpace(line), " ", 3)
	if len(parts) < 2 || !strings.HasPrefix(parts[0], "HTTP/1.") {
		return 0, nil, fmt.Errorf("malformed status line %q", line)
	}
	status, err := strconv.Atoi(parts[1])
	if err != nil {
		return 0, nil, fmt.Errorf("malformed status line %q", line)
	}
	length := -1
	for {
		h, err := r.ReadString('\n')
		if err != nil {
			return 0, nil, fmt.Errorf("read headers: %w", err)
		}
		h = strings.TrimSpace(h)
		if h == "" {
			break
		}
		name, value, _ := strings.Cut(h, ":")
		switch strings.ToLower(strings.TrimSpace(name)) {
		case "content-length":
			if length, err = strconv.Atoi(strings.TrimSpace(value)); err != nil || length < 0 || length > 16<<20 {
				return 0, nil, fmt.Errorf("bad Content-Length %q", value)
			}
		case "transfer-encoding":
			return 0, nil, fmt.Errorf("unsupported Transfer-Encoding %q", value)
		}
	}
	if length < 0 {
		data, err := io.ReadAll(io.LimitReader(r, 16<<20))
		return status, data, err
	}
	data := make([]byte, length)
	if _, err := io.ReadFull(r, data); err != nil {
		return 0, nil, fmt.Errorf("read body: %w", err)
	}
	return status, data, nil
}
