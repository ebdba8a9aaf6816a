package daemon

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"go.uber.org/zap"
)

// PluginBinary is the name of the CNI plugin in the CNI bin dir: the plugin
// type the conflist names.
const PluginBinary = "podnet"

// installCNIPlugin copies the plugin binary at --cni-plugin-src into the CNI
// bin dir, unless that flag is empty (the plugin is installed by other means,
// e.g. a package). Called at start, before the conflist is written, so a
// runtime that sees the conflist finds the plugin of this podnetd's version.
func (d *Daemon) installCNIPlugin() error {
	if d.cfg.CNIPluginSrc == "" {
		return nil
	}
	dst := filepath.Join(d.cfg.CNIBinDir, PluginBinary)
	wrote, err := installFile(d.cfg.CNIPluginSrc, dst, 0o755)
	if err != nil {
		return fmt.Errorf("install CNI plugin: %w", err)
	}
	if wrote {
		d.log.Info("CNI plugin installed", zap.String("from", d.cfg.CNIPluginSrc), zap.String("path", dst))
	} else {
		d.log.Debug("CNI plugin up to date", zap.String("path", dst))
	}
	return nil
}

// installFile makes dst a copy of the regular file src with mode, and reports
// whether it wrote. It leaves dst alone when it already has src's content and
// mode, or is src itself. Otherwise it copies to a temporary file in dst's
// directory, fsyncs it, renames it over dst and fsyncs the directory, so that
// dst is at every moment the old file or the new one, never a partial copy: a
// container runtime may exec the plugin while it is replaced (a running copy
// keeps its old inode). Temporary files left by an earlier crash are removed.
// It fails when src is missing or not a regular file, or dst's directory
// cannot be written.
func installFile(src, dst string, mode fs.FileMode) (bool, error) {
	in, err := os.Open(src)
	if err != nil {
		return false, err
	}
	defer in.Close()
	fi, err := in.Stat()
	if err != nil {
		return false, err
	}
	if !fi.Mode().IsRegular() {
		return false, fmt.Errorf("%s is not a regular file", src)
	}
	if dfi, err := os.Stat(dst); err == nil && os.SameFile(fi, dfi) {
		return false, nil
	}
	same, err := sameContent(in, fi.Size(), dst, mode)
	if err != nil {
		return false, err
	}
	if same {
		return false, nil
	}
	if _, err := in.Seek(0, io.SeekStart); err != nil {
		return false, err
	}
	dir := filepath.Dir(dst)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return false, err
	}
	removeStaleTemps(dir, dst)
	return replaceFile(dir, tempPattern(dst), dst, mode, func(f *os.File) error {
		if _, err := io.Copy(f, in); err != nil {
			return fmt.Errorf("copy %s: %w", src, err)
		}
		return nil
	})
}

// tempPattern names installFile's temporary files for dst: hidden, so no
// runtime takes one for a plugin.
func tempPattern(dst string) string { return "." + filepath.Base(dst) + ".tmp-*" }

// removeStaleTemps deletes the temporary files of earlier installs of dst that
// a crash left behind (a plugin is several MB). Failures are ignored: the
// files are hidden and harmless.
func removeStaleTemps(dir, dst string) {
	stale, _ := filepath.Glob(filepath.Join(dir, tempPattern(dst)))
	for _, p := range stale {
		os.Remove(p)
	}
}

// sameContent reports whether the regular file at path has mode's permission
// bits and the content of r, which holds size bytes. A missing path is not the
// same; an unreadable one is an error.
func sameContent(r io.Reader, size int64, path string, mode fs.FileMode) (bool, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return false, err
	}
	if !fi.Mode().IsRegular() || fi.Size() != size || fi.Mode().Perm() != mode.Perm() {
		return false, nil
	}
	a, b := make([]byte, 64<<10), make([]byte, 64<<10)
	for {
		n, errA := io.ReadFull(r, a)
		m, errB := io.ReadFull(f, b)
		if n != m || !bytes.Equal(a[:n], b[:m]) {
			return false, nil
		}
		if errA == io.EOF || errA == io.ErrUnexpectedEOF {
			return errB == io.EOF || errB == io.ErrUnexpectedEOF, nil
		}
		if errA != nil {
			return false, errA
		}
		if errB != nil {
			return false, errB
		}
	}
}
