package check

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"sigs.k8s.io/yaml"
)

// repoRoot is the repository root; tests run in deploy/check.
var repoRoot = func() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}()

func rootPath(parts ...string) string {
	return filepath.Join(append([]string{repoRoot}, parts...)...)
}

// service describes how to build and configure one callgrid binary.
type service struct {
	name      string
	envPrefix string
	cgo       bool
	tags      string
	// drainGrace is the fixed drain bound of services without a
	// drain_grace setting (the proxy: Timer C + 5 s, services/proxy/internal/app).
	drainGrace time.Duration
}

var (
	media = service{name: "media", envPrefix: "MEDIA", cgo: true, tags: "nolibopusfile"}
	proxy = service{name: "proxy", envPrefix: "PROXY", drainGrace: 186 * time.Second}
)

// serviceFor maps an image or config file name to its service.
func serviceFor(s string) (service, bool) {
	switch {
	case strings.Contains(s, "media"):
		return media, true
	case strings.Contains(s, "proxy"):
		return proxy, true
	}
	return service{}, false
}

var (
	binDir  string
	binOnce sync.Map // service name -> *buildResult
)

type buildResult struct {
	once sync.Once
	path string
	skip string
	err  error
}

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "callgrid-deploy-check-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	code := m.Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// binary builds the service once per test run the way the Makefile does
// (the workspace, the service's tags and cgo setting). A service whose
// cmd/ has no Go files yet is skipped; one that does not compile fails.
func binary(t *testing.T, s service) string {
	t.Helper()
	v, _ := binOnce.LoadOrStore(s.name, &buildResult{})
	r := v.(*buildResult)
	r.once.Do(func() {
		dir := rootPath("services", s.name)
		main, _ := filepath.Glob(filepath.Join(dir, "cmd", s.name, "*.go"))
		if len(main) == 0 {
			r.skip = fmt.Sprintf("services/%s/cmd/%s has no Go files yet", s.name, s.name)
			return
		}
		r.path = filepath.Join(binDir, s.name)
		args := []string{"build", "-o", r.path}
		if s.tags != "" {
			args = append(args, "-tags", s.tags)
		}
		args = append(args, "./cmd/"+s.name)
		cmd := exec.Command("go", args...)
		cmd.Dir = dir
		cgo := "0"
		if s.cgo {
			cgo = "1"
		}
		cmd.Env = append(os.Environ(), "CGO_ENABLED="+cgo)
		if out, err := cmd.CombinedOutput(); err != nil {
			r.err = fmt.Errorf("build %s: %v\n%s", s.name, err, out)
		}
	})
	if r.skip != "" {
		t.Skip(r.skip)
	}
	if r.err != nil {
		t.Fatal(r.err)
	}
	return r.path
}

// cleanEnv is the process environment without any callgrid setting, so
// the developer's shell cannot change what a check sees.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(name, "MEDIA_") || strings.HasPrefix(name, "PROXY_") || name == "NATS_URL" {
			continue
		}
		env = append(env, kv)
	}
	return env
}

// checkConfig runs `<service> -check-config -config file` with env added
// and returns the service's complaint, if any.
func checkConfig(t *testing.T, s service, file string, env map[string]string) error {
	t.Helper()
	bin := binary(t, s)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	args := []string{"-check-config"}
	if file != "" {
		args = append(args, "-config", file)
	}
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = cleanEnv()
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s -check-config -config %s (env %v): %v: %s", s.name, file, env, err, strings.TrimSpace(out.String()))
	}
	return nil
}

// configValue resolves one setting the way the services do: environment
// override (PREFIX_PATH), then the YAML file, then def.
func configValue(t *testing.T, s service, data []byte, env map[string]string, path, def string) string {
	t.Helper()
	envName := s.envPrefix + "_" + strings.ToUpper(strings.ReplaceAll(path, ".", "_"))
	if v, ok := env[envName]; ok {
		return v
	}
	var doc map[string]any
	if err := yaml.Unmarshal(data, &doc); err != nil {
		t.Fatalf("parse %s config: %v", s.name, err)
	}
	var cur any = doc
	for _, key := range strings.Split(path, ".") {
		m, ok := cur.(map[string]any)
		if !ok {
			return def
		}
		if cur, ok = m[key]; !ok {
			return def
		}
	}
	if cur == nil {
		return def
	}
	return fmt.Sprint(cur)
}

func portOf(t *testing.T, hostport string) int {
	t.Helper()
	_, p, err := net.SplitHostPort(hostport)
	if err != nil {
		t.Fatalf("address %q: %v", hostport, err)
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		t.Fatalf("port of %q: %v", hostport, err)
	}
	return n
}

func atoi(t *testing.T, s string) int {
	t.Helper()
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatalf("%q is not a number: %v", s, err)
	}
	return n
}

func duration(t *testing.T, s string) time.Duration {
	t.Helper()
	d, err := time.ParseDuration(s)
	if err != nil {
		t.Fatalf("%q is not a duration: %v", s, err)
	}
	return d
}

// drainGrace is how long the service may take to stop after SIGTERM with
// this configuration.
func drainGrace(t *testing.T, s service, data []byte, env map[string]string) time.Duration {
	t.Helper()
	if s.drainGrace > 0 {
		return s.drainGrace
	}
	// node.Config's DefaultDrainGrace (services/media/internal/node).
	return duration(t, configValue(t, s, data, env, "node.drain_grace", "2h"))
}

// freePort returns a TCP port free on loopback right now.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}
