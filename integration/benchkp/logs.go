package benchkp

import (
	"bytes"
	"encoding/json"
	"io"
	"math"
	"os"
	"regexp"
	"strings"
	"time"
)

// syncRecord is one sync a proxy ran: when it started and how long it took.
type syncRecord struct {
	Start time.Time
	Took  time.Duration
}

// lineTail returns the complete lines appended to a log since the last call.
type lineTail struct {
	f   *os.File
	buf []byte // a partial last line
}

func openTail(path string) (*lineTail, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	return &lineTail{f: f}, nil
}

func (t *lineTail) Close() error { return t.f.Close() }

func (t *lineTail) lines() ([]string, error) {
	b, err := io.ReadAll(t.f)
	if err != nil {
		return nil, err
	}
	t.buf = append(t.buf, b...)
	var out []string
	for {
		i := bytes.IndexByte(t.buf, '\n')
		if i < 0 {
			break
		}
		out = append(out, string(t.buf[:i]))
		t.buf = t.buf[i+1:]
	}
	return out, nil
}

// klogTime reads the time of a klog text line ("I1126 03:30:31.123456 …"),
// which has no year: it is taken from ref, the line assumed within half a
// year of it.
func klogTime(line string, ref time.Time) (time.Time, bool) {
	if len(line) < 21 || !strings.ContainsRune("IWEF", rune(line[0])) {
		return time.Time{}, false
	}
	t, err := time.ParseInLocation("0102 15:04:05.000000", line[1:21], ref.Location())
	if err != nil {
		return time.Time{}, false
	}
	t = t.AddDate(ref.Year(), 0, 0)
	switch {
	case t.Sub(ref) > 183*24*time.Hour:
		t = t.AddDate(-1, 0, 0)
	case ref.Sub(t) > 183*24*time.Hour:
		t = t.AddDate(1, 0, 0)
	}
	return t, true
}

var klogKV = regexp.MustCompile(`([A-Za-z]+)=("(?:[^"\\]|\\.)*"|\S+)`)

// klogValue returns the value of key in a structured klog line, unquoted;
// "" if absent.
func klogValue(line, key string) string {
	// Values come after the quoted message: skip it, so that a key=value
	// inside the message is not read.
	if _, rest, ok := strings.Cut(line, `] "`); ok {
		if i := strings.Index(rest, `" `); i >= 0 {
			line = rest[i+2:]
		} else {
			return ""
		}
	}
	for _, m := range klogKV.FindAllStringSubmatch(line, -1) {
		if m[1] == key {
			return strings.Trim(m[2], `"`)
		}
	}
	return ""
}

// kubeProxyLog follows kube-proxy's log at -v=2: when its informers'
// caches synced, and the IPv4 proxier's syncs ("Syncing nftables rules",
// then "SyncProxyRules complete" with elapsed).
type kubeProxyLog struct {
	tail    *lineTail
	ref     time.Time
	synced  time.Time // the last "Caches are synced" line
	syncs   []syncRecord
	started time.Time // of a sync not complete yet
}

func (l *kubeProxyLog) read() error {
	lines, err := l.tail.lines()
	if err != nil {
		return err
	}
	for _, line := range lines {
		l.line(line)
	}
	return nil
}

func (l *kubeProxyLog) line(line string) {
	at, ok := klogTime(line, l.ref)
	if !ok {
		return
	}
	switch {
	case strings.Contains(line, `"Caches are synced"`):
		l.synced = at
	case klogValue(line, "ipFamily") != "IPv4":
	case strings.Contains(line, `"Syncing nftables rules"`):
		l.started = at
	case strings.Contains(line, `"SyncProxyRules complete"`):
		took, err := time.ParseDuration(klogValue(line, "elapsed"))
		if err != nil {
			return
		}
		start := at.Add(-took)
		if !l.started.IsZero() {
			start = l.started
		}
		l.syncs = append(l.syncs, syncRecord{Start: start, Took: took})
		l.started = time.Time{}
	}
}

// firstSyncAfter returns the first sync that started at or after t.
func firstSyncAfter(syncs []syncRecord, t time.Time) (syncRecord, bool) {
	for _, s := range syncs {
		if !s.Start.Before(t) {
			return s, true
		}
	}
	return syncRecord{}, false
}

// zapTime returns the time of the first line of a zap JSON log with message
// msg; ok is false when there is none.
func zapTime(lines []string, msg string) (time.Time, bool) {
	for _, line := range lines {
		var l struct {
			TS  float64 `json:"ts"`
			Msg string  `json:"msg"`
		}
		if json.Unmarshal([]byte(line), &l) == nil && l.Msg == msg {
			sec, frac := math.Modf(l.TS)
			return time.Unix(int64(sec), int64(frac*1e9)), true
		}
	}
	return time.Time{}, false
}
