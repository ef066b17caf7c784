// Package obs holds what every service needs to be observed: the logger,
// and the HTTP server for metrics and health probes.
package obs

import (
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/rs/zerolog"
)

// LogConfig selects the log level and format.
type LogConfig struct {
	// Level: trace, debug, info, warn or error. Default info.
	Level string `yaml:"level"`
	// Format: json (default, for collectors) or console (for people).
	Format string `yaml:"format"`
}

// ParseLevel reads a level name, in any case; empty is info. Only the
// documented names are taken: zerolog's own parser also takes "disabled",
// "panic", "fatal" and bare numbers, so a stray "100" or "2" would turn
// logging off or change it without a word.
func ParseLevel(s string) (zerolog.Level, error) {
	switch strings.ToLower(s) {
	case "":
		return zerolog.InfoLevel, nil
	case "trace":
		return zerolog.TraceLevel, nil
	case "debug":
		return zerolog.DebugLevel, nil
	case "info":
		return zerolog.InfoLevel, nil
	case "warn":
		return zerolog.WarnLevel, nil
	case "error":
		return zerolog.ErrorLevel, nil
	}
	return zerolog.NoLevel, fmt.Errorf("%q is not trace, debug, info, warn or error", s)
}

// Validate names a field that cannot work.
func (c LogConfig) Validate() error {
	if _, err := ParseLevel(c.Level); err != nil {
		return fmt.Errorf("log.level: %w", err)
	}
	switch c.Format {
	case "", "json", "console":
	default:
		return fmt.Errorf("log.format: %q is not json or console", c.Format)
	}
	return nil
}

// NewLogger builds the process logger with the service name on every line.
func NewLogger(c LogConfig, service string, w io.Writer) zerolog.Logger {
	if w == nil {
		w = os.Stderr
	}
	if c.Format == "console" {
		w = zerolog.ConsoleWriter{Out: w, TimeFormat: time.TimeOnly}
	}
	// Validate has refused a bad level already; info is the safe side for
	// a caller that skipped it.
	level, err := ParseLevel(c.Level)
	if err != nil {
		level = zerolog.InfoLevel
	}
	return zerolog.New(w).Level(level).With().Timestamp().Str("service", service).Logger()
}
