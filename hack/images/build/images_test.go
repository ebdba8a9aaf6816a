package build

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/validate"
)

// smoke are commands each image must run, chrooted into its unpacked root file
// system as the image's user, and what their output must contain.
var smoke = map[string][]struct {
	argv []string
	env  []string
	want string
}{
	"agnhost": {
		{argv: []string{"/agnhost", "--help"}, want: "netexec"},
		{argv: []string{"/bin/sh", "-c", "nc -h; curl --version; bash --version"}, want: "GNU bash"},
		{argv: []string{"/bin/sh", "-c", `readlink /bin/sh && /agnhost-2 --version && dig -v 2>&1 &&
getent --version | head -1 && /coredns -version && wget --help 2>&1 | head -1 &&
test -d /uploads -a -s /localhost.crt -a -s /localhost.key && id user-defined-in-image`},
			want: "dash\napp version " + agnhostVersion},
	},
	"busybox": {
		{argv: []string{"sh", "-c", "echo ok; wget --help 2>&1 | head -1; nslookup 2>&1 | head -1; nc --help 2>&1 | head -1"},
			want: "ok\nBusyBox"},
	},
	"pause": {{argv: []string{"/pause", "-v"}, want: "pause.go 3.10.2"}},
	"nginx": {{argv: []string{"/usr/sbin/nginx", "-v"}, want: "nginx version"}},
	"coredns": {
		{argv: []string{"/coredns", "-version"}, want: "CoreDNS-" + strings.TrimPrefix(corednsVersion, "v")},
		{argv: []string{"/coredns", "-plugins"}, want: "\nkubernetes\n"},
	},
	"glibc-dns-testing": {
		{argv: []string{"sh", "-c", "readlink /bin/sh; dig -v 2>&1; getent --version | head -1; seq 1 2"}, want: "dash\nDiG 9"},
	},
	"podnet": {
		{argv: []string{"/usr/local/bin/podnetd", "--version"}},
		{argv: []string{"/usr/local/lib/podnet/podnet"}, env: []string{"CNI_COMMAND=VERSION"}, want: `"1.0.0"`},
	},
}

// TestImages builds every image (or finds it up to date), then reads each tarball
// back: a valid image under each of its names, its entrypoint present, its tools
// running in a chroot; and imports them all into a throwaway containerd when one is
// installed.
func TestImages(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: the images' programs are run chrooted into their root file systems")
	}
	if err := checkHost(); err != nil {
		t.Skipf("cannot build the images: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	cfg := Default()
	m, err := Run(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	files := map[string][]Entry{}
	for _, e := range m.Images {
		files[e.File] = append(files[e.File], e)
	}
	if len(files) != len(smoke) {
		t.Errorf("%d tarballs, want %d (one per image of smoke)", len(files), len(smoke))
	}

	t.Run("up to date", func(t *testing.T) {
		times := map[string]time.Time{}
		for f := range files {
			times[f] = modTime(t, f)
		}
		again, err := Run(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(again.Images, m.Images) {
			t.Errorf("second run: manifest %v, want %v", again.Images, m.Images)
		}
		for f, mt := range times {
			if got := modTime(t, f); !got.Equal(mt) {
				t.Errorf("%s written again, its inputs unchanged", f)
			}
		}
	})

	for file, entries := range files {
		repo, _, _ := strings.Cut(FileName(entries[0].Name), "_")
		t.Run(repo, func(t *testing.T) {
			img := checkTarball(t, file, entries)
			root := t.TempDir()
			if err := unpack(mutate.Extract(img), root); err != nil {
				t.Fatalf("unpacking %s: %v", file, err)
			}
			cf, err := img.ConfigFile()
			if err != nil {
				t.Fatal(err)
			}
			argv := append(slices.Clone(cf.Config.Entrypoint), cf.Config.Cmd...)
			if len(argv) == 0 {
				t.Fatal("no entrypoint and no command")
			}
			if _, err := lookPathIn(root, argv[0]); err != nil {
				t.Errorf("entrypoint %s: %v", argv[0], err)
			}
			for _, c := range smoke[repo] {
				runChroot(ctx, t, root, cf.Config, c.argv, c.env, c.want)
			}
		})
	}

	t.Run("containerd", func(t *testing.T) {
		var names, tarballs []string
		for f, entries := range files {
			tarballs = append(tarballs, f)
			for _, e := range entries {
				names = append(names, e.Name)
			}
		}
		slices.Sort(tarballs)
		testContainerdImport(ctx, t, tarballs, names)
	})
}

func modTime(t *testing.T, p string) time.Time {
	t.Helper()
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return fi.ModTime()
}

// checkTarball reads a tarball back with go-containerregistry: its manifest.json
// names every entry, each name gives a valid image (digests and sizes match the
// blobs) with the entry's ID, for linux on this architecture. It returns the image.
func checkTarball(t *testing.T, file string, entries []Entry) v1.Image {
	t.Helper()
	opener := func() (io.ReadCloser, error) { return os.Open(file) }
	mf, err := tarball.LoadManifest(opener)
	if err != nil {
		t.Fatal(err)
	}
	if len(mf) != 1 {
		t.Fatalf("%d images in manifest.json, want 1", len(mf))
	}
	var first v1.Image
	for i, e := range entries {
		if !slices.Contains(mf[0].RepoTags, e.Name) {
			t.Errorf("manifest.json tags %v, without %s", mf[0].RepoTags, e.Name)
		}
		tag, err := name.NewTag(e.Name, name.StrictValidation)
		if err != nil {
			t.Fatal(err)
		}
		img, err := tarball.ImageFromPath(file, &tag)
		if err != nil {
			t.Fatalf("%s: %v", e.Name, err)
		}
		id, err := img.ConfigName()
		if err != nil || id.String() != e.ID {
			t.Errorf("%s: image ID %v (%v), manifest says %s", e.Name, id, err, e.ID)
		}
		if i == 0 {
			first = img
		}
	}
	if first == nil {
		t.FailNow()
	}
	if err := validate.Image(first); err != nil {
		t.Fatalf("invalid image: %v", err)
	}
	cf, err := first.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cf.OS != "linux" || cf.Architecture != runtime.GOARCH {
		t.Errorf("platform %s/%s, want linux/%s", cf.OS, cf.Architecture, runtime.GOARCH)
	}
	return first
}

// runChroot runs argv chrooted into root, as the image's user and with its
// environment, and checks that it succeeds and that its output contains want.
func runChroot(ctx context.Context, t *testing.T, root string, cfg v1.Config, argv, env []string, want string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	args := []string{}
	if cfg.User != "" {
		args = append(args, "--userspec="+cfg.User)
	}
	cmd := exec.CommandContext(ctx, "chroot", append(append(args, root), argv...)...)
	cmd.Env = append(slices.Clone(cfg.Env), env...)
	cmd.Dir = "/"
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Errorf("chroot %v: %v\n%s", argv, err, out)
		return
	}
	if !strings.Contains(string(out), want) {
		t.Errorf("chroot %v: output without %q:\n%s", argv, want, out)
	}
}

// unpack writes a flattened image file system (mutate.Extract) under dir.
func unpack(r io.ReadCloser, dir string) error {
	defer r.Close()
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		name := path.Clean("/" + h.Name)
		if name == "/" {
			continue
		}
		p := filepath.Join(dir, name)
		mode := h.FileInfo().Mode()
		switch h.Typeflag {
		case tar.TypeDir:
			err = os.MkdirAll(p, 0o755)
		case tar.TypeReg:
			var f *os.File
			if f, err = os.OpenFile(p, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600); err == nil {
				_, err = io.Copy(f, tr)
				err = errors.Join(err, f.Close())
			}
		case tar.TypeSymlink:
			err = os.Symlink(h.Linkname, p)
		case tar.TypeLink:
			err = os.Link(filepath.Join(dir, path.Clean("/"+h.Linkname)), p)
		default:
			err = fmt.Errorf("unexpected type %c", h.Typeflag)
		}
		if err == nil && h.Typeflag != tar.TypeSymlink {
			err = os.Chmod(p, mode&(fs.ModePerm|fs.ModeSticky|fs.ModeSetuid|fs.ModeSetgid))
		}
		if err == nil && h.Typeflag != tar.TypeSymlink {
			err = os.Lchown(p, h.Uid, h.Gid)
		}
		if err != nil {
			return fmt.Errorf("%s: %w", h.Name, err)
		}
	}
}

// lookPathIn finds an executable as the image would run it: an absolute path, or a
// name in the PATH directories, with symlinks (absolute ones too) resolved inside
// root. It returns its host path.
func lookPathIn(root, file string) (string, error) {
	candidates := []string{file}
	if !path.IsAbs(file) {
		candidates = nil
		for _, d := range []string{"/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"} {
			candidates = append(candidates, path.Join(d, file))
		}
	}
	for _, c := range candidates {
		p, err := resolveIn(root, c)
		if err != nil {
			continue
		}
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0 {
			return p, nil
		}
	}
	return "", errors.New("no such executable in the image")
}

// resolveIn follows the symlinks of image path p, as seen with root as /.
func resolveIn(root, p string) (string, error) {
	for hops := 0; hops < 40; hops++ {
		parts := strings.Split(strings.TrimPrefix(path.Clean("/"+p), "/"), "/")
		cur, linked := "/", false
		for i, part := range parts {
			next := path.Join(cur, part)
			fi, err := os.Lstat(filepath.Join(root, next))
			if err != nil {
				return "", err
			}
			if fi.Mode()&fs.ModeSymlink == 0 {
				cur = next
				continue
			}
			target, err := os.Readlink(filepath.Join(root, next))
			if err != nil {
				return "", err
			}
			if !path.IsAbs(target) {
				target = path.Join(cur, target)
			}
			p, linked = path.Join(append([]string{target}, parts[i+1:]...)...), true
			break
		}
		if !linked {
			return filepath.Join(root, cur), nil
		}
	}
	return "", fmt.Errorf("%s: too many symbolic links", p)
}
