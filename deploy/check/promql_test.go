package check

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
	"sigs.k8s.io/yaml"
)

// promParser parses PromQL as Prometheus does by default.
var promParser = parser.NewParser(parser.Options{})

// syntheticMetrics are series Prometheus makes itself, not the services.
var syntheticMetrics = map[string]bool{"up": true, "scrape_duration_seconds": true, "scrape_samples_scraped": true}

// expression is one PromQL query and where it comes from.
type expression struct {
	where, expr string
}

var grafanaVars = []struct {
	re   *regexp.Regexp
	with string
}{
	{regexp.MustCompile(`\$__(rate_interval|interval|range)\b|\$\{__(rate_interval|interval|range)\}`), "5m"},
	{regexp.MustCompile(`\$__(interval_ms|range_s|range_ms)\b`), "300"},
	{regexp.MustCompile(`\$\{?[A-Za-z_][A-Za-z0-9_]*(:[a-z]+)?\}?`), "example"},
}

// concrete replaces Grafana variables with values PromQL accepts.
func concrete(expr string) string {
	for _, v := range grafanaVars {
		expr = v.re.ReplaceAllString(expr, v.with)
	}
	return expr
}

var labelValuesQuery = regexp.MustCompile(`^\s*label_values\(\s*(.+?)\s*,\s*[A-Za-z_][A-Za-z0-9_]*\s*\)\s*$`)

// dashboardExpressions collects every "expr" of every panel target and
// the metric of every label_values() variable.
func dashboardExpressions(t *testing.T) []expression {
	t.Helper()
	files, _ := filepath.Glob(rootPath("deploy", "grafana", "dashboards", "*.json"))
	if len(files) < 3 {
		t.Fatalf("want the overview, media fleet and bus dashboards, found %v", files)
	}
	var out []expression
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var dash map[string]any
		if err := json.Unmarshal(data, &dash); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		name := filepath.Base(f)
		if dash["uid"] == nil || dash["title"] == nil {
			t.Errorf("%s: a provisioned dashboard needs a uid and a title", name)
		}
		var walk func(path string, v any)
		walk = func(path string, v any) {
			switch v := v.(type) {
			case map[string]any:
				for k, c := range v {
					if s, ok := c.(string); ok && k == "expr" {
						out = append(out, expression{name + " " + path, s})
						continue
					}
					if k == "query" {
						q := ""
						switch c := c.(type) {
						case string:
							q = c
						case map[string]any:
							q, _ = c["query"].(string)
						}
						if m := labelValuesQuery.FindStringSubmatch(q); m != nil {
							out = append(out, expression{name + " variable " + path, m[1]})
						}
					}
					walk(path+"."+k, c)
				}
			case []any:
				for i, c := range v {
					title := ""
					if m, ok := c.(map[string]any); ok {
						title, _ = m["title"].(string)
						if title == "" {
							title, _ = m["name"].(string)
						}
					}
					if title != "" {
						walk(fmt.Sprintf("%s[%q]", path, title), c)
					} else {
						walk(fmt.Sprintf("%s[%d]", path, i), c)
					}
				}
			}
		}
		walk("", dash)
	}
	return out
}

// alertExpressions loads the rules with Prometheus's own rule loader
// (which validates expressions, durations and templates).
func alertExpressions(t *testing.T) []expression {
	t.Helper()
	file := rootPath("deploy", "prometheus", "alerts.yml")
	groups, errs := rulefmt.ParseFile(file, false, model.UTF8Validation, promParser, slog.New(slog.DiscardHandler))
	for _, err := range errs {
		t.Errorf("alerts.yml: %v", err)
	}
	if groups == nil {
		t.FailNow()
	}
	var out []expression
	for _, g := range groups.Groups {
		for _, r := range g.Rules {
			name := r.Alert
			if name == "" {
				name = r.Record
			}
			out = append(out, expression{"alerts.yml " + g.Name + "/" + name, r.Expr})
		}
	}
	return out
}

// metricNames parses expr and returns the metric names it selects.
func metricNames(expr string) ([]string, error) {
	e, err := promParser.ParseExpr(expr)
	if err != nil {
		return nil, err
	}
	var names []string
	parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
		if vs, ok := n.(*parser.VectorSelector); ok {
			name := vs.Name
			for _, m := range vs.LabelMatchers {
				if m.Name == model.MetricNameLabel {
					name = m.Value
				}
			}
			if name != "" {
				names = append(names, name)
			}
		}
		return nil
	})
	return names, nil
}

func TestAlertRulesAndDashboardsParse(t *testing.T) {
	exprs := append(alertExpressions(t), dashboardExpressions(t)...)
	if len(exprs) < 20 {
		t.Fatalf("only %d expressions found", len(exprs))
	}
	for _, e := range exprs {
		if _, err := metricNames(concrete(e.expr)); err != nil {
			t.Errorf("%s: %q: %v", e.where, e.expr, err)
		}
	}
}

// TestMetricsExist starts the services on loopback, scrapes /metrics and
// checks that every metric a dashboard or alert uses is served.
func TestMetricsExist(t *testing.T) {
	served := map[string]bool{}
	busPort := freePort(t)
	mediaHTTP := freePort(t)
	// The compose configuration, moved onto free loopback ports.
	stop := startService(t, media, rootPath("deploy", "compose", "media-1.yaml"), map[string]string{
		"MEDIA_HTTP_ADDR":              fmt.Sprintf("127.0.0.1:%d", mediaHTTP),
		"MEDIA_BUS_URL":                "",
		"MEDIA_BUS_EMBEDDED_PORT":      strconv.Itoa(busPort),
		"MEDIA_BUS_EMBEDDED_STORE_DIR": t.TempDir(),
		"MEDIA_NODE_ID":                "deploy-check",
		"MEDIA_RTP_PORT_MIN":           "47000",
		"MEDIA_RTP_PORT_MAX":           "47099",
		"MEDIA_LOG_LEVEL":              "warn",
	})
	defer stop()
	scrape(t, "media", fmt.Sprintf("http://127.0.0.1:%d", mediaHTTP), served)

	proxyHTTP := freePort(t)
	proxyStarted := false
	t.Run("proxy", func(t *testing.T) {
		stopProxy := startService(t, proxy, rootPath("deploy", "compose", "proxy.yaml"), map[string]string{
			"PROXY_HTTP_ADDR":       fmt.Sprintf("127.0.0.1:%d", proxyHTTP),
			"PROXY_BUS_URL":         fmt.Sprintf("nats://127.0.0.1:%d", busPort),
			"PROXY_SIP_LISTEN_ADDR": fmt.Sprintf("127.0.0.1:%d", freePort(t)),
			"PROXY_LOG_LEVEL":       "warn",
		})
		defer stopProxy()
		scrape(t, "proxy", fmt.Sprintf("http://127.0.0.1:%d", proxyHTTP), served)
		proxyStarted = true
	})

	missing := map[string][]string{}
	for _, e := range append(alertExpressions(t), dashboardExpressions(t)...) {
		names, err := metricNames(concrete(e.expr))
		if err != nil {
			continue // reported by TestAlertRulesAndDashboardsParse
		}
		for _, n := range names {
			if !served[n] && !syntheticMetrics[n] {
				missing[n] = append(missing[n], e.where)
			}
		}
	}
	if len(missing) == 0 {
		return
	}
	var names []string
	for n := range missing {
		names = append(names, n)
	}
	sort.Strings(names)
	var b strings.Builder
	for _, n := range names {
		uses := slices.Compact(missing[n])
		fmt.Fprintf(&b, "  %s (used by %d: %s)\n", n, len(uses), uses[0])
	}
	note := ""
	if !proxyStarted {
		note = " (the proxy did not run, so its metrics could not be seen)"
	}
	t.Errorf("metrics used by dashboards/alerts but not served by an idle service%s.\n"+
		"A vector with no observed label values is absent from /metrics: pre-initialise its labels.\n%s", note, b.String())
}

// startService runs the built binary with a config file and env until the
// returned stop.
func startService(t *testing.T, s service, config string, env map[string]string) func() {
	t.Helper()
	bin := binary(t, s)
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, bin, "-config", config)
	cmd.Env = cleanEnv()
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	logs, err := os.CreateTemp(t.TempDir(), s.name+"-*.log")
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logs, logs
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	return func() {
		// Two signals: drain, then stop at once.
		_ = cmd.Process.Signal(os.Interrupt)
		time.Sleep(50 * time.Millisecond)
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
		}
		if t.Failed() {
			out, _ := os.ReadFile(logs.Name())
			t.Logf("%s output:\n%s", s.name, out)
		}
	}
}

// scrape waits for the service to be ready and records its metric names,
// with the _bucket/_sum/_count series of histograms and summaries.
func scrape(t *testing.T, name, base string, served map[string]bool) {
	t.Helper()
	client := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := client.Get(base + "/readyz")
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not ready at %s/readyz after 20s (last error %v)", name, base, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, path := range []string{"/livez", "/healthz"} {
		resp, err := client.Get(base + path)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Errorf("%s: %s%s: %v", name, base, path, err)
		}
		if resp != nil {
			_ = resp.Body.Close()
		}
	}
	// Let a heartbeat or two pass so the fleet gauges have values.
	time.Sleep(1500 * time.Millisecond)
	resp, err := client.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	tp := expfmt.NewTextParser(model.UTF8Validation)
	families, err := tp.TextToMetricFamilies(strings.NewReader(string(body)))
	if err != nil {
		t.Fatalf("%s: parse /metrics: %v", name, err)
	}
	for n, f := range families {
		served[n] = true
		switch f.GetType() {
		case dto.MetricType_HISTOGRAM, dto.MetricType_GAUGE_HISTOGRAM:
			served[n+"_bucket"], served[n+"_sum"], served[n+"_count"] = true, true, true
		case dto.MetricType_SUMMARY:
			served[n+"_sum"], served[n+"_count"] = true, true
		}
	}
}

// prometheusConfig is the part of prometheus.yml the checks read.
type prometheusConfig struct {
	RuleFiles     []string `json:"rule_files"`
	ScrapeConfigs []struct {
		JobName       string `json:"job_name"`
		StaticConfigs []struct {
			Targets []string `json:"targets"`
		} `json:"static_configs"`
	} `json:"scrape_configs"`
}

func loadPrometheusConfig(t *testing.T) prometheusConfig {
	t.Helper()
	data, err := os.ReadFile(rootPath("deploy", "prometheus", "prometheus.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var cfg prometheusConfig
	if err := yaml.Unmarshal(data, &cfg); err != nil {
		t.Fatalf("prometheus.yml: %v", err)
	}
	if len(cfg.RuleFiles) == 0 {
		t.Error("prometheus.yml loads no rule files")
	}
	return cfg
}
