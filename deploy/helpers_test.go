package deploy

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer/json"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
)

// repoRoot is the repository, relative to this package's directory.
const repoRoot = ".."

var scheme = func() *runtime.Scheme {
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{corev1.AddToScheme, appsv1.AddToScheme, rbacv1.AddToScheme} {
		if err := add(s); err != nil {
			panic(err)
		}
	}
	return s
}()

// strictYAML decodes into the registered API types and fails on unknown or
// duplicate fields, as `kubectl apply --validate=strict` does.
var strictYAML = json.NewSerializerWithOptions(json.DefaultMetaFactory, scheme, scheme,
	json.SerializerOptions{Yaml: true, Strict: true})

// decodeFile decodes every YAML document of a manifest file, in order.
func decodeFile(t *testing.T, path string) []runtime.Object {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r := utilyaml.NewYAMLReader(bufio.NewReader(f))
	var objs []runtime.Object
	for i := 0; ; i++ {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return objs
		}
		if err != nil {
			t.Fatalf("%s: document %d: %v", path, i, err)
		}
		if len(bytes.TrimSpace(stripComments(doc))) == 0 {
			continue
		}
		obj, gvk, err := strictYAML.Decode(doc, nil, nil)
		if err != nil {
			t.Fatalf("%s: document %d: %v", path, i, err)
		}
		if gvk.Version == "" || gvk.Kind == "" {
			t.Fatalf("%s: document %d has no apiVersion or kind", path, i)
		}
		objs = append(objs, obj)
	}
}

func stripComments(doc []byte) []byte {
	var out []byte
	for _, line := range bytes.Split(doc, []byte("\n")) {
		if t := bytes.TrimSpace(line); len(t) > 0 && t[0] != '#' {
			out = append(out, line...)
			out = append(out, '\n')
		}
	}
	return out
}

// built holds the binaries that the Dockerfile's build commands produce, built
// once per test binary.
var built struct {
	once sync.Once
	dir  string
	err  error
}

// buildImageBinaries runs the build stage's `go build` commands of the
// Dockerfile with /out/ in a temporary directory, and returns that directory.
func buildImageBinaries(t *testing.T) string {
	t.Helper()
	built.once.Do(func() {
		built.dir, built.err = os.MkdirTemp("", "podnet-deploy-test-")
		if built.err != nil {
			return
		}
		df, err := parseDockerfile(filepath.Join(repoRoot, "Dockerfile"))
		if err != nil {
			built.err = err
			return
		}
		run, ok := df.buildCommand()
		if !ok {
			built.err = errors.New("Dockerfile: no RUN with `go build` in the build stage")
			return
		}
		script := strings.ReplaceAll(run, "${VERSION}", testVersion)
		script = strings.ReplaceAll(script, "/out/", built.dir+"/")
		cmd := exec.Command("sh", "-ec", script)
		cmd.Dir = repoRoot
		// The module cache is all there is: no network in tests.
		cmd.Env = append(os.Environ(), "GOPROXY=off", "GOTOOLCHAIN=local")
		if out, err := cmd.CombinedOutput(); err != nil {
			built.err = fmt.Errorf("Dockerfile's build commands: %v\n%s\n%s", err, script, out)
		}
	})
	if built.err != nil {
		t.Fatal(built.err)
	}
	return built.dir
}

// testVersion is the VERSION build argument the tests build with.
const testVersion = "deploy-test"

// flagSpec is podnetd's flags as `podnetd -h` lists them: name → whether it
// takes a value.
type flagSpec map[string]bool

var usageLine = regexp.MustCompile(`^  -(\S+)(?: (\S+))?`)

// podnetdFlags runs the image's podnetd with -h and reads its flags.
func podnetdFlags(t *testing.T) flagSpec {
	t.Helper()
	bin := filepath.Join(buildImageBinaries(t), "podnetd")
	out, _ := exec.Command(bin, "-h").CombinedOutput() // exits 1 after the usage
	spec := flagSpec{}
	for _, line := range strings.Split(string(out), "\n") {
		if m := usageLine.FindStringSubmatch(line); m != nil {
			spec[m[1]] = m[2] != ""
		}
	}
	if len(spec) < 10 {
		t.Fatalf("podnetd -h lists %d flags:\n%s", len(spec), out)
	}
	return spec
}

// parseArgs reads podnetd's command-line arguments into flag → value, failing
// the test on a flag podnetd does not have, a missing value or a repeated flag.
func (spec flagSpec) parseArgs(t *testing.T, where string, args []string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for i := 0; i < len(args); i++ {
		a := args[i]
		if !strings.HasPrefix(a, "-") {
			t.Errorf("%s: argument %q is not a flag", where, a)
			continue
		}
		name, value, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		takesValue, ok := spec[name]
		if !ok {
			t.Errorf("%s: podnetd has no flag --%s", where, name)
			continue
		}
		if takesValue && !hasValue {
			if i+1 == len(args) {
				t.Errorf("%s: --%s without a value", where, name)
				continue
			}
			i++
			value = args[i]
		}
		if _, dup := out[name]; dup {
			t.Errorf("%s: --%s given twice", where, name)
		}
		out[name] = value
	}
	return out
}
