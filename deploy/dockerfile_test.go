package deploy

import (
	"debug/elf"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// dockerfile is a Dockerfile's instructions by stage, continuation lines joined.
type dockerfile struct {
	stages []stage
}

type stage struct {
	from, name   string
	instructions []instruction
}

type instruction struct {
	cmd  string // upper case: RUN, COPY, …
	args string
}

func parseDockerfile(p string) (*dockerfile, error) {
	data, err := os.ReadFile(p)
	if err != nil {
		return nil, err
	}
	df := &dockerfile{}
	var cur strings.Builder
	flush := func() error {
		line := strings.TrimSpace(cur.String())
		cur.Reset()
		if line == "" {
			return nil
		}
		cmd, args, _ := strings.Cut(line, " ")
		ins := instruction{cmd: strings.ToUpper(cmd), args: strings.TrimSpace(args)}
		if ins.cmd == "FROM" {
			f := strings.Fields(ins.args)
			s := stage{from: f[0]}
			if len(f) == 3 && strings.EqualFold(f[1], "AS") {
				s.name = f[2]
			}
			df.stages = append(df.stages, s)
			return nil
		}
		if len(df.stages) == 0 {
			if ins.cmd == "ARG" {
				return nil
			}
			return fmt.Errorf("%s before FROM", ins.cmd)
		}
		s := &df.stages[len(df.stages)-1]
		s.instructions = append(s.instructions, ins)
		return nil
	}
	for _, line := range strings.Split(string(data), "\n") {
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, "#") {
			continue
		}
		if strings.HasSuffix(trimmed, `\`) {
			cur.WriteString(strings.TrimSuffix(trimmed, `\`) + " ")
			continue
		}
		cur.WriteString(trimmed)
		if err := flush(); err != nil {
			return nil, err
		}
	}
	if err := flush(); err != nil {
		return nil, err
	}
	return df, nil
}

// buildCommand is the build stage's RUN that runs `go build`.
func (df *dockerfile) buildCommand() (string, bool) {
	for _, s := range df.stages {
		if s.name != "build" {
			continue
		}
		for _, ins := range s.instructions {
			if ins.cmd == "RUN" && strings.Contains(ins.args, "go build") {
				return ins.args, true
			}
		}
	}
	return "", false
}

// copies maps each file the final stage copies from the build stage to its
// path in the image.
func (df *dockerfile) copies(t *testing.T) map[string]string {
	t.Helper()
	out := map[string]string{}
	final := df.stages[len(df.stages)-1]
	for _, ins := range final.instructions {
		if ins.cmd != "COPY" {
			continue
		}
		f := strings.Fields(ins.args)
		if len(f) < 3 || f[0] != "--from=build" {
			t.Errorf("final stage: COPY %s: want --from=build SRC... DST", ins.args)
			continue
		}
		srcs, dst := f[1:len(f)-1], f[len(f)-1]
		for _, src := range srcs {
			if strings.HasSuffix(dst, "/") {
				out[src] = dst + path.Base(src)
			} else {
				if len(srcs) > 1 {
					t.Errorf("COPY %s: several sources need a directory destination", ins.args)
				}
				out[src] = dst
			}
		}
	}
	return out
}

func (df *dockerfile) final(cmd string) []string {
	var out []string
	for _, ins := range df.stages[len(df.stages)-1].instructions {
		if ins.cmd == cmd {
			out = append(out, ins.args)
		}
	}
	return out
}

// TestDockerfile runs the build stage's commands (as `docker build` would,
// with the module cache instead of the network), checks that they give
// static binaries with the version stamped in, and that the final stage is a
// minimal image copying them where the DaemonSet expects them, as a non-root
// user. No registry is reachable here, so the image itself is not built.
func TestDockerfile(t *testing.T) {
	df, err := parseDockerfile(filepath.Join(repoRoot, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	if len(df.stages) != 2 || df.stages[0].name != "build" {
		t.Fatalf("stages %+v, want a build stage and the runtime image", df.stages)
	}
	if !strings.HasPrefix(df.stages[0].from, "golang:") {
		t.Errorf("build stage FROM %s, want a golang image", df.stages[0].from)
	}
	runtime := df.stages[1].from
	if runtime != "scratch" && !strings.HasPrefix(runtime, "gcr.io/distroless/static") {
		t.Errorf("runtime image %s, want distroless static or scratch (no shell, no libc)", runtime)
	}
	run, _ := df.buildCommand()
	if n := strings.Count(run, "CGO_ENABLED=0"); n != strings.Count(run, "go build") {
		t.Errorf("%d of %d go build commands have CGO_ENABLED=0", n, strings.Count(run, "go build"))
	}

	dir := buildImageBinaries(t)
	copies := df.copies(t)
	want := map[string]string{
		"/out/podnetd":   "/usr/local/bin/podnetd",
		"/out/podnetctl": "/usr/local/bin/podnetctl",
		"/out/podnet":    pluginInImage,
	}
	for src, dst := range want {
		if copies[src] != dst {
			t.Errorf("image: %s copied to %q, want %s", src, copies[src], dst)
		}
	}
	for src := range copies {
		bin := filepath.Join(dir, strings.TrimPrefix(src, "/out/"))
		checkStatic(t, bin)
	}
	if ep := df.final("ENTRYPOINT"); !slices.Equal(ep, []string{`["/usr/local/bin/podnetd"]`}) {
		t.Errorf("ENTRYPOINT %q, want podnetd in exec form", ep)
	}
	users := df.final("USER")
	if len(users) != 1 || strings.HasPrefix(users[0], "0") || strings.HasPrefix(users[0], "root") {
		t.Errorf("USER %q, want one non-root user (the DaemonSet asks for uid 0 itself)", users)
	}

	out, err := exec.Command(filepath.Join(dir, "podnetd"), "--version").Output()
	if err != nil || strings.TrimSpace(string(out)) != testVersion {
		t.Errorf("podnetd --version = %q, %v; want %s from the VERSION build argument", out, err, testVersion)
	}
}

// pluginInImage is where the image holds the CNI plugin; the DaemonSet passes
// it as --cni-plugin-src.
const pluginInImage = "/usr/local/lib/podnet/podnet"

// checkStatic fails the test unless bin is an ELF executable without an
// interpreter or shared libraries: it runs on an image without libc.
func checkStatic(t *testing.T, bin string) {
	t.Helper()
	f, err := elf.Open(bin)
	if err != nil {
		t.Errorf("%s: %v", bin, err)
		return
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Errorf("%s: has an ELF interpreter: dynamically linked", filepath.Base(bin))
		}
	}
	if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
		t.Errorf("%s: needs shared libraries %v", filepath.Base(bin), libs)
	}
}
