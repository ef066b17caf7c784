package obs

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/rs/zerolog"
)

func TestParseLevel(t *testing.T) {
	good := map[string]zerolog.Level{
		"":      zerolog.InfoLevel,
		"trace": zerolog.TraceLevel,
		"debug": zerolog.DebugLevel,
		"DEBUG": zerolog.DebugLevel,
		"info":  zerolog.InfoLevel,
		"Warn":  zerolog.WarnLevel,
		"error": zerolog.ErrorLevel,
	}
	for in, want := range good {
		if got, err := ParseLevel(in); err != nil || got != want {
			t.Errorf("ParseLevel(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	// zerolog takes all of these; none is a documented level, and "100"
	// or "disabled" would silence the service.
	for _, in := range []string{"warning", "verbose", "disabled", "panic", "fatal", "100", "2", "-1", " info"} {
		if _, err := ParseLevel(in); err == nil {
			t.Errorf("ParseLevel(%q) accepted", in)
		}
		if err := (LogConfig{Level: in}).Validate(); err == nil || !strings.Contains(err.Error(), "log.level") {
			t.Errorf("Validate with level %q: %v, want an error naming log.level", in, err)
		}
	}
}

func TestLogConfigValidateFormat(t *testing.T) {
	for _, f := range []string{"", "json", "console"} {
		if err := (LogConfig{Format: f}).Validate(); err != nil {
			t.Errorf("format %q: %v", f, err)
		}
	}
	if err := (LogConfig{Format: "text"}).Validate(); err == nil || !strings.Contains(err.Error(), "log.format") {
		t.Errorf("format text: %v, want an error naming log.format", err)
	}
}

func TestNewLogger(t *testing.T) {
	var buf bytes.Buffer
	log := NewLogger(LogConfig{}, "proxy", &buf)
	log.Debug().Msg("hidden at info")
	log.Info().Msg("shown")
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 1 {
		t.Fatalf("default level wrote %q, want the info line only", buf.String())
	}
	var rec map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &rec); err != nil {
		t.Fatal(err)
	}
	if rec["service"] != "proxy" || rec["message"] != "shown" || rec["time"] == nil {
		t.Fatalf("record %v", rec)
	}

	buf.Reset()
	debug := NewLogger(LogConfig{Level: "debug", Format: "console"}, "media", &buf)
	debug.Debug().Msg("detail")
	if !strings.Contains(buf.String(), "detail") || strings.HasPrefix(buf.String(), "{") {
		t.Fatalf("console debug logger wrote %q", buf.String())
	}
}
