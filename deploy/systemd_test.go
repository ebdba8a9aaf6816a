package deploy

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	clientcmdv1 "k8s.io/client-go/tools/clientcmd/api/v1"
	"sigs.k8s.io/yaml"

	"github.com/podnet/podnet/daemon"
)

var systemdDir = filepath.Join(repoRoot, "deploy", "systemd")

// unitBinary is the podnetd path in the unit's ExecStart.
const unitBinary = "/usr/local/bin/podnetd"

// systemdAnalyze returns the systemd-analyze binary or skips the test.
func systemdAnalyze(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze not found: hack/install-deps.sh installs it (Debian package systemd)")
	}
	return p
}

// unitForAnalysis writes the unit into a temporary directory with its
// ExecStart pointing at the image's podnetd, since systemd-analyze checks that
// the binary exists; nothing else changes.
func unitForAnalysis(t *testing.T) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(systemdDir, "podnetd.service"))
	if err != nil {
		t.Fatal(err)
	}
	if n := bytes.Count(data, []byte("ExecStart="+unitBinary+" ")); n != 1 {
		t.Fatalf("podnetd.service: %d ExecStart=%s lines, want 1", n, unitBinary)
	}
	bin := filepath.Join(buildImageBinaries(t), "podnetd")
	data = bytes.ReplaceAll(data, []byte("ExecStart="+unitBinary+" "), []byte("ExecStart="+bin+" "))
	p := filepath.Join(t.TempDir(), "podnetd.service")
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestSystemdUnitVerifies runs `systemd-analyze verify`, which loads the unit
// as systemd would (without running it: systemd need not be PID 1), and wants
// neither an error nor a warning.
func TestSystemdUnitVerifies(t *testing.T) {
	sa := systemdAnalyze(t)
	out, err := exec.Command(sa, "verify", "--man=no", unitForAnalysis(t)).CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}

// TestSystemdUnitHardening wants systemd's exposure score of the unit, 0
// (locked down) to 10 (unprotected), at most 3.0: it is 2.9 with what podnetd
// needs (the host's network, CAP_NET_ADMIN, CAP_SYS_ADMIN, /proc/sys/net).
func TestSystemdUnitHardening(t *testing.T) {
	sa := systemdAnalyze(t)
	cmd := exec.Command(sa, "security", "--offline=true", "--threshold=30", "--no-pager", unitForAnalysis(t))
	cmd.Env = append(os.Environ(), "SYSTEMD_COLORS=0")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Errorf("systemd-analyze security: %v (exposure above 3.0?)\n%s", err, out)
	}
	text := string(out)
	for _, want := range []string{"✓ ProtectSystem=", "✓ NoNewPrivileges=", "✓ PrivateTmp=", "✓ ProtectHome="} {
		if !strings.Contains(text, want) {
			t.Errorf("security report lacks %q", want)
		}
	}
}

// readUnit reads the unit's settings as [Section]Key → values, in order.
func readUnit(t *testing.T) map[string][]string {
	t.Helper()
	f, err := os.Open(filepath.Join(systemdDir, "podnetd.service"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string][]string{}
	section := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#"):
		case strings.HasPrefix(line, "["):
			section = line
		default:
			k, v, _ := strings.Cut(line, "=")
			out[section+k] = append(out[section+k], v)
		}
	}
	return out
}

func TestSystemdUnitSettings(t *testing.T) {
	u := readUnit(t)
	for key, want := range map[string]string{
		"[Service]Type":                  "notify",
		"[Service]NotifyAccess":          "main",
		"[Service]Restart":               "on-failure",
		"[Service]ProtectSystem":         "strict",
		"[Service]ProtectHome":           "yes",
		"[Service]PrivateTmp":            "yes",
		"[Service]NoNewPrivileges":       "yes",
		"[Service]CapabilityBoundingSet": "CAP_NET_ADMIN CAP_SYS_ADMIN",
		"[Service]StateDirectory":        "podnet",
		"[Service]RuntimeDirectory":      "podnet",
	} {
		if got := u[key]; len(got) != 1 || got[0] != want {
			t.Errorf("%s=%q, want %q", key, got, want)
		}
	}
	if got := u["[Service]ProtectKernelTunables"]; len(got) > 0 && got[0] != "no" {
		t.Errorf("ProtectKernelTunables=%s: podnetd writes net.* sysctls", got[0])
	}
	def := daemon.Default()
	rw := strings.Fields(strings.Join(u["[Service]ReadWritePaths"], " "))
	for _, dir := range []string{def.CNIBinDir, def.CNIConfDir} {
		if !slices.Contains(rw, dir) {
			t.Errorf("ReadWritePaths %v lacks %s", rw, dir)
		}
	}
	// StateDirectory and RuntimeDirectory are /var/lib/podnet and /run/podnet.
	if def.StateDir != "/var/lib/podnet" || filepath.Dir(def.Socket) != "/run/podnet" {
		t.Errorf("podnetd's defaults %s, %s are not the unit's state and runtime directories", def.StateDir, def.Socket)
	}
	for _, before := range u["[Unit]Before"] {
		if strings.Contains(before, "kubelet") {
			t.Errorf("Before=%s: with Type=notify the kubelet would wait for podnetd's first sync, which waits for the kubelet", before)
		}
	}
}

// TestSystemdExampleConfigs expands the unit's ExecStart as systemd would
// with its own defaults and with each example environment file, and checks
// podnetd's arguments: known flags, and the source each example names.
func TestSystemdExampleConfigs(t *testing.T) {
	spec := podnetdFlags(t)
	u := readUnit(t)
	defaults := map[string]string{}
	for _, e := range u["[Service]Environment"] {
		k, v, _ := strings.Cut(strings.Trim(e, `"`), "=")
		defaults[k] = v
	}
	execStart := u["[Service]ExecStart"]
	if len(execStart) != 1 {
		t.Fatalf("ExecStart %q", execStart)
	}
	for _, tc := range []struct {
		envFile, flag, example string
	}{
		{"", "cluster-file", "/etc/podnet/cluster.yaml"},
		{"cluster-file.env", "cluster-file", "/etc/podnet/cluster.yaml"},
		{"kubeconfig.env", "kubeconfig", "/etc/podnet/kubeconfig"},
	} {
		env := map[string]string{}
		for k, v := range defaults {
			env[k] = v
		}
		name := "unit defaults"
		if tc.envFile != "" {
			name = tc.envFile
			for k, v := range readEnvFile(t, filepath.Join(systemdDir, tc.envFile)) {
				env[k] = v
			}
		}
		env["NODE_NAME"] = strings.ReplaceAll(env["NODE_NAME"], "%H", "node1")
		argv := expandExec(execStart[0], env)
		if argv[0] != unitBinary {
			t.Fatalf("ExecStart runs %s", argv[0])
		}
		args := spec.parseArgs(t, name, argv[1:])
		if args[tc.flag] != tc.example {
			t.Errorf("%s: --%s %q, want %s", name, tc.flag, args[tc.flag], tc.example)
		}
		if args["node-name"] != "node1" {
			t.Errorf("%s: --node-name %q, want the host name", name, args["node-name"])
		}
		if args["cni-plugin-src"] != "/usr/local/lib/podnet/podnet" {
			t.Errorf("%s: --cni-plugin-src %q", name, args["cni-plugin-src"])
		}
	}
}

// readEnvFile reads a systemd EnvironmentFile: VAR=value lines, # comments.
func readEnvFile(t *testing.T, path string) map[string]string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("%s: %q is not VAR=value", path, line)
		}
		out[strings.TrimSpace(k)] = strings.TrimSpace(v)
	}
	return out
}

var braced = regexp.MustCompile(`\$\{(\w+)\}`)

// expandExec splits a command line as systemd.service(5) does for our unit:
// a word that is exactly $VAR becomes the value's words (none if empty);
// ${VAR} is replaced inside a word. (No quoting: the unit uses none.)
func expandExec(cmdline string, env map[string]string) []string {
	var argv []string
	for _, w := range strings.Fields(cmdline) {
		if strings.HasPrefix(w, "$") && !strings.HasPrefix(w, "${") {
			argv = append(argv, strings.Fields(env[w[1:]])...)
			continue
		}
		argv = append(argv, braced.ReplaceAllStringFunc(w, func(m string) string { return env[m[2:len(m)-1]] }))
	}
	return argv
}

// TestSystemdExampleFiles parses the example cluster file with podnetd's
// parser, the example kubeconfig strictly, and the token Secret strictly.
func TestSystemdExampleFiles(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(systemdDir, "cluster.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	c, err := daemon.ParseCluster(data)
	if err != nil {
		t.Errorf("cluster.yaml: %v", err)
	} else if _, ok := c.Node("node1"); !ok || len(c.Nodes) != 2 {
		t.Errorf("cluster.yaml: nodes %+v", c.Nodes)
	}

	data, err = os.ReadFile(filepath.Join(systemdDir, "kubeconfig.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var kc clientcmdv1.Config
	if err := yaml.UnmarshalStrict(data, &kc); err != nil {
		t.Fatalf("kubeconfig.yaml: %v", err)
	}
	if len(kc.AuthInfos) != 1 || kc.AuthInfos[0].AuthInfo.TokenFile == "" || kc.CurrentContext == "" {
		t.Errorf("kubeconfig.yaml: want one user with a tokenFile and a current context, got %+v", kc)
	}

	objs := decodeFile(t, filepath.Join(systemdDir, "token-secret.yaml"))
	m := loadManifests(t)
	if len(objs) != 1 {
		t.Fatalf("token-secret.yaml: %d objects", len(objs))
	}
	s, ok := objs[0].(*corev1.Secret)
	if !ok || s.Type != "kubernetes.io/service-account-token" || s.Namespace != m.sa.Namespace ||
		s.Annotations["kubernetes.io/service-account.name"] != m.sa.Name {
		t.Errorf("token-secret.yaml: %+v, want a service-account-token Secret for %s/%s", objs[0], m.sa.Namespace, m.sa.Name)
	}
}
