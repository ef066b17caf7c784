package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

type codecName string

type sample struct {
	Name    string        `yaml:"name"`
	Port    int           `yaml:"port"`
	Timeout time.Duration `yaml:"timeout"`
	Enabled bool          `yaml:"enabled"`
	Ratio   float64       `yaml:"ratio"`
	Codecs  []codecName   `yaml:"codecs"`
	Bus     struct {
		URL string `yaml:"url"`
	} `yaml:"bus"`
	Internal string `yaml:"-"`
}

func TestLoadFileThenEnvironment(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "c.yaml")
	if err := os.WriteFile(path, []byte("name: from-file\nport: 5060\nbus:\n  url: nats://file:4222\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("SVC_PORT", "5070")
	t.Setenv("SVC_BUS_URL", "nats://env:4222")
	t.Setenv("SVC_TIMEOUT", "250ms")
	t.Setenv("SVC_CODECS", "PCMU, opus")
	t.Setenv("SVC_ENABLED", "true")
	cfg := sample{Name: "default", Ratio: 0.5}
	if err := Load(path, "svc", &cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.Name != "from-file" || cfg.Port != 5070 || cfg.Bus.URL != "nats://env:4222" || cfg.Timeout != 250*time.Millisecond ||
		!cfg.Enabled || cfg.Ratio != 0.5 || len(cfg.Codecs) != 2 || cfg.Codecs[1] != "opus" {
		t.Fatalf("loaded %+v", cfg)
	}
}

func TestLoadRejects(t *testing.T) {
	cases := []struct {
		name, file, envKey, envVal, want string
	}{
		{name: "unknown key", file: "nmae: typo\n", want: "nmae"},
		{name: "wrong type", file: "port: many\n", want: "many"},
		{name: "bad env int", envKey: "SVC_PORT", envVal: "x", want: "port"},
		{name: "bad env duration", envKey: "SVC_TIMEOUT", envVal: "soon", want: "timeout"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := ""
			if tc.file != "" {
				path = filepath.Join(t.TempDir(), "c.yaml")
				if err := os.WriteFile(path, []byte(tc.file), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			if tc.envKey != "" {
				t.Setenv(tc.envKey, tc.envVal)
			}
			var cfg sample
			err := Load(path, "svc", &cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error naming %q", err, tc.want)
			}
		})
	}
}

func TestEmptyFileIsNoSettings(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := sample{Port: 1}
	if err := Load(path, "svc", &cfg); err != nil || cfg.Port != 1 {
		t.Fatalf("empty file: %v %+v", err, cfg)
	}
}

// A service's own variable set empty is deliberate: it clears a string (the
// way to swap the file's bus for an embedded one) and is no number.
func TestEmptyOwnVariable(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(path, []byte("port: 5060\nbus:\n  url: nats://file:4222\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("SVC_BUS_URL", "")
	var cfg sample
	if err := Load(path, "svc", &cfg); err != nil || cfg.Bus.URL != "" || cfg.Port != 5060 {
		t.Fatalf("got %v %+v, want bus.url cleared", err, cfg)
	}
	t.Setenv("SVC_PORT", "")
	if err := Load(path, "svc", &cfg); err == nil || !strings.Contains(err.Error(), "SVC_PORT") {
		t.Fatalf("empty SVC_PORT: %v, want an error naming it", err)
	}
}

func TestLookupEnv(t *testing.T) {
	t.Setenv("SVC_EMPTY", "")
	t.Setenv("SVC_SET", "x")
	if v, ok := LookupEnv("SVC_EMPTY"); ok || v != "" {
		t.Errorf("empty variable: %q %v, want unset", v, ok)
	}
	if v, ok := LookupEnv("SVC_SET"); !ok || v != "x" {
		t.Errorf("set variable: %q %v", v, ok)
	}
	if _, ok := LookupEnv("SVC_NEVER_SET_ANYWHERE"); ok {
		t.Error("unset variable reported set")
	}
}

func TestDecodeDocuments(t *testing.T) {
	cases := []struct {
		name, file, want string
	}{
		{name: "comments only", file: "# nothing set yet\n"},
		{name: "leading marker", file: "---\nname: a\n"},
		{name: "trailing marker", file: "name: a\n---\n"},
		{name: "trailing null document", file: "name: a\n---\n~\n"},
		// The second document would otherwise be ignored, its typo too.
		{name: "second document", file: "name: a\n---\nnmae: b\n", want: "second YAML document"},
		{name: "document after an empty one", file: "name: a\n---\n---\nnmae: b\n", want: "line 3"},
		{name: "second document of known keys", file: "name: a\n---\nport: 1\n", want: "line 2"},
		{name: "broken second document", file: "name: a\n---\nport: [\n", want: "yaml"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var cfg sample
			err := Decode([]byte(tc.file), &cfg)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestBadEnvironmentValuesNameTheVariable(t *testing.T) {
	type numbers struct {
		Count  uint8         `yaml:"count"`
		Ratio  float32       `yaml:"ratio"`
		On     bool          `yaml:"on"`
		Wait   time.Duration `yaml:"wait"`
		Ports  []int         `yaml:"ports"`
		Nested struct {
			Limit int64 `yaml:"limit"`
		} `yaml:"nested"`
	}
	cases := []struct{ name, value string }{
		{"SVC_COUNT", "256"},
		{"SVC_COUNT", "-1"},
		{"SVC_RATIO", "half"},
		{"SVC_ON", "yes please"},
		{"SVC_WAIT", "5"}, // no unit: 5 ns is never meant
		{"SVC_WAIT", "5 s"},
		{"SVC_PORTS", "1,2"},
		{"SVC_NESTED_LIMIT", "1e3"},
	}
	for _, tc := range cases {
		t.Run(tc.name+"="+tc.value, func(t *testing.T) {
			var cfg numbers
			lookup := func(name string) (string, bool) {
				if name == tc.name {
					return tc.value, true
				}
				return "", false
			}
			err := ApplyEnv("svc", &cfg, lookup)
			if err == nil || !strings.Contains(err.Error(), tc.name) {
				t.Fatalf("got %v, want an error naming %s", err, tc.name)
			}
		})
	}
}
