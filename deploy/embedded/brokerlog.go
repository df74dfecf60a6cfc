package embedded

import (
	"context"
	"log/slog"
)

// connectionEndLog adapts the broker's log: mochi's TCP listener logs every
// connection that ends with an error (a device that went away: EOF, reset,
// a refused CONNECT) as a warning with an empty message, one line per device
// and reconnect. Those are routine for a fleet; they become debug lines that
// say what they are. Refusals are counted in twinhub_mqtt_auth_failures_total.
type connectionEndLog struct{ slog.Handler }

func (h connectionEndLog) Handle(ctx context.Context, r slog.Record) error {
	if r.Message == "" {
		r2 := slog.NewRecord(r.Time, slog.LevelDebug, "client connection ended", r.PC)
		r.Attrs(func(a slog.Attr) bool { r2.AddAttrs(a); return true })
		if !h.Handler.Enabled(ctx, r2.Level) {
			return nil
		}
		r = r2
	}
	return h.Handler.Handle(ctx, r)
}

func (h connectionEndLog) WithAttrs(as []slog.Attr) slog.Handler {
	return connectionEndLog{h.Handler.WithAttrs(as)}
}

func (h connectionEndLog) WithGroup(name string) slog.Handler {
	return connectionEndLog{h.Handler.WithGroup(name)}
}
