// Package explorer is the twin explorer: a web UI, served by the hub at
// /ui/, that signs in with a connection string and talks to the back-end
// API with SAS tokens it signs in the browser (WebCrypto). The key never
// leaves the browser: it is kept in the tab's session storage and used only
// to sign tokens, and the hub serves the explorer's files without
// authentication because they hold nothing secret.
//
// The files are embedded in the binary; building needs no Node toolchain.
package explorer

import (
	"embed"
	"io/fs"
	"net/http"
)

//go:embed static
var static embed.FS

// Prefix is the path the explorer is served under.
const Prefix = "/ui/"

// Handler serves the explorer's files under Prefix, with a content
// security policy that lets its pages load scripts and styles only from the
// hub and talk only to the hub.
func Handler() http.Handler {
	sub, err := fs.Sub(static, "static")
	if err != nil {
		panic("BUG: the explorer's embedded files are missing: " + err.Error())
	}
	files := http.StripPrefix(Prefix, http.FileServerFS(sub))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "+
			"connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cache-Control", "no-cache")
		files.ServeHTTP(w, r)
	})
}
