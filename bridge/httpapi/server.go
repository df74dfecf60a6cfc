package httpapi

import (
	"log/slog"
	"net/http"
	"time"
)

// Limits on what one HTTP client can hold. A request body is bounded by
// Config.MaxBody (413) and must arrive within Config.ReadTimeout, headers
// included (408, then the connection is closed).
const (
	// headerTimeout bounds reading a request's headers.
	headerTimeout = 10 * time.Second
	// idleTimeout closes keep-alive connections that send nothing.
	idleTimeout = 2 * time.Minute
	// maxHeaderBytes bounds a request's headers (a SAS token is about 200
	// bytes).
	maxHeaderBytes = 64 << 10
)

// Server returns an http.Server for the API with the limits above, for the
// caller to Serve on a listener and Shutdown. Responses have no write
// deadline: history and query pages may take long to compute, and change
// feeds set their own per write.
func (a *API) Server() *http.Server {
	srv := &http.Server{
		Handler:           a,
		ReadHeaderTimeout: min(headerTimeout, a.cfg.ReadTimeout),
		ReadTimeout:       a.cfg.ReadTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(a.log.Handler(), slog.LevelWarn),
	}
	// Shutdown waits for idle connections; change feeds end themselves.
	srv.RegisterOnShutdown(a.feeds.closeAll)
	return srv
}
