package app

import (
	"strings"
	"testing"
)

func TestRuntimeConfigValidate(t *testing.T) {
	tests := []struct {
		name    string
		runtime RuntimeConfig
		wantErr string
	}{
		{name: "defaults", runtime: Defaults().Runtime},
		{name: "collection off", runtime: RuntimeConfig{GCPercent: -1}},
		{name: "negative percentage", runtime: RuntimeConfig{GCPercent: -5}, wantErr: "runtime.gc_percent"},
		{name: "negative memory limit", runtime: RuntimeConfig{GCPercent: DefaultGCPercent, MemoryLimitMB: -1}, wantErr: "runtime.memory_limit_mb"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := Defaults()
			cfg.Runtime = tc.runtime
			err := cfg.Validate()
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("error %v, want one naming %s", err, tc.wantErr)
			}
		})
	}
	if got := Defaults().Runtime.GCPercent; got != DefaultGCPercent {
		t.Errorf("default gc_percent %d, want %d", got, DefaultGCPercent)
	}
}
