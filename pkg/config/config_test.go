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
