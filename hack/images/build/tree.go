package build

import (
	"archive/tar"
	"crypto/sha256"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"slices"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// epoch is the time stamped on every file and on the image: the same inputs give the
// same layer and image digests, as ko and rules_oci do.
var epoch = time.Unix(0, 0).UTC()

// LibResolver names the shared libraries, the dynamic loader included, that a
// dynamically linked host binary needs at run time, as absolute host paths.
type LibResolver interface {
	Libs(binary string) ([]string, error)
}

// entry is one file system object of a Tree.
type entry struct {
	mode     fs.FileMode // type bits and permissions
	src      string      // regular file: host file to copy (symlinks followed)
	data     []byte      // regular file: content, when src is empty
	link     string      // symlink target
	uid, gid int
	implicit bool // a directory made for what is under it, not added itself
}

// Tree is the root file system of a single-layer image, built in memory from host
// files and literal content, and written as a tar stream whose bytes depend only on
// its content: entries in path order, owned by root unless set, stamped with epoch.
//
// With merged /usr (NewMergedUsrTree) the tree is laid out as Debian 12 is: /bin,
// /sbin, /lib and /lib64 are symlinks into /usr, and a path given under one of
// them (as ldd reports libraries, or as a package installs a tool) lands under /usr.
//
// A Tree records the first error of any Add call and ignores later calls; Err
// returns it, and WriteTar fails with it.
type Tree struct {
	entries   map[string]*entry
	mergedUsr bool
	libs      LibResolver
	err       error
}

// NewTree returns an empty tree for static binaries only: AddTool fails on a
// dynamically linked binary.
func NewTree() *Tree {
	return &Tree{entries: map[string]*entry{}}
}

// NewMergedUsrTree returns a tree laid out with merged /usr, whose AddTool copies a
// dynamically linked binary's shared libraries as libs resolves them.
func NewMergedUsrTree(libs LibResolver) *Tree {
	t := &Tree{entries: map[string]*entry{}, mergedUsr: true, libs: libs}
	for _, d := range []string{"bin", "sbin", "lib", "lib64"} {
		t.entries[d] = &entry{mode: fs.ModeSymlink | 0o777, link: "usr/" + d}
		t.AddDir("/usr/"+d, 0o755)
	}
	return t
}

// Err returns the first error of an Add call, if any.
func (t *Tree) Err() error { return t.err }

// canonical turns an absolute image path into the tree's key: clean, relative, and
// under usr/ for the merged directories.
func (t *Tree) canonical(p string) (string, error) {
	if !path.IsAbs(p) {
		return "", fmt.Errorf("%s: not an absolute path", p)
	}
	c := strings.TrimPrefix(path.Clean(p), "/")
	if c == "" {
		return "", fmt.Errorf("%s: the root itself", p)
	}
	if t.mergedUsr {
		first, _, _ := strings.Cut(c, "/")
		switch first {
		case "bin", "sbin", "lib", "lib64":
			if c != first {
				c = "usr/" + c
			}
		}
	}
	return c, nil
}

func (t *Tree) fail(err error) {
	if t.err == nil {
		t.err = err
	}
}

// put adds e at p and the directories above it, failing when p already holds
// something different.
func (t *Tree) put(p string, e *entry) {
	if t.err != nil {
		return
	}
	c, err := t.canonical(p)
	if err != nil {
		t.fail(err)
		return
	}
	for dir := path.Dir(c); dir != "."; dir = path.Dir(dir) {
		if d, ok := t.entries[dir]; ok {
			if !d.mode.IsDir() {
				t.fail(fmt.Errorf("%s: /%s is not a directory", p, dir))
				return
			}
			continue
		}
		t.entries[dir] = &entry{mode: fs.ModeDir | 0o755, implicit: true}
	}
	if old, ok := t.entries[c]; ok {
		if old.mode == e.mode && old.src == e.src && old.link == e.link && string(old.data) == string(e.data) &&
			old.uid == e.uid && old.gid == e.gid {
			old.implicit = false
			return
		}
		if old.implicit && e.mode.IsDir() {
			t.entries[c] = e // a parent directory, now added with its own mode or owner
			return
		}
		t.fail(fmt.Errorf("/%s added twice, differently", c))
		return
	}
	t.entries[c] = e
}

// Has reports whether p (canonicalised) is in the tree.
func (t *Tree) Has(p string) bool {
	c, err := t.canonical(p)
	if err != nil {
		return false
	}
	_, ok := t.entries[c]
	return ok
}

// AddDir adds a directory with the given permissions (and sticky bit) owned by root.
func (t *Tree) AddDir(p string, perm fs.FileMode) {
	t.AddDirOwned(p, perm, 0, 0)
}

// AddDirOwned adds a directory owned by uid:gid.
func (t *Tree) AddDirOwned(p string, perm fs.FileMode, uid, gid int) {
	t.put(p, &entry{mode: fs.ModeDir | perm&(fs.ModePerm|fs.ModeSticky), uid: uid, gid: gid})
}

// AddBytes adds a regular file with the given content and permissions.
func (t *Tree) AddBytes(p string, data []byte, perm fs.FileMode) {
	t.put(p, &entry{mode: perm & fs.ModePerm, data: data})
}

// AddFile adds a copy of host file src (symlinks followed), keeping its permissions.
// src is read when the tree is written.
func (t *Tree) AddFile(p, src string) {
	if t.err != nil {
		return
	}
	st, err := os.Stat(src)
	if err != nil {
		t.fail(err)
		return
	}
	if !st.Mode().IsRegular() {
		t.fail(fmt.Errorf("%s: not a regular file", src))
		return
	}
	t.put(p, &entry{mode: st.Mode().Perm(), src: src})
}

// AddSymlink adds a symbolic link at p pointing to target, taken literally.
func (t *Tree) AddSymlink(p, target string) {
	t.put(p, &entry{mode: fs.ModeSymlink | 0o777, link: target})
}

// AddTool adds host binary src at p and, when it is dynamically linked, every
// shared library it needs at the path the host's loader finds it, and the loader.
// A dynamically linked binary in a tree made by NewTree is an error.
func (t *Tree) AddTool(p, src string) {
	if t.err != nil {
		return
	}
	dynamic, err := isDynamic(src)
	if err != nil {
		t.fail(err)
		return
	}
	t.AddFile(p, src)
	if !dynamic {
		return
	}
	if t.libs == nil {
		t.fail(fmt.Errorf("%s: dynamically linked, in an image for static binaries", src))
		return
	}
	libs, err := t.libs.Libs(src)
	if err != nil {
		t.fail(fmt.Errorf("shared libraries of %s: %w", src, err))
		return
	}
	for _, lib := range libs {
		t.AddFile(lib, lib)
	}
}

// isDynamic reports whether the ELF executable at p asks for a program interpreter.
func isDynamic(p string) (bool, error) {
	f, err := elf.Open(p)
	if err != nil {
		return false, fmt.Errorf("%s: %w", p, err)
	}
	defer f.Close()
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP {
			return true, nil
		}
	}
	return false, nil
}

// Paths lists the tree's paths, absolute, in the order WriteTar writes them.
func (t *Tree) Paths() []string {
	keys := make([]string, 0, len(t.entries))
	for k := range t.entries {
		keys = append(keys, k)
	}
	// A parent sorts before its children: it is a prefix of theirs.
	slices.Sort(keys)
	for i, k := range keys {
		keys[i] = "/" + k
	}
	return keys
}

// WriteTar writes the tree as an uncompressed tar stream.
func (t *Tree) WriteTar(w io.Writer) error {
	if t.err != nil {
		return t.err
	}
	tw := tar.NewWriter(w)
	for _, p := range t.Paths() {
		name := p[1:]
		e := t.entries[name]
		h := &tar.Header{Name: name, Mode: int64(e.mode.Perm()), Uid: e.uid, Gid: e.gid, ModTime: epoch, Format: tar.FormatPAX}
		if e.mode&fs.ModeSticky != 0 {
			h.Mode |= 0o1000
		}
		switch {
		case e.mode.IsDir():
			h.Typeflag, h.Name = tar.TypeDir, name+"/"
		case e.mode&fs.ModeSymlink != 0:
			h.Typeflag, h.Linkname = tar.TypeSymlink, e.link
		default:
			h.Typeflag = tar.TypeReg
		}
		if err := writeEntry(tw, h, e); err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
	}
	return tw.Close()
}

func writeEntry(tw *tar.Writer, h *tar.Header, e *entry) error {
	if h.Typeflag != tar.TypeReg {
		return tw.WriteHeader(h)
	}
	if e.src == "" {
		h.Size = int64(len(e.data))
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		_, err := tw.Write(e.data)
		return err
	}
	f, err := os.Open(e.src)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	h.Size = st.Size()
	if err := tw.WriteHeader(h); err != nil {
		return err
	}
	n, err := io.Copy(tw, f)
	if err == nil && n != h.Size {
		err = errors.New("file changed while being read")
	}
	return err
}

// DiffID is the sha256 of the tree's tar stream: the layer's uncompressed digest,
// which identifies its content.
func (t *Tree) DiffID() (v1.Hash, error) {
	h := sha256.New()
	if err := t.WriteTar(h); err != nil {
		return v1.Hash{}, err
	}
	return v1.Hash{Algorithm: "sha256", Hex: fmt.Sprintf("%x", h.Sum(nil))}, nil
}
