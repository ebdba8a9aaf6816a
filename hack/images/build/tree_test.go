package build

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// fakeLibs resolves every dynamic binary to the same libraries.
type fakeLibs struct{ libs []string }

var _ LibResolver = fakeLibs{}

func (f fakeLibs) Libs(string) ([]string, error) { return f.libs, nil }

// listing renders a tar stream as `tar tv` would, one entry a line:
// mode uid:gid name[ -> target][ size].
func listing(t *testing.T, tr *Tree) string {
	t.Helper()
	var buf bytes.Buffer
	if err := tr.WriteTar(&buf); err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	r := tar.NewReader(&buf)
	for {
		h, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if !h.ModTime.Equal(epoch) {
			t.Errorf("%s: mtime %v, want %v", h.Name, h.ModTime, epoch)
		}
		fmt.Fprintf(&b, "%s %d:%d %s", h.FileInfo().Mode(), h.Uid, h.Gid, h.Name)
		switch h.Typeflag {
		case tar.TypeSymlink:
			fmt.Fprintf(&b, " -> %s", h.Linkname)
		case tar.TypeReg:
			fmt.Fprintf(&b, " %d", h.Size)
		}
		b.WriteString("\n")
	}
	return b.String()
}

func TestTreeMergedUsr(t *testing.T) {
	dir := t.TempDir()
	lib := filepath.Join(dir, "libc.so.6")
	if err := os.WriteFile(lib, []byte("libc"), 0o755); err != nil {
		t.Fatal(err)
	}
	tr := NewMergedUsrTree(fakeLibs{})
	tr.AddFile("/lib/x86_64-linux-gnu/libc.so.6", lib) // as ldd names it
	tr.AddBytes("/etc/passwd", []byte("root:x:0:0::/root:/bin/sh\n"), 0o644)
	tr.AddSymlink("/bin/sh", "dash")
	tr.AddDir("/tmp", 0o777|os.ModeSticky)
	tr.AddDirOwned("/home/nonroot", 0o700, 65532, 65532)
	// The same file twice (two tools sharing a library) is one entry.
	tr.AddFile("/usr/lib/x86_64-linux-gnu/libc.so.6", lib)
	want := `Lrwxrwxrwx 0:0 bin -> usr/bin
drwxr-xr-x 0:0 etc/
-rw-r--r-- 0:0 etc/passwd 26
drwxr-xr-x 0:0 home/
drwx------ 65532:65532 home/nonroot/
Lrwxrwxrwx 0:0 lib -> usr/lib
Lrwxrwxrwx 0:0 lib64 -> usr/lib64
Lrwxrwxrwx 0:0 sbin -> usr/sbin
dtrwxrwxrwx 0:0 tmp/
drwxr-xr-x 0:0 usr/
drwxr-xr-x 0:0 usr/bin/
Lrwxrwxrwx 0:0 usr/bin/sh -> dash
drwxr-xr-x 0:0 usr/lib/
drwxr-xr-x 0:0 usr/lib/x86_64-linux-gnu/
-rwxr-xr-x 0:0 usr/lib/x86_64-linux-gnu/libc.so.6 4
drwxr-xr-x 0:0 usr/lib64/
drwxr-xr-x 0:0 usr/sbin/
`
	if diff := cmp.Diff(want, listing(t, tr)); diff != "" {
		t.Errorf("tar listing (-want +got):\n%s", diff)
	}
	if !tr.Has("/bin/sh") || !tr.Has("/usr/bin/sh") || tr.Has("/bin/bash") {
		t.Error("Has does not see /bin as /usr/bin")
	}
}

func TestTreeErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		fill func(*Tree)
		want string
	}{
		{"relative path", func(tr *Tree) { tr.AddDir("tmp", 0o755) }, "not an absolute path"},
		{"twice, differently", func(tr *Tree) {
			tr.AddSymlink("/bin/sh", "dash")
			tr.AddSymlink("/bin/sh", "bash")
		}, "added twice"},
		{"under a file", func(tr *Tree) {
			tr.AddBytes("/etc", nil, 0o644)
			tr.AddBytes("/etc/passwd", nil, 0o644)
		}, "not a directory"},
		{"replacing a merged directory", func(tr *Tree) { tr.AddDir("/bin", 0o755) }, "added twice"},
		{"a directory twice, differently", func(tr *Tree) {
			tr.AddDir("/tmp", 0o755)
			tr.AddDir("/tmp", 0o777|os.ModeSticky)
		}, "added twice"},
		{"missing source", func(tr *Tree) { tr.AddFile("/x", "/nonexistent/x") }, "no such file"},
		{"first error kept", func(tr *Tree) {
			tr.AddDir("rel", 0o755)
			tr.AddFile("/x", "/nonexistent/x")
		}, "not an absolute path"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tr := NewMergedUsrTree(nil)
			tc.fill(tr)
			err := tr.Err()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
			if werr := tr.WriteTar(io.Discard); !errors.Is(werr, err) {
				t.Errorf("WriteTar: %v, want the tree's error", werr)
			}
		})
	}
}

// A tree's layer depends on its content only: not on the order files were added,
// nor on the host files' times.
func TestTreeDeterministic(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	for _, p := range []string{a, b} {
		if err := os.WriteFile(p, []byte(p), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	one := NewTree()
	one.AddFile("/a", a)
	one.AddFile("/d/b", b)
	two := NewTree()
	two.AddFile("/d/b", b)
	two.AddFile("/a", a)
	d1, err := one.DiffID()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(a, epoch, epoch); err != nil {
		t.Fatal(err)
	}
	d2, err := two.DiffID()
	if err != nil {
		t.Fatal(err)
	}
	if d1 != d2 {
		t.Errorf("diffIDs differ: %v, %v", d1, d2)
	}
	if err := os.WriteFile(a, []byte("changed"), 0o644); err != nil {
		t.Fatal(err)
	}
	if d3, _ := two.DiffID(); d3 == d2 {
		t.Error("diffID unchanged after a source file changed")
	}
}

// AddTool copies a dynamic binary's libraries where the loader looks, and refuses
// one in a tree meant for static binaries.
func TestAddTool(t *testing.T) {
	const dash = "/bin/dash"
	if dyn, err := isDynamic(dash); err != nil || !dyn {
		t.Skipf("%s: no dynamically linked dash on this host (%v)", dash, err)
	}
	tr := NewMergedUsrTree(fakeLibs{libs: []string{"/lib64/ld-linux-x86-64.so.2", "/lib/x86_64-linux-gnu/libc.so.6"}})
	tr.AddTool("/bin/dash", dash)
	if err := tr.Err(); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, p := range tr.Paths() {
		if e := tr.entries[p[1:]]; e.mode.IsRegular() {
			got = append(got, p)
		}
	}
	want := []string{"/usr/bin/dash", "/usr/lib/x86_64-linux-gnu/libc.so.6", "/usr/lib64/ld-linux-x86-64.so.2"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("files (-want +got):\n%s", diff)
	}
	static := NewTree()
	static.AddTool("/dash", dash)
	if err := static.Err(); err == nil || !strings.Contains(err.Error(), "dynamically linked") {
		t.Errorf("static tree took a dynamic binary: %v", err)
	}
}

func TestParseLdd(t *testing.T) {
	out := `	linux-vdso.so.1 (0x00007ffd5c5f2000)
	libtinfo.so.6 => /lib/x86_64-linux-gnu/libtinfo.so.6 (0x00007f0f1a2b4000)
	libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f0f1a0d2000)
	/lib64/ld-linux-x86-64.so.2 (0x00007f0f1a43a000)
`
	got, err := parseLdd(out)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"/lib/x86_64-linux-gnu/libtinfo.so.6", "/lib/x86_64-linux-gnu/libc.so.6", "/lib64/ld-linux-x86-64.so.2"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("libs (-want +got):\n%s", diff)
	}
	if _, err := parseLdd("\tlibfoo.so.1 => not found\n"); err == nil {
		t.Error("a missing library is not an error")
	}
}

func TestAccounts(t *testing.T) {
	wantPasswd := `root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
user-defined-in-image:x:1000:1000:user-defined-in-image:/home/user-defined-in-image:/bin/sh
`
	wantGroup := `root:x:0:
user-defined-in-image:x:1000:
nogroup:x:65534:
group-defined-in-image:x:50000:user-defined-in-image
`
	if diff := cmp.Diff(wantPasswd, agnhostUsers.passwd()); diff != "" {
		t.Errorf("passwd (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(wantGroup, agnhostUsers.group()); diff != "" {
		t.Errorf("group (-want +got):\n%s", diff)
	}
}

func TestNames(t *testing.T) {
	for ref, want := range map[string]string{
		"registry.k8s.io/e2e-test-images/agnhost:2.66.1": "agnhost_2.66.1.tar",
		"registry.k8s.io/pause:3.10.2":                   "pause_3.10.2.tar",
		"ghcr.io/podnet/podnet:latest":                   "podnet_latest.tar",
	} {
		if got := FileName(ref); got != want {
			t.Errorf("FileName(%s) = %s, want %s", ref, got, want)
		}
	}
	if got := tagSafe("v1.2-3-gabc+dirty/x"); got != "v1.2-3-gabc_dirty_x" {
		t.Errorf("tagSafe: %s", got)
	}
}
