package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"runtime"
	"runtime/debug"
	"sort"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"

	"github.com/twinhub/twinhub/bridge/httpapi"
)

// version is twinhub's release version, set at build time with
// -ldflags "-X main.version=1.2.3"; "dev" otherwise, in which case the
// module version `go install …@v1.2.3` records is used when there is one.
var version = "dev"

// buildIdentity is what the binary knows about its own build.
type buildIdentity struct {
	Version   string
	Revision  string // VCS commit, "unknown" when the build did not record one
	Modified  bool   // the work tree had uncommitted changes
	Time      string // commit time (RFC 3339), when recorded
	GoVersion string
}

// readBuildIdentity reads the -X version and the build information the Go
// toolchain embeds (go build records the VCS revision by default when it
// builds inside a Git work tree).
func readBuildIdentity() buildIdentity {
	id := buildIdentity{Version: version, Revision: "unknown", GoVersion: runtime.Version()}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return id
	}
	if id.Version == "dev" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		id.Version = bi.Main.Version
	}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			id.Revision = s.Value
		case "vcs.modified":
			id.Modified = s.Value == "true"
		case "vcs.time":
			id.Time = s.Value
		}
	}
	return id
}

// String is the line `twinhub version` prints.
func (id buildIdentity) String() string {
	rev := "revision " + id.Revision
	if id.Modified {
		rev += ", modified"
	}
	if id.Time != "" {
		rev += ", committed " + id.Time
	}
	return fmt.Sprintf("%s (%s, %s)", id.Version, rev, id.GoVersion)
}

func newVersionCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "print twinhub's version, the VCS revision it was built from and the Go version",
		Args:  noArgs,
		Run:   func(c *cobra.Command, _ []string) { fmt.Fprintln(c.OutOrStdout(), "twinhub", readBuildIdentity()) },
	}
}

// registerBuildInfo exports twinhub_build_info{version,revision,goversion} 1.
func registerBuildInfo(reg prometheus.Registerer) {
	id := readBuildIdentity()
	rev := id.Revision
	if id.Modified {
		rev += "-modified"
	}
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: "twinhub", Name: "build_info",
		Help:        "Always 1; the labels say which build of twinhub runs.",
		ConstLabels: prometheus.Labels{"version": id.Version, "revision": rev, "goversion": id.GoVersion},
	}, func() float64 { return 1 }))
}

// certExpiryCollector exports when the certificate each TLS listener
// serves expires, read at scrape time from the listener's tls.Config.
type certExpiryCollector struct {
	desc      *prometheus.Desc
	listeners map[string]*tls.Config
}

// newCertExpiryCollector reports twinhub_tls_cert_expiry_timestamp_seconds
// for each named listener's first certificate.
func newCertExpiryCollector(listeners map[string]*tls.Config) prometheus.Collector {
	return &certExpiryCollector{
		desc: prometheus.NewDesc("twinhub_tls_cert_expiry_timestamp_seconds",
			"When the server certificate the listener serves expires (Unix time); renew it before then.", []string{"listener"}, nil),
		listeners: listeners,
	}
}

func (c *certExpiryCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *certExpiryCollector) Collect(ch chan<- prometheus.Metric) {
	names := make([]string, 0, len(c.listeners))
	for n := range c.listeners {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		cfg := c.listeners[n]
		if cfg == nil || len(cfg.Certificates) == 0 {
			continue
		}
		leaf := cfg.Certificates[0].Leaf
		if leaf == nil {
			var err error
			if leaf, err = x509.ParseCertificate(cfg.Certificates[0].Certificate[0]); err != nil {
				continue
			}
		}
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(leaf.NotAfter.Unix()), n)
	}
}

// defaultHealthcheckURL is /readyz on `twinhub run`'s HTTP address as
// TWINHUB_HTTP_ADDR sets it (an unspecified host such as 0.0.0.0 is asked
// on loopback), else on the clients' TWINHUB_SERVER, else on the default
// 127.0.0.1:8080.
func defaultHealthcheckURL() string {
	if env := os.Getenv("TWINHUB_HTTP_ADDR"); env != "" {
		if host, port, err := net.SplitHostPort(env); err == nil {
			if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
				host = "127.0.0.1"
			}
			return "http://" + net.JoinHostPort(host, port) + "/readyz"
		}
	}
	if server := os.Getenv("TWINHUB_SERVER"); server != "" {
		return strings.TrimSuffix(server, "/") + "/readyz"
	}
	return "http://127.0.0.1:8080/readyz"
}

func newHealthcheckCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "healthcheck",
		Short: "ask a running hub whether it is ready: exit status 0 if so, 1 if not, with a one-line reason",
		Long: `Ask a running hub's /readyz whether it is ready, for container health
checks (an image without curl): exit status 0 when it is ready or degraded
(a component such as ClickHouse is down but the hub takes writes), 1 when it
is not ready or does not answer. One line says why. The default URL is
/readyz on TWINHUB_HTTP_ADDR (the address 'twinhub run' reads), else on
TWINHUB_SERVER, else on 127.0.0.1:8080.`,
		Args: noArgs,
	}
	target := cmd.Flags().String("url", defaultHealthcheckURL(), "the hub's /readyz (or /livez) URL")
	timeout := cmd.Flags().Duration("timeout", 5*time.Second, "how long to wait for the answer")
	cmd.RunE = func(c *cobra.Command, _ []string) error {
		line, err := healthcheck(c.Context(), *target, *timeout)
		if err != nil {
			return err
		}
		fmt.Fprintln(c.OutOrStdout(), line)
		return nil
	}
	return cmd
}

// healthcheck asks target and returns the line to print when the hub is
// ready, or an error saying why it is not.
func healthcheck(ctx context.Context, target string, timeout time.Duration) (string, error) {
	u, err := url.Parse(target)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", fmt.Errorf("--url %q: give an http:// or https:// URL such as http://127.0.0.1:8080/readyz", target)
	}
	if timeout <= 0 {
		return "", fmt.Errorf("--timeout %s: must be positive", timeout)
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		return "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err
		}
		return "", fmt.Errorf("unreachable: %s: %v", target, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var body httpapi.ReadyzBody
	if json.Unmarshal(raw, &body) != nil || body.Status == "" {
		if resp.StatusCode == http.StatusOK {
			return "ok", nil
		}
		return "", fmt.Errorf("not ready: %s answered %s", target, resp.Status)
	}
	line := body.Status
	if problems := componentProblems(body); problems != "" {
		line += ": " + problems
	}
	if resp.StatusCode != http.StatusOK {
		return "", errors.New(line)
	}
	return line, nil
}

// componentProblems names each component that is not ok with its
// message: the ones that keep the hub from being ready first, then the
// others that are down, then warnings.
func componentProblems(body httpapi.ReadyzBody) string {
	blocking := map[string]bool{}
	for _, c := range body.Conditions {
		blocking[c.Component] = blocking[c.Component] || c.Blocking
	}
	var ranked [3][]string
	for name, c := range body.Components {
		switch {
		case blocking[name]:
			ranked[0] = append(ranked[0], name+" down ("+c.Message+")")
		case c.Status == httpapi.ComponentDown:
			ranked[1] = append(ranked[1], name+" down ("+c.Message+")")
		case c.Status == httpapi.ComponentWarning:
			ranked[2] = append(ranked[2], name+" warning ("+c.Message+")")
		}
	}
	var all []string
	for _, r := range ranked {
		sort.Strings(r)
		all = append(all, r...)
	}
	return strings.Join(all, "; ")
}

// tlsListeners names the listeners that serve cfg's certificate.
func tlsListeners(c runConfig, cfg *tls.Config) map[string]*tls.Config {
	m := map[string]*tls.Config{}
	if c.mqttsAddr != "" && c.mqttURL == "" {
		m["mqtts"] = cfg
	}
	if c.httpsAddr != "" {
		m["https"] = cfg
	}
	return m
}
