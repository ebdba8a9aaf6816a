package benchsvc

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestLogTail(t *testing.T) {
	path := filepath.Join(t.TempDir(), "podnetd.log")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tail, err := openLogTail(path)
	if err != nil {
		t.Fatal(err)
	}
	defer tail.Close()
	write := func(s string) {
		t.Helper()
		if _, err := f.WriteString(s); err != nil {
			t.Fatal(err)
		}
	}
	find := func(msg string) (time.Time, bool) {
		t.Helper()
		at, ok, err := tail.find(msg)
		if err != nil {
			t.Fatal(err)
		}
		return at, ok
	}

	write(`{"level":"info","ts":1795658613.5,"msg":"cluster file loaded"}` + "\n" + "gc 1 @0.001s 2%: not json\n")
	if err := tail.skip(); err != nil {
		t.Fatal(err)
	}
	if _, ok := find("cluster file loaded"); ok {
		t.Error("found a line skip had consumed")
	}
	// A line is only read once its newline is there.
	write(`{"level":"info","ts":1795658614.25,"msg":"cluster file changed"`)
	if _, ok := find("cluster file changed"); ok {
		t.Error("found a line without its newline")
	}
	write("}\n" + `{"level":"info","ts":1795658615.75,"msg":"cluster file changed"}` + "\n")
	at, ok := find("cluster file changed")
	if want := time.Unix(1795658615, 750_000_000); !ok || !at.Equal(want) {
		t.Errorf("find = %v, %v; want the last match, %v", at, ok, want)
	}
	if _, ok := find("cluster file changed"); ok {
		t.Error("found the same line twice")
	}
}
