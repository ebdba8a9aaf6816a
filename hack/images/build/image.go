package build

import (
	"bufio"
	"compress/gzip"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// stampVersion changes when the way images are written changes, so that every
// tarball is written again.
const stampVersion = "podnet-hack-images/1"

// stamp is stored next to a tarball (FILE.stamp): the inputs it was written from
// and the image ID it holds.
type stamp struct {
	Inputs string `json:"inputs"`
	ID     string `json:"id"`
}

// configFile is the image configuration before its layer is added.
func configFile(cfg v1.Config) *v1.ConfigFile {
	return &v1.ConfigFile{
		Architecture: runtime.GOARCH,
		OS:           "linux",
		Created:      v1.Time{Time: epoch},
		Config:       cfg,
		RootFS:       v1.RootFS{Type: "layers"},
	}
}

// inputsKey identifies what a tarball is made of: its names, configuration and
// layer content.
func inputsKey(refs []string, cfg v1.Config, diffID v1.Hash) (string, error) {
	b, err := json.Marshal(struct {
		Version string
		Refs    []string
		Config  *v1.ConfigFile
		DiffID  string
	}{stampVersion, refs, configFile(cfg), diffID.String()})
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("%x", sha256.Sum256(b)), nil
}

// readStamp returns the stamp of the tarball at p when both exist.
func readStamp(p string) (stamp, bool) {
	var s stamp
	b, err := os.ReadFile(p + ".stamp")
	if err != nil || json.Unmarshal(b, &s) != nil {
		return stamp{}, false
	}
	if _, err := os.Stat(p); err != nil {
		return stamp{}, false
	}
	return s, true
}

// writeImage writes the image of tree (one gzip layer) to p as a `docker save`
// tarball naming every ref, which `ctr images import` and `docker load` read,
// then its stamp. The layer is compressed into a temporary file next to p first.
// diffID is the tree's, computed before: a layer that differs means the tree's
// sources changed meanwhile.
func writeImage(p string, refs []string, cfg v1.Config, tree *Tree, diffID v1.Hash, key string) (v1.Hash, error) {
	tags := make(map[name.Reference]v1.Image, len(refs))
	layerPath := p + ".layer.tmp"
	defer os.Remove(layerPath)
	if err := writeAtomic(layerPath, func(w io.Writer) error {
		zw, err := gzip.NewWriterLevel(w, gzip.BestSpeed)
		if err != nil {
			return err
		}
		if err := tree.WriteTar(zw); err != nil {
			return err
		}
		return zw.Close()
	}); err != nil {
		return v1.Hash{}, fmt.Errorf("writing layer: %w", err)
	}
	layer, err := tarball.LayerFromFile(layerPath)
	if err != nil {
		return v1.Hash{}, err
	}
	if got, err := layer.DiffID(); err != nil || got != diffID {
		return v1.Hash{}, fmt.Errorf("layer %v, want %v (a source file changed while building?): %v", got, diffID, err)
	}
	img, err := mutate.ConfigFile(empty.Image, configFile(cfg))
	if err != nil {
		return v1.Hash{}, err
	}
	img, err = mutate.Append(img, mutate.Addendum{
		Layer:   layer,
		History: v1.History{Created: v1.Time{Time: epoch}, CreatedBy: "podnet hack/images"},
	})
	if err != nil {
		return v1.Hash{}, err
	}
	for _, r := range refs {
		tag, err := name.NewTag(r, name.StrictValidation)
		if err != nil {
			return v1.Hash{}, err
		}
		tags[tag] = img
	}
	id, err := img.ConfigName()
	if err != nil {
		return v1.Hash{}, err
	}
	if err := writeAtomic(p, func(w io.Writer) error { return tarball.MultiRefWrite(tags, w) }); err != nil {
		return v1.Hash{}, err
	}
	s, err := json.Marshal(stamp{Inputs: key, ID: id.String()})
	if err != nil {
		return v1.Hash{}, err
	}
	err = writeAtomic(p+".stamp", func(w io.Writer) error { _, err := w.Write(append(s, '\n')); return err })
	return id, err
}

// writeAtomic writes a file through fill so that p holds either its old content or
// all of the new one, across a crash: a temporary file, fsync, rename, fsync of the
// directory.
func writeAtomic(p string, fill func(io.Writer) error) (err error) {
	dir := filepath.Dir(p)
	f, err := os.CreateTemp(dir, "."+filepath.Base(p)+".*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	bw := bufio.NewWriterSize(f, 1<<20)
	if err := fill(bw); err != nil {
		return err
	}
	if err := bw.Flush(); err != nil {
		return err
	}
	if err := f.Chmod(0o644); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(f.Name(), p); err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	return errors.Join(d.Sync(), d.Close())
}
