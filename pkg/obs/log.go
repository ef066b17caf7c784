// Package obs holds what every service needs to be observed: the logger,
// and the HTTP server for metrics and health probes.
package obs

import (
	"fmt"
	"io"
	"os"
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

// Validate names a field that cannot work.
func (c LogConfig) Validate() error {
	if c.Level != "" {
		if _, err := zerolog.ParseLevel(c.Level); err != nil {
			return fmt.Errorf("log.level: %w", err)
		}
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
	level, err := zerolog.ParseLevel(c.Level)
	if err != nil || c.Level == "" {
		level = zerolog.InfoLevel
	}
	return zerolog.New(w).Level(level).With().Timestamp().Str("service", service).Logger()
}
