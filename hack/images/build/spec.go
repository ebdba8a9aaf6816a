package build

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// The releases the images stand for. agnhostVersion is test/images/agnhost/VERSION of
// the k8s.io/kubernetes module pinned in tools/agnhost/go.mod; corednsVersion is the
// github.com/coredns/coredns module of tools/coredns/go.mod (the build checks both).
const (
	agnhostVersion = "2.66.1"
	corednsVersion = "v1.15.0"
)

// e2eRegistry is the e2e framework's PromoterE2eRegistry
// (test/utils/image/manifest.go in k8s.io/kubernetes v1.37.2).
const e2eRegistry = "registry.k8s.io/e2e-test-images"

const pathEnv = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// spec is one image to build: the names it answers to, its single layer and its
// configuration.
type spec struct {
	// refs are the image's names; the first one names the tarball.
	refs   []string
	config v1.Config
	// tree fills the image's root file system.
	tree func(ctx context.Context, in *inputs) *Tree
}

// inputs is what the images are made from, built or found before any tree is.
type inputs struct {
	bins    map[string]string // Go binaries by name (goBinaries), paths in the cache
	version string            // podnet's, from git describe
	k8sDir  string            // the k8s.io/kubernetes module's directory
}

// goBinaries are the static Go programs the images hold. The module is a directory
// relative to the repository root, built with -mod=readonly: each pins its own
// dependencies.
func goBinaries(version string) []goBinary {
	podnet := "-X github.com/podnet/podnet/daemon.Version=" + version
	return []goBinary{
		{name: "podnetd", module: ".", pkg: "./cmd/podnetd", ldflags: podnet},
		{name: "podnetctl", module: ".", pkg: "./cmd/podnetctl", ldflags: podnet},
		{name: "podnet", module: ".", pkg: "./cni-plugin", ldflags: podnet},
		{name: "agnhost", module: "hack/images/tools/agnhost", pkg: "k8s.io/kubernetes/test/images/agnhost",
			ldflags: "-X main.Version=" + agnhostVersion},
		{name: "coredns", module: "hack/images/tools/coredns", pkg: ".",
			ldflags: "-X github.com/coredns/coredns/coremain.GitCommit=podnet-hack-images"},
		{name: "pause", module: "hack/images", pkg: "./pause"},
		{name: "nginx", module: "hack/images", pkg: "./nginx"},
	}
}

// specs lists every image, under the names the e2e framework of Kubernetes v1.37.2
// asks for (test/utils/image/manifest.go) or, for CoreDNS and podnet, the names
// their manifests use.
func specs(version string) []spec {
	return []spec{
		{
			// test/images/agnhost/Dockerfile: Alpine with the e2e tests' tools, which
			// here come from Debian with their shared libraries (so dig and getent
			// are glibc's: the DNS tests' "musl" probe runs on glibc too).
			refs: []string{e2eRegistry + "/agnhost:" + agnhostVersion},
			config: v1.Config{
				Env:          []string{pathEnv},
				Entrypoint:   []string{"/agnhost"},
				Cmd:          []string{"pause"},
				ExposedPorts: ports("80/tcp", "8080/tcp", "8081/tcp", "9376/tcp", "5000/tcp"),
			},
			tree: agnhostTree,
		},
		{
			// Docker's busybox:1.37.0, which upstream's image is; Debian 12 has 1.35.
			refs:   []string{e2eRegistry + "/busybox:1.37.0-2"},
			config: v1.Config{Env: []string{pathEnv}, Cmd: []string{"sh"}},
			tree:   busyboxTree,
		},
		{
			// The manifest's and kubelet's (kubeadm's PauseVersion) pause, and
			// containerd 1.6's default sandbox_image, so that a containerd left
			// with its default configuration never pulls one.
			refs: []string{"registry.k8s.io/pause:3.10.2", "registry.k8s.io/pause:3.6"},
			config: v1.Config{
				Entrypoint: []string{"/pause"},
				User:       "65535:65535",
			},
			tree: pauseTree,
		},
		{
			// Nginx and NginxNew. The sig-network specs that run it (Endpoints and
			// EndpointSlices for pods matching a Service) only need a container that
			// keeps running; the stand-in serves nginx's welcome page on port 80.
			refs: []string{e2eRegistry + "/nginx:1.27.0-2", e2eRegistry + "/nginx:1.28.0-2"},
			config: v1.Config{
				Env:          []string{pathEnv},
				Entrypoint:   []string{"/usr/sbin/nginx"},
				Cmd:          []string{"-g", "daemon off;"},
				ExposedPorts: ports("80/tcp"),
				StopSignal:   "SIGQUIT",
			},
			tree: nginxTree,
		},
		{
			// The DNS specs' glibc prober: sh, seq, dig and getent.
			refs:   []string{e2eRegistry + "/glibc-dns-testing:2.1.1"},
			config: v1.Config{Env: []string{pathEnv}, Cmd: []string{"/bin/sh"}},
			tree:   glibcDNSTree,
		},
		{
			// Upstream's image runs as nonroot with cap_net_bind_service on the
			// binary; this one runs as root, given NET_BIND_SERVICE by its pod.
			// deploy/e2e/coredns.yaml runs it as :local.
			refs: []string{"registry.k8s.io/coredns/coredns:" + corednsVersion, "registry.k8s.io/coredns/coredns:local"},
			config: v1.Config{
				Env:          []string{pathEnv},
				Entrypoint:   []string{"/coredns"},
				ExposedPorts: ports("53/tcp", "53/udp", "9153/tcp"),
			},
			tree: corednsTree,
		},
		{
			// The repository's Dockerfile without its base image: the same paths,
			// user and entrypoint, on a distroless-like layer.
			refs: []string{"ghcr.io/podnet/podnet:latest", "ghcr.io/podnet/podnet:" + tagSafe(version)},
			config: v1.Config{
				Env:        []string{pathEnv, "SSL_CERT_FILE=" + caBundle},
				Entrypoint: []string{"/usr/local/bin/podnetd"},
				User:       "65532:65532",
			},
			tree: podnetTree,
		},
	}
}

func ports(ps ...string) map[string]struct{} {
	m := make(map[string]struct{}, len(ps))
	for _, p := range ps {
		m[p] = struct{}{}
	}
	return m
}

// tagSafe turns a git describe output into a valid tag.
func tagSafe(v string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '.', r == '-', r == '_':
			return r
		}
		return '_'
	}, v)
}

func agnhostTree(ctx context.Context, in *inputs) *Tree {
	t := NewMergedUsrTree(Ldd{Ctx: ctx})
	t.AddFile("/agnhost", in.bins["agnhost"])
	// entrypoint-tester's tests override the entrypoint with agnhost-2.
	t.AddSymlink("/agnhost-2", "agnhost")
	// The DNS tests' own DNS server pods run /coredns.
	t.AddFile("/coredns", in.bins["coredns"])
	porter := filepath.Join(in.k8sDir, "test/images/agnhost/porter")
	addCopy(t, "/localhost.crt", filepath.Join(porter, "localhost.crt"), 0o644)
	addCopy(t, "/localhost.key", filepath.Join(porter, "localhost.key"), 0o644)
	t.AddDir("/uploads", 0o755) // netexec's /upload
	addShells(t)
	t.AddTool("/bin/bash", hostBash)
	t.AddTool("/bin/nc.openbsd", hostNetcat)
	t.AddSymlink("/bin/nc", "nc.openbsd")
	t.AddTool("/usr/bin/curl", hostCurl)
	t.AddTool("/usr/bin/dig", hostDig)
	t.AddTool("/usr/bin/getent", hostGetent)
	addBusybox(ctx, t)
	addBase(t, agnhostUsers)
	return t
}

func busyboxTree(ctx context.Context, _ *inputs) *Tree {
	t := NewMergedUsrTree(nil)
	addBusybox(ctx, t)
	addBase(t, baseUsers)
	return t
}

func glibcDNSTree(ctx context.Context, _ *inputs) *Tree {
	t := NewMergedUsrTree(Ldd{Ctx: ctx})
	addShells(t)
	t.AddTool("/usr/bin/dig", hostDig)
	t.AddTool("/usr/bin/getent", hostGetent)
	addBusybox(ctx, t)
	addBase(t, baseUsers)
	return t
}

func pauseTree(_ context.Context, in *inputs) *Tree {
	t := NewTree()
	t.AddTool("/pause", in.bins["pause"])
	return t
}

func nginxTree(_ context.Context, in *inputs) *Tree {
	t := NewTree()
	t.AddTool("/usr/sbin/nginx", in.bins["nginx"])
	addBase(t, baseUsers)
	return t
}

func corednsTree(_ context.Context, in *inputs) *Tree {
	t := NewTree()
	t.AddTool("/coredns", in.bins["coredns"])
	addBase(t, baseUsers)
	return t
}

func podnetTree(_ context.Context, in *inputs) *Tree {
	t := NewTree()
	t.AddTool("/usr/local/bin/podnetd", in.bins["podnetd"])
	t.AddTool("/usr/local/bin/podnetctl", in.bins["podnetctl"])
	// Not in PATH: podnetd copies it to the host's CNI bin dir (--cni-plugin-src).
	t.AddTool("/usr/local/lib/podnet/podnet", in.bins["podnet"])
	addBase(t, distrolessUsers)
	t.AddDirOwned("/home/nonroot", 0o700, 65532, 65532)
	return t
}

// addShells adds dash as /bin/sh, as Debian has it.
func addShells(t *Tree) {
	t.AddTool("/bin/dash", hostDash)
	t.AddSymlink("/bin/sh", "dash")
}

// addBusybox adds the static busybox and a symlink for each of its applets, except
// where the tree already has a program of that name in a PATH directory: the real
// tools (bash, dash as sh, nc, …) win over applets, whichever directory each is in.
func addBusybox(ctx context.Context, t *Tree) {
	if t.Err() != nil {
		return
	}
	t.AddTool("/bin/busybox", hostBusybox)
	out, err := exec.CommandContext(ctx, hostBusybox, "--list-full").Output()
	if err != nil {
		t.fail(fmt.Errorf("%s --list-full: %w", hostBusybox, err))
		return
	}
	for _, applet := range strings.Fields(string(out)) {
		dir, name := filepath.Split(applet)
		switch strings.TrimSuffix(dir, "/") {
		case "bin", "sbin", "usr/bin", "usr/sbin":
		default:
			continue // linuxrc
		}
		if t.Has("/usr/bin/"+name) || t.Has("/usr/sbin/"+name) || t.Has("/usr/local/bin/"+name) {
			continue
		}
		t.AddSymlink("/"+applet, "/bin/busybox")
	}
}

// addCopy adds host file src with the given permissions (module cache files are
// read-only).
func addCopy(t *Tree, p, src string, perm os.FileMode) {
	if t.Err() != nil {
		return
	}
	b, err := os.ReadFile(src)
	if err != nil {
		t.fail(err)
		return
	}
	t.AddBytes(p, b, perm)
}
