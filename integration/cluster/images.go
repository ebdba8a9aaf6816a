package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
)

// Image names the cluster needs: containerd's sandbox image, podnet itself and
// the cluster DNS (deploy/e2e/coredns.yaml runs CoreDNSImage). `make images`
// (hack/images) builds them with the test images under these names.
const (
	PauseImage   = "registry.k8s.io/pause:3.10.2"
	CoreDNSImage = "registry.k8s.io/coredns/coredns:local"
	AgnhostImage = "registry.k8s.io/e2e-test-images/agnhost:2.66.1"
	// podnetRepo is podnet's image repository; hack/images tags it :latest and
	// :<git describe>.
	podnetRepo = "ghcr.io/podnet/podnet"
)

// requiredImages are the images Up cannot do without, whatever Options.Images says.
var requiredImages = []string{PauseImage, CoreDNSImage, podnetRepo + ":latest"}

// ImageSet is the images.json that `make images` writes beside its tarballs.
type ImageSet struct {
	Images []Image `json:"images"`
}

// Image is one name of an image and the docker-archive tarball holding it (one
// tarball may carry several names).
type Image struct {
	Name string `json:"name"`
	File string `json:"file"`
	ID   string `json:"id"`
}

// ImageCacheDir is where `make images` puts the tarballs and images.json:
// $PODNET_IMAGE_CACHE, or ~/.cache/podnet/images.
func ImageCacheDir() string {
	if d := os.Getenv("PODNET_IMAGE_CACHE"); d != "" {
		return d
	}
	home, err := os.UserHomeDir()
	if err != nil {
		home = "/root"
	}
	return filepath.Join(home, ".cache", "podnet", "images")
}

// LoadImages reads dir/images.json and checks that the images the cluster
// cannot run without are listed and that their tarballs exist. The error says
// to run `make images` when the file is missing.
func LoadImages(dir string) (*ImageSet, error) {
	path := filepath.Join(dir, "images.json")
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("images: %s does not exist (make images builds them)", path)
	}
	if err != nil {
		return nil, fmt.Errorf("images: %w", err)
	}
	var s ImageSet
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("images: %s: %w", path, err)
	}
	for _, name := range requiredImages {
		img, ok := s.find(name)
		if !ok {
			return nil, fmt.Errorf("images: %s lists no %s (make images builds it)", path, name)
		}
		if _, err := os.Stat(img.File); err != nil {
			return nil, fmt.Errorf("images: %s: %w (make images builds it)", name, err)
		}
	}
	return &s, nil
}

func (s *ImageSet) find(name string) (Image, bool) {
	for _, img := range s.Images {
		if img.Name == name {
			return img, true
		}
	}
	return Image{}, false
}

// PodnetImage is the name the podnet DaemonSet runs: the :<git describe> tag
// of the build that :latest points at, so that the pods name the exact build
// (imagePullPolicy Never); :latest when no such tag exists.
func (s *ImageSet) PodnetImage() string {
	latest, _ := s.find(podnetRepo + ":latest")
	for _, img := range s.Images {
		if strings.HasPrefix(img.Name, podnetRepo+":") && img.Name != latest.Name && img.ID == latest.ID {
			return img.Name
		}
	}
	return latest.Name
}

// Tarballs returns the tarballs to import so that every image named exists,
// plus the required ones; names nil means every image of the set. Each tarball
// is listed once, in the order of images.json.
func (s *ImageSet) Tarballs(names []string) ([]string, error) {
	want := map[string]bool{}
	for _, n := range append(slices.Clone(requiredImages), names...) {
		if _, ok := s.find(n); !ok {
			return nil, fmt.Errorf("images: no image %s in images.json (make images builds the set)", n)
		}
		want[n] = true
	}
	var files []string
	for _, img := range s.Images {
		if (names == nil || want[img.Name]) && !slices.Contains(files, img.File) {
			files = append(files, img.File)
		}
	}
	return files, nil
}

// importImages imports the tarballs into every node's containerd, the nodes in
// parallel.
func (c *Cluster) importImages(ctx context.Context, tarballs []string) error {
	errs := make([]error, len(c.Nodes))
	var wg sync.WaitGroup
	for i, n := range c.Nodes {
		wg.Go(func() { errs[i] = n.importImages(ctx, c.opts.Snapshotter, tarballs) })
	}
	wg.Wait()
	return errors.Join(errs...)
}
