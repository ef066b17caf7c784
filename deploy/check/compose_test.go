package check

import (
	"bufio"
	"bytes"
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
	"github.com/sirupsen/logrus"
)

// loadCompose loads docker-compose.yml with every profile, the way
// `docker compose --profile load` does, and fails on any warning.
func loadCompose(t *testing.T) *types.Project {
	t.Helper()
	var logs bytes.Buffer
	logrus.SetOutput(&logs)
	t.Cleanup(func() { logrus.SetOutput(os.Stderr) })

	opts, err := cli.NewProjectOptions([]string{rootPath("docker-compose.yml")},
		cli.WithWorkingDirectory(repoRoot),
		cli.WithProfiles([]string{"*"}),
		// No shell environment: the file's defaults must be enough.
		cli.WithEnv([]string{}),
	)
	if err != nil {
		t.Fatal(err)
	}
	project, err := opts.LoadProject(context.Background())
	if err != nil {
		t.Fatalf("load docker-compose.yml: %v", err)
	}
	if strings.Contains(logs.String(), "level=warn") {
		t.Errorf("docker-compose.yml loads with warnings:\n%s", logs.String())
	}
	return project
}

func composeEnv(s types.ServiceConfig) map[string]string {
	env := map[string]string{}
	for k, v := range s.Environment {
		if v != nil {
			env[k] = *v
		}
	}
	return env
}

// callgridConfig returns the service's mounted config file (host path)
// and which service it is, for containers of the callgrid images.
func callgridConfig(t *testing.T, s types.ServiceConfig) (service, string, bool) {
	t.Helper()
	svc, ok := serviceFor(s.Image)
	if !ok || !strings.HasPrefix(s.Image, "callgrid/") || strings.Contains(s.Image, "sipp") {
		return service{}, "", false
	}
	target := ""
	for i, a := range s.Command {
		if a == "-config" && i+1 < len(s.Command) {
			target = s.Command[i+1]
		}
	}
	if target == "" {
		t.Fatalf("service %s: command %v has no -config", s.Name, s.Command)
	}
	for _, v := range s.Volumes {
		if v.Type == types.VolumeTypeBind && v.Target == target {
			return svc, v.Source, true
		}
	}
	t.Fatalf("service %s: -config %s is not a mounted file", s.Name, target)
	return service{}, "", false
}

func TestComposeLoads(t *testing.T) {
	project := loadCompose(t)
	for _, want := range []string{"nats", "proxy-1", "proxy-2", "media-1", "media-2", "prometheus", "grafana", "sipp-uas", "sipp-uac-1", "sipp-uac-2"} {
		if _, err := project.GetService(want); err != nil {
			t.Errorf("service %s: %v", want, err)
		}
	}
	if _, ok := project.Services["nats"]; ok && !strings.Contains(strings.Join(project.Services["nats"].Command, " "), "-js") {
		t.Error("nats runs without JetStream (-js)")
	}
}

var copyLine = regexp.MustCompile(`(?i)^\s*(COPY|ADD)\s+(.*)$`)

func TestComposeBuildContexts(t *testing.T) {
	project := loadCompose(t)
	for name, s := range project.Services {
		if s.Build == nil {
			continue
		}
		t.Run(name, func(t *testing.T) {
			ctx := s.Build.Context
			if st, err := os.Stat(ctx); err != nil || !st.IsDir() {
				t.Fatalf("build context %s: not a directory (%v)", ctx, err)
			}
			dockerfile := s.Build.Dockerfile
			if dockerfile == "" {
				dockerfile = "Dockerfile"
			}
			if !filepath.IsAbs(dockerfile) {
				dockerfile = filepath.Join(ctx, dockerfile)
			}
			checkDockerfile(t, ctx, dockerfile)
		})
	}
}

// checkDockerfile checks that every COPY/ADD source from the build context
// exists, and that the final stage runs as a non-root user with a
// HEALTHCHECK (service images).
func checkDockerfile(t *testing.T, ctx, path string) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("Dockerfile: %v", err)
	}
	// Join continuation lines.
	text := strings.ReplaceAll(string(data), "\\\n", " ")
	var lastStage []string
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(strings.TrimSpace(line), "#") {
			continue
		}
		if strings.HasPrefix(strings.ToUpper(strings.TrimSpace(line)), "FROM ") {
			lastStage = nil
		}
		lastStage = append(lastStage, line)
		m := copyLine.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		fields := strings.Fields(m[2])
		var args []string
		fromStage := false
		for _, f := range fields {
			if strings.HasPrefix(f, "--") {
				fromStage = fromStage || strings.HasPrefix(f, "--from=")
				continue
			}
			args = append(args, f)
		}
		if fromStage || len(args) < 2 {
			continue
		}
		for _, src := range args[:len(args)-1] {
			if _, err := os.Stat(filepath.Join(ctx, src)); err != nil {
				t.Errorf("%s: %s: source %s is not in the build context %s", path, strings.TrimSpace(line), src, ctx)
			}
		}
	}
	final := strings.ToUpper(strings.Join(lastStage, "\n"))
	if !strings.Contains(filepath.Base(filepath.Dir(path)), "sipp") {
		if !regexp.MustCompile(`(?m)^\s*USER\s+[1-9]`).MatchString(final) {
			t.Errorf("%s: the final stage does not run as a numeric non-root USER", path)
		}
		if !strings.Contains(final, "HEALTHCHECK") {
			t.Errorf("%s: the final stage has no HEALTHCHECK", path)
		}
	}
}

func TestComposeMountsExist(t *testing.T) {
	project := loadCompose(t)
	for name, s := range project.Services {
		for _, v := range s.Volumes {
			if v.Type != types.VolumeTypeBind {
				continue
			}
			if _, err := os.Stat(v.Source); err != nil {
				t.Errorf("service %s mounts %s: %v", name, v.Source, err)
			}
		}
	}
}

func TestComposeConfigsAccepted(t *testing.T) {
	project := loadCompose(t)
	for name, s := range project.Services {
		svc, file, ok := callgridConfig(t, s)
		if !ok {
			continue
		}
		t.Run(name, func(t *testing.T) {
			if err := checkConfig(t, svc, file, composeEnv(s)); err != nil {
				t.Error(err)
			}
		})
	}
}

// published returns, per protocol, the container ports a service publishes
// and whether the host port equals the container port.
func published(s types.ServiceConfig) map[string]map[int]bool {
	out := map[string]map[int]bool{}
	for _, p := range s.Ports {
		proto := p.Protocol
		if proto == "" {
			proto = "tcp"
		}
		if out[proto] == nil {
			out[proto] = map[int]bool{}
		}
		out[proto][int(p.Target)] = p.Published == strconv.Itoa(int(p.Target))
	}
	return out
}

func TestComposePortsMatchConfig(t *testing.T) {
	project := loadCompose(t)
	seenRTP := map[int]string{}
	for name, s := range project.Services {
		svc, file, ok := callgridConfig(t, s)
		if !ok {
			continue
		}
		t.Run(name, func(t *testing.T) {
			data, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			env := composeEnv(s)
			ports := published(s)
			httpPort := portOf(t, configValue(t, svc, data, env, "http.addr", ""))
			if _, ok := ports["tcp"][httpPort]; !ok {
				t.Errorf("http.addr port %d is not published (ports %v)", httpPort, ports)
			}
			if s.HealthCheck != nil && !s.HealthCheck.Disable {
				t.Errorf("compose healthcheck overrides the image's; keep it in the Dockerfile")
			}
			grace := drainGrace(t, svc, data, env)
			if s.StopGracePeriod == nil || time.Duration(*s.StopGracePeriod) < grace {
				t.Errorf("stop_grace_period %v is shorter than the drain (%v)", s.StopGracePeriod, grace)
			}
			switch svc.name {
			case "proxy":
				sip := portOf(t, configValue(t, svc, data, env, "sip.listen_addr", "127.0.0.1:5060"))
				for _, proto := range []string{"udp", "tcp"} {
					same, ok := ports[proto][sip]
					if !ok {
						t.Errorf("SIP port %d/%s is not published", sip, proto)
					} else if !same {
						t.Errorf("SIP port %d/%s is published on another host port: Record-Route names the configured port", sip, proto)
					}
				}
			case "media":
				lo := atoi(t, configValue(t, svc, data, env, "rtp.port_min", "30000"))
				hi := atoi(t, configValue(t, svc, data, env, "rtp.port_max", "39999"))
				if hi-lo+1 > 200 {
					t.Errorf("RTP range %d-%d: %d published UDP ports is too many for docker's per-port proxies", lo, hi, hi-lo+1)
				}
				for p := lo; p <= hi; p++ {
					same, ok := ports["udp"][p]
					switch {
					case !ok:
						t.Errorf("RTP port %d/udp of %d-%d is not published", p, lo, hi)
					case !same:
						t.Errorf("RTP port %d/udp is published on another host port: SDP names the container port", p)
					}
					if other, dup := seenRTP[p]; dup {
						t.Errorf("RTP port %d is published by %s too", p, other)
					}
					seenRTP[p] = name
				}
				for p := range ports["udp"] {
					if p < lo || p > hi {
						t.Errorf("published UDP port %d is outside rtp.port_min/port_max %d-%d", p, lo, hi)
					}
				}
				if env["MEDIA_RTP_ADVERTISE_IP"] == "" && configValue(t, svc, data, env, "rtp.advertise_ip", "") == "" {
					t.Errorf("no advertised RTP address: phones would be told the container's address")
				}
			}
		})
	}
}

// TestPrometheusTargets checks that every static scrape target is a
// compose service and port serving /metrics.
func TestPrometheusTargets(t *testing.T) {
	project := loadCompose(t)
	cfg := loadPrometheusConfig(t)
	for _, sc := range cfg.ScrapeConfigs {
		for _, st := range sc.StaticConfigs {
			for _, target := range st.Targets {
				host, port, _ := strings.Cut(target, ":")
				if host == "localhost" {
					continue
				}
				s, err := project.GetService(host)
				if err != nil {
					t.Errorf("job %s: target %s is not a compose service", sc.JobName, target)
					continue
				}
				svc, file, ok := callgridConfig(t, s)
				if !ok {
					continue
				}
				data, err := os.ReadFile(file)
				if err != nil {
					t.Fatal(err)
				}
				httpPort := portOf(t, configValue(t, svc, data, composeEnv(s), "http.addr", ""))
				if strconv.Itoa(httpPort) != port {
					t.Errorf("job %s: target %s, but %s serves metrics on %d", sc.JobName, target, host, httpPort)
				}
			}
		}
	}
}
