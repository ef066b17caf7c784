package sipproxy

import (
	"context"
	"log/slog"

	"github.com/rs/zerolog"
)

// sipgoLogHandler routes sipgo's slog output into our zerolog logger. sipgo's
// transports log every unparsable datagram at Error with the raw bytes; that
// would let anyone flood our logs, so those records are counted and demoted.
type sipgoLogHandler struct {
	slog.Handler
	onParseFailure func()
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
	return h.Handler.Handle(ctx, r)
}

func (h *sipgoLogHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &sipgoLogHandler{Handler: h.Handler.WithAttrs(attrs), onParseFailure: h.onParseFailure}
}

func (h *sipgoLogHandler) WithGroup(name string) slog.Handler {
	return &sipgoLogHandler{Handler: h.Handler.WithGroup(name), onParseFailure: h.onParseFailure}
}
