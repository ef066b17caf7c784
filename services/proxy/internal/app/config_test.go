package app

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// cleanEnv hides every proxy setting of the environment the test runs in,
// restored when it ends.
func cleanEnv(t *testing.T) {
	t.Helper()
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(name, EnvPrefix+"_") || name == "NATS_URL" {
			t.Setenv(name, "")
			os.Unsetenv(name)
		}
	}
}

func writeConfig(t *testing.T, text string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "proxy.yaml")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestLoadDefaults(t *testing.T) {
	cleanEnv(t)
	cfg, err := Load("")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.HTTP.Addr != DefaultHTTPAddr || cfg.Bus.URL != "" || cfg.Media.Mode != "anchor" {
		t.Fatalf("defaults %+v", cfg)
	}
}

// Every override the README and the deploy manifests use, and one of
// each kind of value, must reach its field.
func TestLoadEnvironmentOverrides(t *testing.T) {
	const file = "bus:\n  url: nats://file:4222\nsip:\n  domains: [file.example]\n"
	tests := []struct {
		env   map[string]string
		check func(Config) bool
	}{
		{map[string]string{"NATS_URL": "nats://nats:4222"}, func(c Config) bool { return c.Bus.URL == "nats://nats:4222" }},
		{map[string]string{"PROXY_BUS_URL": "nats://own:4222"}, func(c Config) bool { return c.Bus.URL == "nats://own:4222" }},
		{map[string]string{"PROXY_BUS_URL": "nats://own:4222", "NATS_URL": "nats://nats:4222"}, func(c Config) bool { return c.Bus.URL == "nats://own:4222" }},
		{map[string]string{"PROXY_BUS_URL": "", "NATS_URL": "nats://nats:4222"}, func(c Config) bool { return c.Bus.URL == "nats://nats:4222" }},
		{map[string]string{"PROXY_HTTP_ADDR": "0.0.0.0:9201"}, func(c Config) bool { return c.HTTP.Addr == "0.0.0.0:9201" }},
		{map[string]string{"PROXY_LOG_LEVEL": "warn"}, func(c Config) bool { return c.Log.Level == "warn" }},
		{map[string]string{"PROXY_LOG_FORMAT": "console"}, func(c Config) bool { return c.Log.Format == "console" }},
		{map[string]string{"PROXY_SIP_LISTEN_ADDR": "0.0.0.0:5070"}, func(c Config) bool { return c.SIP.ListenAddr == "0.0.0.0:5070" }},
		{map[string]string{"PROXY_SIP_ADVERTISE_HOST": "sip.example.com"}, func(c Config) bool { return c.SIP.AdvertiseHost == "sip.example.com" }},
		{map[string]string{"PROXY_SIP_DOMAINS": "sip.example.com, example.com"}, func(c Config) bool {
			return slices.Equal(c.SIP.Domains, []string{"sip.example.com", "example.com"})
		}},
		{map[string]string{"PROXY_SIP_AUTH_NONCE_SECRET": "s3cret"}, func(c Config) bool { return c.SIP.Auth.NonceSecret == "s3cret" }},
		{map[string]string{"PROXY_SIP_REPLICA_ADDR": "10.0.0.7:5060", "PROXY_SIP_AUTH_NONCE_SECRET": "s3cret"}, func(c Config) bool {
			return c.SIP.ReplicaAddr == "10.0.0.7:5060"
		}},
		{map[string]string{"PROXY_SIP_INVITE_TIMEOUT": "200s"}, func(c Config) bool { return c.SIP.InviteTimeout == 200*time.Second }},
		{map[string]string{"PROXY_MEDIA_MODE": "bypass"}, func(c Config) bool { return c.Media.Mode == "bypass" }},
		{map[string]string{"PROXY_MEDIA_RETRY_AFTER": "9s"}, func(c Config) bool { return c.Media.RetryAfter == 9*time.Second }},
		{map[string]string{"PROXY_MEDIA_CLAIM_MAX_ATTEMPTS": "4"}, func(c Config) bool { return c.Media.Claim.MaxAttempts == 4 }},
		{map[string]string{"PROXY_LOCATION_BUCKET": "loc"}, func(c Config) bool { return c.Location.Bucket == "loc" }},
		{map[string]string{"PROXY_RUNTIME_GC_PERCENT": "150"}, func(c Config) bool { return c.Runtime.GCPercent == 150 }},
		{map[string]string{"PROXY_BUS_REPLICAS": "3"}, func(c Config) bool { return c.Bus.Replicas == 3 }},
		{map[string]string{"PROXY_SIP_TCP_IDLE_TIMEOUT": "2h"}, func(c Config) bool { return c.SIP.TCPIdleTimeout == 2*time.Hour }},
		{map[string]string{"PROXY_SIP_GATEWAY_FAILURE_HOLD_DOWN": "1m"}, func(c Config) bool { return c.SIP.GatewayFailure.HoldDown == time.Minute }},
		{map[string]string{"PROXY_SIP_GATEWAY_FAILURE_DOWN_AFTER": "3"}, func(c Config) bool { return c.SIP.GatewayFailure.DownAfter == 3 }},
		{map[string]string{"PROXY_SIP_GATEWAY_FAILURE_DISABLED": "true"}, func(c Config) bool { return c.SIP.GatewayFailure.Disabled }},
		{map[string]string{"PROXY_RATE_LIMIT_DISABLED": "true"}, nil}, // not a setting: must change nothing and fail nothing
	}
	for _, tc := range tests {
		var names []string
		for k, v := range tc.env {
			names = append(names, k+"="+v)
		}
		slices.Sort(names)
		t.Run(strings.Join(names, ","), func(t *testing.T) {
			cleanEnv(t)
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			cfg, err := Load(writeConfig(t, file))
			if err != nil {
				t.Fatal(err)
			}
			if tc.check != nil && !tc.check(cfg) {
				t.Fatalf("override not applied: %+v", cfg)
			}
		})
	}
}

// An empty NATS_URL (a manifest declaring it with no value) must leave the
// file's bus alone: an empty URL runs an embedded bus no other replica sees.
func TestLoadEmptyNATSURLKeepsFileBus(t *testing.T) {
	cleanEnv(t)
	t.Setenv("NATS_URL", "")
	cfg, err := Load(writeConfig(t, "bus:\n  url: nats://file:4222\n"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Bus.URL != "nats://file:4222" {
		t.Fatalf("bus.url %q: an empty NATS_URL replaced the file's bus", cfg.Bus.URL)
	}
}

// PROXY_BUS_URL set empty is deliberate: it clears the file's bus for an
// embedded one (the deploy checks rely on it), unless NATS_URL names one.
func TestLoadEmptyOwnBusURL(t *testing.T) {
	cleanEnv(t)
	t.Setenv("PROXY_BUS_URL", "")
	cfg, err := Load(writeConfig(t, "bus:\n  url: nats://file:4222\n"))
	if err != nil || cfg.Bus.URL != "" {
		t.Fatalf("got %v, bus.url %q; want it cleared", err, cfg.Bus.URL)
	}
}

func TestLoadRejects(t *testing.T) {
	tests := []struct {
		name, file string
		env        map[string]string
		want       []string
	}{
		{name: "unknown top-level key", file: "medai:\n  mode: bypass\n", want: []string{"medai"}},
		{name: "unknown nested key", file: "sip:\n  listen_adr: 0.0.0.0:5060\n", want: []string{"listen_adr"}},
		{name: "unknown key in a list item", file: "sip:\n  dialplan:\n    - name: a\n      prefx: \"1\"\n", want: []string{"prefx"}},
		{name: "unknown key deep down", file: "media:\n  claim:\n    max_attempt: 3\n", want: []string{"max_attempt"}},
		{name: "second document", file: "log:\n  level: info\n---\nhttp:\n  addr: 0.0.0.0:9101\n", want: []string{"second YAML document"}},
		{name: "duration without unit in file", file: "media:\n  retry_after: 5\n", want: []string{"line 2", "time.Duration"}},
		{name: "duration without unit", env: map[string]string{"PROXY_MEDIA_RETRY_AFTER": "5"}, want: []string{"PROXY_MEDIA_RETRY_AFTER", "media.retry_after"}},
		{name: "bad duration", env: map[string]string{"PROXY_SIP_INVITE_TIMEOUT": "3 minutes"}, want: []string{"PROXY_SIP_INVITE_TIMEOUT"}},
		{name: "empty number", env: map[string]string{"PROXY_RUNTIME_GC_PERCENT": ""}, want: []string{"PROXY_RUNTIME_GC_PERCENT"}},
		{name: "bad number", env: map[string]string{"PROXY_RUNTIME_GC_PERCENT": "lots"}, want: []string{"PROXY_RUNTIME_GC_PERCENT", "runtime.gc_percent"}},
		{name: "number out of range", env: map[string]string{"PROXY_SIP_MAX_MESSAGE_SIZE": "99999999999999999999"}, want: []string{"PROXY_SIP_MAX_MESSAGE_SIZE"}},
		{name: "bad float", env: map[string]string{"PROXY_SIP_RATE_LIMIT_REQUESTS_PER_SECOND": "fast"}, want: []string{"PROXY_SIP_RATE_LIMIT_REQUESTS_PER_SECOND"}},
		{name: "bad bool", env: map[string]string{"PROXY_SIP_RATE_LIMIT_DISABLED": "sometimes"}, want: []string{"PROXY_SIP_RATE_LIMIT_DISABLED"}},
		{name: "unknown log level", env: map[string]string{"PROXY_LOG_LEVEL": "verbose"}, want: []string{"log.level"}},
		{name: "numeric log level", env: map[string]string{"PROXY_LOG_LEVEL": "100"}, want: []string{"log.level"}},
		{name: "http addr without colon", env: map[string]string{"PROXY_HTTP_ADDR": "9101"}, want: []string{"http.addr"}},
		{name: "memory limit overflowing bytes", file: "runtime:\n  memory_limit_mb: 17592186044417\n", want: []string{"runtime.memory_limit_mb"}},
		{name: "idle timeout within timer c", env: map[string]string{"PROXY_SIP_TCP_IDLE_TIMEOUT": "120s"}, want: []string{"tcp_idle_timeout", "invite_timeout"}},
		{name: "first-message timeout too short", env: map[string]string{"PROXY_SIP_TCP_FIRST_MESSAGE_TIMEOUT": "50ms"}, want: []string{"tcp_first_message_timeout"}},
		{name: "cancel relay wait too long", env: map[string]string{"PROXY_SIP_CANCEL_RELAY_TIMEOUT": "10s"}, want: []string{"cancel_relay_timeout"}},
		{name: "no cancel relay slot", env: map[string]string{"PROXY_SIP_CANCEL_RELAY_MAX_PENDING": "-1"}, want: []string{"cancel_relay_max_pending"}},
		{name: "gateway failure code of the callee", file: "sip:\n  gateway_failure:\n    codes: [486]\n", want: []string{"gateway_failure.codes[0]"}},
		{name: "location max age not above the registrar's max expires", file: "location:\n  max_age: 1h\n", want: []string{"location.max_age", "sip.registrar.max_expires"}},
		{name: "registrar max expires reaching location max age", env: map[string]string{"PROXY_SIP_REGISTRAR_MAX_EXPIRES": "7200"}, want: []string{"location.max_age", "sip.registrar.max_expires"}},
		{name: "claim attempt longer than a bus request", file: "media:\n  claim:\n    attempt_timeout: 2s\n", want: []string{"media.claim.attempt_timeout", "bus.request_timeout"}},
		{name: "gateway failure codes from the environment", env: map[string]string{"PROXY_SIP_GATEWAY_FAILURE_CODES": "503"}, want: []string{"sip.gateway_failure.codes"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cleanEnv(t)
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			path := ""
			if tc.file != "" {
				path = writeConfig(t, tc.file)
			}
			_, err := Load(path)
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not name %s", err, w)
				}
			}
		})
	}
}

func TestHTTPAddrForms(t *testing.T) {
	for _, addr := range []string{":9101", "localhost:9101", "127.0.0.1:9101", "0.0.0.0:9101", "[::]:9101", "proxy-0.proxy:9101"} {
		cfg := Defaults()
		cfg.HTTP.Addr = addr
		if err := cfg.Validate(); err != nil {
			t.Errorf("http.addr %q refused: %v", addr, err)
		}
	}
	for _, addr := range []string{"", "9101", "localhost", ":http", ":70000"} {
		cfg := Defaults()
		cfg.HTTP.Addr = addr
		if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "http.addr") {
			t.Errorf("http.addr %q: %v, want an error naming http.addr", addr, err)
		}
	}
}

// A group's failure block in YAML: set fields override the global policy,
// unset ones inherit it, and "codes: []" counts no codes at all.
func TestLoadGatewayFailurePerGroup(t *testing.T) {
	cleanEnv(t)
	const file = `sip:
  gateway_failure:
    hold_down: 45s
    codes: [500, 503]
  gateway_groups:
    - name: inherits
      gateways: [{addr: "192.0.2.1:5060"}]
    - name: own
      gateways: [{addr: "192.0.2.2:5060"}]
      failure:
        down_after: 2
        codes: []
`
	cfg, err := Load(writeConfig(t, file))
	if err != nil {
		t.Fatal(err)
	}
	sip := cfg.SIP.WithDefaults()
	inherits, own := sip.GatewayGroups[0].Failure, sip.GatewayGroups[1].Failure
	if inherits.HoldDown != 45*time.Second || !slices.Equal(inherits.Codes, []int{500, 503}) || inherits.DownAfter != 1 {
		t.Errorf("inheriting group: %+v", inherits)
	}
	if own.HoldDown != 45*time.Second || own.DownAfter != 2 || own.Codes == nil || len(own.Codes) != 0 {
		t.Errorf("group with its own block: %+v", own)
	}
}

// The location bucket's max_age is a safety net under the sweeper: it
// must outlast the longest binding the registrar grants.
func TestLocationMaxAgeAgainstRegistrarExpiry(t *testing.T) {
	tests := []struct {
		name       string
		maxAge     time.Duration
		maxExpires int
		wantErr    bool
	}{
		{name: "defaults", wantErr: false},
		{name: "just above", maxAge: time.Hour + time.Second, maxExpires: 3600},
		{name: "equal", maxAge: time.Hour, maxExpires: 3600, wantErr: true},
		{name: "below", maxAge: 30 * time.Minute, wantErr: true},
		{name: "registrar raised past the default max age", maxExpires: 3 * 3600, wantErr: true},
		{name: "both raised", maxAge: 4 * time.Hour, maxExpires: 3 * 3600},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := Defaults()
			cfg.Location.MaxAge = tc.maxAge
			cfg.SIP.Registrar.MaxExpires = tc.maxExpires
			err := cfg.Validate()
			if tc.wantErr != (err != nil) {
				t.Fatalf("validate: %v, want error %v", err, tc.wantErr)
			}
			if err != nil && !strings.Contains(err.Error(), "location.max_age") {
				t.Fatalf("error %q does not name location.max_age", err)
			}
		})
	}
}
