package bench

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"
)

// daemonCallTimes reads podnetd's log from offset on and returns, by CNI
// command, the daemon-side duration of every successful call, sorted. It
// relies on the debug line `cni call {..., "took": "1.2ms"}` that podnetd
// writes after serving each call (daemon/server.go); a took field written as
// a number is taken as seconds, as zap's production encoder writes it.
func daemonCallTimes(path string, offset int64) (map[string][]time.Duration, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		return nil, err
	}
	out := map[string][]time.Duration{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		cmd, took, ok := parseCallLine(sc.Text())
		if ok {
			out[cmd] = append(out[cmd], took)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	for _, d := range out {
		slices.Sort(d)
	}
	return out, nil
}

// parseCallLine extracts command and took from a console- or JSON-encoded
// "cni call" line.
func parseCallLine(line string) (cmd string, took time.Duration, ok bool) {
	if !strings.Contains(line, "cni call") || strings.Contains(line, "cni call failed") {
		return "", 0, false
	}
	i := strings.IndexByte(line, '{')
	if i < 0 {
		return "", 0, false
	}
	var fields struct {
		Command string          `json:"command"`
		Took    json.RawMessage `json:"took"`
	}
	if json.Unmarshal([]byte(line[i:]), &fields) != nil || fields.Command == "" {
		return "", 0, false
	}
	var s string
	var secs float64
	switch {
	case json.Unmarshal(fields.Took, &s) == nil:
		d, err := time.ParseDuration(s)
		if err != nil {
			return "", 0, false
		}
		return fields.Command, d, true
	case json.Unmarshal(fields.Took, &secs) == nil:
		return fields.Command, time.Duration(secs * float64(time.Second)), true
	}
	return "", 0, false
}
