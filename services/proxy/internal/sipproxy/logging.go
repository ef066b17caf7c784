package sipproxy

import (
	"context"
	"errors"
	"log/slog"
	"strings"

	"github.com/emiago/sipgo/sip"
	"github.com/rs/zerolog"
)

// sipgoLogHandler routes sipgo's slog output into our zerolog logger. sipgo's
// transports log every unparsable datagram at Error with the raw bytes; that
// would let anyone flood our logs, so those records are counted and demoted.
// So are the reports of a stream connection our read filter ended (a source
// over its rate, counted there): one per connection the source opens, and
// sipgo's notes that a connection's reference count went below zero, which
// it then treats as zero: its own bookkeeping, nothing an operator can act on.
type sipgoLogHandler struct {
	slog.Handler
	onParseFailure func()
}

// RouteSipgoDefaultLogs sends what sipgo logs outside any user agent (its
// connection bookkeeping logs through a process-wide default, slog's own
// unless set) into log, as the rest of sipgo's output goes. For main, before
// anything starts: the default is a global sipgo reads unguarded.
func RouteSipgoDefaultLogs(log zerolog.Logger) {
	sip.SetDefaultLogger(newSipgoLogger(log, func() {}))
}

func newSipgoLogger(log zerolog.Logger, onParseFailure func()) *slog.Logger {
	base := zerolog.NewSlogHandler(log.With().Str("component", "sipgo").Logger())
	return slog.New(&sipgoLogHandler{Handler: base, onParseFailure: onParseFailure})
}

func (h *sipgoLogHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Message == "failed to parse" {
		h.onParseFailure()
		demoted := slog.NewRecord(r.Time, slog.LevelDebug, r.Message, r.PC)
		r.Attrs(func(a slog.Attr) bool {
			if a.Key != "data" {
				demoted.AddAttrs(a)
			}
			return true
		})
		if !h.Handler.Enabled(ctx, slog.LevelDebug) {
			return nil
		}
		return h.Handler.Handle(ctx, demoted)
	}
	if r.Level > slog.LevelDebug && (strings.Contains(r.Message, "ref went negative") ||
		r.Message == "Read filter error" && rateLimitedStream(r)) {
		if !h.Handler.Enabled(ctx, slog.LevelDebug) {
			return nil
		}
		demoted := r.Clone()
		demoted.Level = slog.LevelDebug
		return h.Handler.Handle(ctx, demoted)
	}
	return h.Handler.Handle(ctx, r)
}

// rateLimitedStream reports a record of the error the read filter ends a
// stream connection with; any other filter failure stays as loud as sipgo
// made it.
func rateLimitedStream(r slog.Record) bool {
	found := false
	r.Attrs(func(a slog.Attr) bool {
		if err, ok := a.Value.Any().(error); ok && a.Key == "error" && errors.Is(err, errStreamRateLimited) {
			found = true
			return false
		}
		return true
	})
	return found
}

func (h *sipgoLogHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &sipgoLogHandler{Handler: h.Handler.WithAttrs(attrs), onParseFailure: h.onParseFailure}
}

func (h *sipgoLogHandler) WithGroup(name string) slog.Handler {
	return &sipgoLogHandler{Handler: h.Handler.WithGroup(name), onParseFailure: h.onParseFailure}
}
