package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

var (
	prometheusDir = filepath.Join("..", "..", "deploy", "prometheus")
	grafanaDir    = filepath.Join("..", "..", "deploy", "grafana")
)

// lookPathOrSkip finds a program of Debian's prometheus package, or skips
// the test (fails it under CI=true, where `make deps` installs it).
func lookPathOrSkip(t *testing.T, name string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is not installed (make deps installs Debian's prometheus package)", name)
		}
		t.Skipf("%s is not installed (make deps installs Debian's prometheus package)", name)
	}
	return path
}

// rulesFile is the part of a Prometheus rules file the tests read.
type rulesFile struct {
	Groups []struct {
		Name  string
		Rules []struct {
			Alert       string
			Expr        string
			For         string
			Labels      map[string]string
			Annotations map[string]string
		}
	}
}

// dashboardFile is the part of a Grafana dashboard the tests read.
type dashboardFile struct {
	UID        string
	Templating struct {
		List []struct {
			Name       string
			Definition string
			Datasource struct{ UID string }
		}
	}
	Panels []struct {
		Type, Title, Description string
		Datasource               struct{ UID string }
		Targets                  []struct {
			Expr       string
			Datasource struct{ UID string }
		}
	}
}

// grafanaVars replaces the dashboard's variables with what Grafana would
// send for "All" over the test's short time range.
var grafanaVars = strings.NewReplacer("$__rate_interval", "1m", "$__interval", "15s", "$instance", ".*")

// TestPrometheusConfig: promtool accepts the shipped scrape configuration
// and rules; every alert has a for (or fires at once on purpose), a
// severity and a summary and description; the dashboard and its
// provisioning refer to the provisioned datasource and directory.
func TestPrometheusConfig(t *testing.T) {
	promtool := lookPathOrSkip(t, "promtool")
	for _, args := range [][]string{
		{"check", "config", filepath.Join(prometheusDir, "prometheus.yml")},
		{"check", "rules", filepath.Join(prometheusDir, "rules.yml")},
	} {
		if out, err := exec.Command(promtool, args...).CombinedOutput(); err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	rules := readRules(t)
	var alerts []string
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			alerts = append(alerts, r.Alert)
			if r.For == "" && r.Alert != "TwinhubDataLost" { // data found lost is known at once and stays
				t.Errorf("alert %s has no for:", r.Alert)
			}
			if sev := r.Labels["severity"]; sev != "warning" && sev != "critical" {
				t.Errorf("alert %s: severity %q, want warning or critical", r.Alert, sev)
			}
			if len(r.Annotations["summary"]) < 20 || len(r.Annotations["description"]) < 100 {
				t.Errorf("alert %s: summary %q and description %q say too little for the operator", r.Alert, r.Annotations["summary"], r.Annotations["description"])
			}
		}
	}
	for _, want := range []string{"TwinhubHistoryLagging", "TwinhubClickHouseDown", "TwinhubBrokerDroppingMessages",
		"TwinhubCommandBacklog", "TwinhubNoPartitionOwner", "TwinhubTLSCertificateExpiresSoon"} {
		if !slices.Contains(alerts, want) {
			t.Errorf("rules.yml has no alert %s", want)
		}
	}

	var ds struct {
		Datasources []struct{ Name, UID, Type, URL string }
	}
	readYAML(t, filepath.Join(grafanaDir, "provisioning", "datasources", "prometheus.yaml"), &ds)
	if len(ds.Datasources) != 1 || ds.Datasources[0].Type != "prometheus" || ds.Datasources[0].URL != "http://prometheus:9090" || ds.Datasources[0].UID == "" {
		t.Fatalf("datasource provisioning: %+v; want one prometheus at http://prometheus:9090 with a uid", ds.Datasources)
	}
	var prov struct {
		Providers []struct {
			Type    string
			Options struct{ Path string }
		}
	}
	readYAML(t, filepath.Join(grafanaDir, "provisioning", "dashboards", "twinhub.yaml"), &prov)
	if len(prov.Providers) != 1 || prov.Providers[0].Type != "file" || prov.Providers[0].Options.Path != "/etc/grafana/dashboards" {
		t.Errorf("dashboard provisioning: %+v; want one file provider of /etc/grafana/dashboards", prov.Providers)
	}
	d := readDashboard(t)
	uid := ds.Datasources[0].UID
	for _, p := range d.Panels {
		if p.Type == "row" {
			continue
		}
		if p.Datasource.UID != uid || p.Description == "" || len(p.Targets) == 0 {
			t.Errorf("panel %q: datasource %q (want %q), %d targets, description %q", p.Title, p.Datasource.UID, uid, len(p.Targets), p.Description)
		}
		for _, tg := range p.Targets {
			if tg.Datasource.UID != uid {
				t.Errorf("panel %q: a target's datasource is %q, want %q", p.Title, tg.Datasource.UID, uid)
			}
		}
	}
	for _, v := range d.Templating.List {
		if v.Datasource.UID != uid {
			t.Errorf("variable %s: datasource %q, want %q", v.Name, v.Datasource.UID, uid)
		}
	}
}

// TestPrometheusScrapesHub starts a real Prometheus with the shipped rules
// and a scrape configuration derived from the shipped one (the test hub as
// its target, 1 s intervals, every alert's for: shortened to 1 s), and a
// hub with history in a real ClickHouse. After a short load (an MQTT device
// reporting, a back end patching desired properties, a query), every
// expression of the dashboard returns data, every expression of the rules
// parses and every series it selects has data; then ClickHouse is stopped
// and TwinhubClickHouseDown fires.
func TestPrometheusScrapesHub(t *testing.T) {
	promBin := lookPathOrSkip(t, "prometheus")
	ch := startClickHouse(t)
	p := startTwinhub(t, "", "--clickhouse-url", ch.URL(""))
	hubAddr := strings.TrimPrefix(p.HTTP, "http://")

	// Prometheus's files: the shipped ones, made fast and pointed at the hub.
	dir := t.TempDir()
	var cfg map[string]any
	readYAML(t, filepath.Join(prometheusDir, "prometheus.yml"), &cfg)
	cfg["global"] = map[string]any{"scrape_interval": "1s", "evaluation_interval": "1s"}
	scrapes, _ := cfg["scrape_configs"].([]any)
	if len(scrapes) != 1 {
		t.Fatalf("prometheus.yml has %d scrape configs, want 1 (twinhub)", len(scrapes))
	}
	job := scrapes[0].(map[string]any)
	if job["job_name"] != "twinhub" {
		t.Fatalf("prometheus.yml's job is %v, want twinhub (the rules select it)", job["job_name"])
	}
	job["static_configs"] = []any{map[string]any{"targets": []string{hubAddr}}}
	writeYAMLFile(t, filepath.Join(dir, "prometheus.yml"), cfg)
	rules, err := os.ReadFile(filepath.Join(prometheusDir, "rules.yml"))
	if err != nil {
		t.Fatal(err)
	}
	fast := regexp.MustCompile(`(?m)^(\s+for:) \S+$`).ReplaceAll(rules, []byte("$1 1s"))
	if err := os.WriteFile(filepath.Join(dir, "rules.yml"), fast, 0o600); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	promAddr := ln.Addr().String()
	ln.Close()
	logs := &syncBuffer{}
	prom := exec.Command(promBin, "--config.file="+filepath.Join(dir, "prometheus.yml"), "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+promAddr, "--log.level=warn")
	prom.Stdout, prom.Stderr = logs, logs
	if err := prom.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		prom.Process.Kill()
		prom.Wait()
		if t.Failed() {
			t.Logf("prometheus log:\n%s", logs.String())
		}
	})
	api := promAPI{t: t, base: "http://" + promAddr}
	waitFor(t, 30*time.Second, "Prometheus to scrape the hub", func() bool {
		res, err := api.query(`up{job="twinhub"} == 1`)
		return err == nil && len(res) == 1
	})

	// A short load.
	if r := p.call(t, "PUT", "/devices/prom-1", `{"deviceId":"prom-1"}`); r.Status != 200 {
		t.Fatalf("create: %d %s", r.Status, r.Body)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dev, err := p.dialDevice(t, ctx, "prom-1")
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	for i := range 5 {
		if _, err := dev.Report(ctx, []byte(fmt.Sprintf(`{"temperature":%d}`, 20+i))); err != nil {
			t.Fatalf("reported patch %d: %v", i, err)
		}
	}
	if r := p.call(t, "PATCH", "/twins/prom-1", `{"properties":{"desired":{"mode":"eco"}}}`, "If-Match", "*"); r.Status != 200 {
		t.Fatalf("desired patch: %d %s", r.Status, r.Body)
	}
	if r := p.call(t, "POST", "/devices/query", `{"query":"SELECT * FROM devices WHERE properties.reported.temperature > 20"}`); r.Status != 200 {
		t.Fatalf("query: %d %s", r.Status, r.Body)
	}
	waitFor(t, 30*time.Second, "the history sink to write the 7 changes", func() bool {
		n, err := strconv.Atoi(p.metricValue(t, "twinhub_history_events_written_total"))
		return err == nil && n >= 7
	})

	// Every dashboard expression returns data.
	d := readDashboard(t)
	var exprs []string
	for _, v := range d.Templating.List {
		// label_values(metric, label) is Grafana's, not PromQL: its metric must have data.
		m := regexp.MustCompile(`^label_values\((\w+), *\w+\)$`).FindStringSubmatch(v.Definition)
		if m == nil {
			t.Fatalf("variable %s: %q is not label_values(metric, label)", v.Name, v.Definition)
		}
		exprs = append(exprs, m[1])
	}
	for _, panel := range d.Panels {
		for _, tg := range panel.Targets {
			exprs = append(exprs, grafanaVars.Replace(tg.Expr))
		}
	}
	api.waitData(t, "dashboard", exprs)

	// Every rule expression parses, and every series it selects has data.
	var selectors []string
	for _, g := range readRules(t).Groups {
		for _, r := range g.Rules {
			if _, err := api.query(r.Expr); err != nil {
				t.Errorf("alert %s: %v", r.Alert, err)
			}
			selectors = append(selectors, seriesSelectors(r.Expr)...)
		}
	}
	api.waitData(t, "rules", selectors)

	// ClickHouse stopped: the alert fires.
	ch.Stop()
	for i := range 3 {
		if r := p.call(t, "PATCH", "/twins/prom-1", fmt.Sprintf(`{"properties":{"desired":{"n":%d}}}`, i), "If-Match", "*"); r.Status != 200 {
			t.Fatalf("desired patch with ClickHouse down: %d %s", r.Status, r.Body)
		}
	}
	waitFor(t, 60*time.Second, "TwinhubClickHouseDown to fire", func() bool {
		alerts, err := api.alerts()
		if err != nil {
			return false
		}
		for _, a := range alerts {
			if a.Labels["alertname"] == "TwinhubClickHouseDown" && a.State == "firing" {
				t.Logf("firing: %s: %s", a.Labels["alertname"], a.Annotations["summary"])
				return true
			}
		}
		return false
	})
}

// seriesSelectors returns the twinhub_ and up series selectors in a PromQL
// expression, with their label matchers.
func seriesSelectors(expr string) []string {
	return regexp.MustCompile(`\b(?:twinhub_\w+|up)(?:\{[^}]*\})?`).FindAllString(expr, -1)
}

// promAPI queries a Prometheus's HTTP API.
type promAPI struct {
	t    *testing.T
	base string
}

func (a promAPI) get(path string, params url.Values, data any) error {
	resp, err := http.Get(a.base + path + "?" + params.Encode())
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var body struct {
		Status, Error string
		Data          json.RawMessage
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return fmt.Errorf("%s: %d, not JSON: %v", path, resp.StatusCode, err)
	}
	if body.Status != "success" {
		return fmt.Errorf("%s %s: %s", path, params.Encode(), body.Error)
	}
	return json.Unmarshal(body.Data, data)
}

// query evaluates expr now and returns the result's series (or scalar).
func (a promAPI) query(expr string) ([]json.RawMessage, error) {
	var data struct {
		ResultType string
		Result     json.RawMessage
	}
	if err := a.get("/api/v1/query", url.Values{"query": {expr}}, &data); err != nil {
		return nil, err
	}
	if data.ResultType == "scalar" || data.ResultType == "string" {
		return []json.RawMessage{data.Result}, nil
	}
	var res []json.RawMessage
	err := json.Unmarshal(data.Result, &res)
	return res, err
}

type promAlert struct {
	Labels, Annotations map[string]string
	State               string
}

func (a promAPI) alerts() ([]promAlert, error) {
	var data struct{ Alerts []promAlert }
	err := a.get("/api/v1/alerts", nil, &data)
	return data.Alerts, err
}

// waitData polls until every expression returns at least one series; it
// fails the test naming the ones that do not (or do not parse).
func (a promAPI) waitData(t *testing.T, what string, exprs []string) {
	t.Helper()
	var missing []string
	deadline := time.Now().Add(45 * time.Second)
	for {
		missing = missing[:0]
		for _, e := range exprs {
			res, err := a.query(e)
			switch {
			case err != nil:
				missing = append(missing, fmt.Sprintf("%s: %v", e, err))
			case len(res) == 0:
				missing = append(missing, e+": no data")
			}
		}
		if len(missing) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	if len(missing) > 0 {
		t.Errorf("%d of %d %s expressions return no data after 45s:\n%s", len(missing), len(exprs), what, strings.Join(missing, "\n"))
	} else {
		t.Logf("all %d %s expressions return data", len(exprs), what)
	}
}

func readRules(t *testing.T) rulesFile {
	t.Helper()
	var r rulesFile
	readYAML(t, filepath.Join(prometheusDir, "rules.yml"), &r)
	if len(r.Groups) == 0 {
		t.Fatal("rules.yml has no groups")
	}
	return r
}

func readDashboard(t *testing.T) dashboardFile {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(grafanaDir, "dashboards", "twinhub.json"))
	if err != nil {
		t.Fatal(err)
	}
	var d dashboardFile
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("twinhub.json: %v", err)
	}
	if d.UID == "" || len(d.Panels) == 0 {
		t.Fatalf("twinhub.json has no uid or no panels")
	}
	return d
}

func readYAML(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

func writeYAMLFile(t *testing.T, path string, v any) {
	t.Helper()
	b, err := yaml.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}
