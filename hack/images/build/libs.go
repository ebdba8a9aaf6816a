package build

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
)

// Ldd resolves shared libraries with the host's ldd, that is with the host's own
// dynamic loader: the libraries listed are exactly those the binary loads on this
// machine, the loader included. Only ever given Debian's own binaries.
type Ldd struct {
	Ctx context.Context
}

var _ LibResolver = Ldd{}

// Libs runs `ldd binary` and returns the absolute paths it lists, in its order. A
// library ldd cannot find is an error.
func (l Ldd) Libs(binary string) ([]string, error) {
	ctx := l.Ctx
	if ctx == nil {
		ctx = context.Background()
	}
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, "ldd", binary)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("ldd %s: %w: %s", binary, err, strings.TrimSpace(stderr.String()))
	}
	return parseLdd(stdout.String())
}

// parseLdd reads ldd's lines:
//
//	linux-vdso.so.1 (0x00007ffd…)                            the kernel's, no file
//	libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)
//	/lib64/ld-linux-x86-64.so.2 (0x…)                        the loader
//	libfoo.so.1 => not found
func parseLdd(out string) ([]string, error) {
	var libs []string
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		name, target, mapped := strings.Cut(line, " => ")
		if !mapped {
			target = name
		}
		if strings.HasPrefix(target, "not found") {
			return nil, fmt.Errorf("%s: not found", name)
		}
		p, _, _ := strings.Cut(target, " (")
		if !filepath.IsAbs(p) {
			continue // linux-vdso.so.1, or "statically linked"
		}
		libs = append(libs, p)
	}
	return libs, sc.Err()
}
