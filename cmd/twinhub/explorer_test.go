package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/twinhub/twinhub/bridge/sas"
)

// chromium returns the path of a Chromium the browser tests can drive. Under
// CI=true a missing browser fails the test (make deps installs Debian's
// chromium); elsewhere it skips it.
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("no chromium: the browser tests need it under CI; run `make deps` (apt-get install chromium)")
	}
	t.Skip("skipping the browser test: chromium is not installed (`make deps` installs it)")
	return ""
}

// artifactsDir is where browser tests save screenshots: $TWINHUB_TEST_ARTIFACTS,
// or a directory under the system's temporary directory.
func artifactsDir(t *testing.T, name string) string {
	t.Helper()
	base := os.Getenv("TWINHUB_TEST_ARTIFACTS")
	if base == "" {
		base = filepath.Join(os.TempDir(), "twinhub-test-artifacts")
	}
	dir := filepath.Join(base, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshots in %s", dir)
	return dir
}

// TestExplorer drives the twin explorer in headless Chromium against the
// real hub with history in ClickHouse: sign in with a connection string,
// run a query and page it, see a query's syntax error with its line and
// column, save a query and run it from the list, open a twin, edit desired and see the device's reported echo
// arrive live, cause an etag conflict and see it shown, reload and save,
// read a reported property's points on the history chart, open the twin as
// of a change, see a desired property's rollout across the fleet, follow
// live changes, and see "history is off" and "hub unreachable" on a hub
// without history and once it stopped. No page may log a console error.
func TestExplorer(t *testing.T) {
	exe := chromium(t)
	shots := artifactsDir(t, "explorer")
	ch := startClickHouse(t)
	p := startTwinhub(t, "", "--clickhouse-url", ch.URL(""))
	for i := range 12 {
		id := fmt.Sprintf("ui-%02d", i)
		if r := p.call(t, "PUT", "/devices/"+id, `{"deviceId":"`+id+`"}`); r.Status != 200 {
			t.Fatalf("creating %s: %d %s", id, r.Status, r.Body)
		}
	}
	// The device simulator echoes desired properties as reported.
	ctx, cancel := context.WithTimeout(context.Background(), 80*time.Second)
	defer cancel()
	dev, err := p.dialDevice(t, ctx, "ui-00")
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	// Exits when the device's connection closes (its channel ends) or ctx ends.
	go func() {
		for {
			select {
			case d, ok := <-dev.Desired():
				if !ok {
					return
				}
				var patch map[string]any
				json.Unmarshal(d.Body, &patch)
				delete(patch, "$version")
				b, _ := json.Marshal(patch)
				dev.Report(ctx, b)
			case <-ctx.Done():
				return
			}
		}
	}()

	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(exe), chromedp.NoSandbox,
		chromedp.Flag("headless", true), chromedp.WindowSize(1366, 900), chromedp.UserDataDir(t.TempDir()))
	actx, cancelAlloc := chromedp.NewExecAllocator(ctx, opts...)
	defer cancelAlloc()
	bctx, cancelBrowser := chromedp.NewContext(actx)
	defer cancelBrowser()

	var mu sync.Mutex
	var consoleErrors []string
	if err := chromedp.Listen(bctx, func(ev any) {
		mu.Lock()
		defer mu.Unlock()
		switch ev := ev.(type) {
		case *runtime.EventConsoleAPICalled:
			if ev.Type == runtime.ConsoleAPICalledTypeError {
				var args []string
				for _, a := range ev.Args {
					args = append(args, string(a.Value))
				}
				consoleErrors = append(consoleErrors, strings.Join(args, " "))
			}
		case *runtime.EventExceptionThrown:
			consoleErrors = append(consoleErrors, fmt.Sprintf("%s %s", ev.ExceptionDetails.Text, exceptionText(ev.ExceptionDetails)))
		}
	}); err != nil {
		t.Fatalf("starting chromium: %v", err)
	}

	step := 0
	// run runs a step's browser actions, then saves a screenshot named shot
	// (none when shot is "").
	run := func(what, shot string, actions ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(bctx, actions...); err != nil {
			page, _ := chromedp.Run(bctx, chromedp.Evaluate[string](`document.body.innerText`))
			t.Fatalf("%s: %v\npage text:\n%s", what, err, page)
		}
		if shot == "" {
			return
		}
		step++
		b, err := chromedp.Run(bctx, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatalf("screenshot %s: %v", shot, err)
		}
		if err := os.WriteFile(filepath.Join(shots, fmt.Sprintf("%02d-%s.png", step, shot)), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// until waits for a JavaScript condition.
	until := func(expr string) chromedp.Action[chromedp.Void] {
		return chromedp.Poll[chromedp.Void](expr, chromedp.WithPollingTimeout(20*time.Second))
	}
	text := func(sel string) string {
		return fmt.Sprintf(`(document.querySelector(%q) || {}).textContent || ""`, sel)
	}
	conn := "HostName=localhost;SharedAccessKeyName=iothubowner;SharedAccessKey=" + p.owner

	run("a wrong key is refused", "",
		chromedp.Navigate(p.HTTP+"/ui/"),
		chromedp.WaitVisible("#conn"),
		chromedp.SendKeys("#conn", "HostName=localhost;SharedAccessKeyName=iothubowner;SharedAccessKey="+sas.NewKey()),
		chromedp.Click("#signin"),
		until(text("#signin-error")+`.includes("not signed by a key of its policy")`),
		until(`!document.querySelector("#banner").hidden && `+text("#banner")+`.startsWith("Not authorised")`),
	)
	run("open the sign-in page", "sign-in",
		chromedp.SetValue("#conn", conn),
	)
	run("sign in", "",
		chromedp.Click("#signin"),
		until(`document.querySelectorAll("#results tbody tr").length > 0`),
	)
	run("run a query", "fleet-page-1",
		chromedp.SetValue("#page-size", "10"),
		chromedp.SetValue("#query", "SELECT * FROM devices WHERE STARTSWITH(deviceId, 'ui-')"),
		chromedp.Click("#run-query"),
		until(text("#page-info")+` === "Page 1 · 10 rows"`),
	)
	run("next page", "fleet-page-2",
		chromedp.Click("#next-page"),
		until(text("#page-info")+` === "Page 2 · 2 rows"`),
		until(`document.querySelector("#next-page").disabled`),
		chromedp.Click("#prev-page"),
		until(text("#page-info")+` === "Page 1 · 10 rows"`),
	)
	run("a query with a syntax error shows the hub's error with its line and column", "query-error",
		chromedp.SetValue("#query", "SELECT * FROM devices WHERE"),
		chromedp.Click("#run-query"),
		until(text("#query-error")+`.includes("line 1, column")`),
	)
	run("save a query and run it again from the saved list", "",
		chromedp.SetValue("#query", "SELECT deviceId FROM devices WHERE deviceId IN ['ui-01', 'ui-02']"),
		chromedp.Click("#save-query"),
		chromedp.SetValue("#query", "SELECT * FROM devices"),
		until(`document.querySelector("#saved button") !== null`),
		chromedp.Click("#saved button"),
		until(text("#page-info")+` === "Page 1 · 2 rows" && document.querySelector("#query").value.includes("IN ['ui-01'")`),
	)
	run("open a twin", "twin",
		chromedp.SetValue("#query", "SELECT * FROM devices WHERE deviceId = 'ui-00'"),
		chromedp.Click("#run-query"),
		until(text("#page-info")+` === "Page 1 · 1 rows"`),
		chromedp.Click(`#results a[href="#/twin/ui-00"]`),
		until(text("#twin-etag")+` !== ""`),
		until(`document.querySelector("#twin-live").classList.contains("on")`),
	)
	run("edit desired and see the device's reported echo arrive live", "desired-echoed",
		chromedp.SetValue("#patch", `{"firmware":"2.1.0","interval":30}`),
		chromedp.Click("#save-patch"),
		until(text("#edit-status")+`.startsWith("Saved")`),
		until(text("#desired")+`.includes("2.1.0")`),
		until(text("#reported")+`.includes("2.1.0") && `+text("#reported")+`.includes("30")`),
		until(text("#pending")+` === ""`),
	)
	run("stop following the twin", "",
		chromedp.Click("#twin-follow"),
		until(`!document.querySelector("#twin-live").classList.contains("on")`),
	)
	// Change the twin behind the explorer's back: its etag is now stale.
	if r := p.call(t, "PATCH", "/twins/ui-00", `{"tags":{"site":"lab"}}`); r.Status != 200 {
		t.Fatalf("patching behind the explorer: %d %s", r.Status, r.Body)
	}
	run("cause an etag conflict and see it shown", "conflict",
		chromedp.SetValue("#patch", `{"interval":60}`),
		chromedp.Click("#save-patch"),
		until(`!document.querySelector("#conflict").hidden`),
		until(text("#conflict-text")+`.includes("does not match the current etag")`),
	)
	run("reload and merge, then save", "merged",
		chromedp.Click("#reload-merge"),
		until(text("#tags")+`.includes("lab")`),
		until(text("#patch")+`.includes("60") || document.querySelector("#patch").value.includes("60")`),
		chromedp.Click("#save-patch"),
		until(text("#edit-status")+`.startsWith("Saved")`),
		until(text("#desired")+`.includes("60")`),
	)
	for _, v := range []string{"20", "21.5", "23"} {
		if _, err := dev.Report(ctx, []byte(`{"temperature":`+v+`}`)); err != nil {
			t.Fatalf("reporting temperature %s: %v", v, err)
		}
	}
	run("open the history and read the chart's data points", "history",
		chromedp.Click("#twin-history-link"),
		chromedp.WaitVisible("#history-path"),
		chromedp.SetValue("#history-path", "temperature"),
		chromedp.Click("#history-load"),
		until(`window.explorerChart && explorerChart.values.join(",") === "20,21.5,23"`),
	)
	run("the twin as of a change", "as-of",
		chromedp.Evaluate[chromedp.Void](`[...document.querySelectorAll("#history-events tbody tr")]
			.find((tr) => tr.textContent.includes('"temperature":21.5')).querySelector("button.asof").click()`),
		until(text("#asof")+`.includes('"temperature": 21.5') && !`+text("#asof")+`.includes("23")`),
	)
	// ui-00 reported its desired firmware back (the simulator's echo), ui-01
	// is not connected and cannot.
	if r := p.call(t, "PATCH", "/twins/ui-01", `{"properties":{"desired":{"firmware":"2.1.0"}}}`); r.Status != 200 {
		t.Fatalf("setting ui-01's desired firmware: %d %s", r.Status, r.Body)
	}
	expectError(t, p.call(t, "GET", "/rollout?path=firmware..x", ""), 400, "ArgumentInvalid", "path")
	run("see the rollout: one of two devices reported the desired firmware back", "rollout",
		chromedp.Navigate(p.HTTP+"/ui/#/rollout"),
		chromedp.WaitVisible("#rollout-path"),
		chromedp.SetValue("#rollout-path", "firmware"),
		// The history sink writes in batches: ask again until it has.
		chromedp.Poll[chromedp.Void](`(document.querySelector("#rollout-load").click(), window.explorerRollout !== undefined &&
			explorerRollout.targeted[0] === 0 && explorerRollout.targeted.at(-1) === 2 && explorerRollout.matching.at(-1) === 1)`,
			chromedp.WithPollingInterval(500*time.Millisecond), chromedp.WithPollingTimeout(30*time.Second)),
	)
	run("follow live changes", "",
		chromedp.Navigate(p.HTTP+"/ui/#/live"),
		chromedp.WaitVisible("#live-prefix"),
		chromedp.SendKeys("#live-prefix", "ui-0"),
		chromedp.Click("#live-start"),
		until(text("#live-status")+` === "following"`),
	)
	for _, id := range []string{"ui-03", "ui-10", "ui-04"} {
		p.call(t, "PATCH", "/twins/"+id, `{"tags":{"live":true}}`)
	}
	run("see live changes", "live",
		until(`document.querySelectorAll("#live-events tbody tr").length === 2`),
		until(text("#live-events tbody")+`.includes("ui-03") && `+text("#live-events tbody")+`.includes("ui-04")`),
	)

	// A hub without history: the explorer says history is off; once the hub
	// is stopped, that it is unreachable.
	q := startTwinhub(t, "")
	run("history is off", "history-off",
		chromedp.Navigate(q.HTTP+"/ui/"), // another origin: signed out
		chromedp.WaitVisible("#conn"),
		chromedp.SetValue("#conn", "HostName=localhost;SharedAccessKeyName=iothubowner;SharedAccessKey="+q.owner),
		chromedp.Click("#signin"),
		until(text("#page-info")+` === "Page 1 · 0 rows"`),
		chromedp.Navigate(q.HTTP+"/ui/#/history/nobody"),
		until(text("#history-error")+`.startsWith("History is off")`),
	)
	q.stop()
	run("the hub is unreachable", "unreachable",
		chromedp.Click("#history-load"),
		until(`!document.querySelector("#banner").hidden && `+text("#banner")+`.startsWith("The hub is unreachable")`),
	)

	mu.Lock()
	defer mu.Unlock()
	if len(consoleErrors) > 0 {
		t.Errorf("the explorer logged console errors:\n%s", strings.Join(consoleErrors, "\n"))
	}
}

// exceptionText is the description of an uncaught exception, if any.
func exceptionText(d *runtime.ExceptionDetails) string {
	if d.Exception != nil {
		return d.Exception.Description
	}
	return ""
}
