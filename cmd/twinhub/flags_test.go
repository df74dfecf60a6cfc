package main

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestDefaultsListenOnLoopback: with no flags, every listener twinhub opens
// is on the loopback interface, and authentication is on.
func TestDefaultsListenOnLoopback(t *testing.T) {
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "TWINHUB_") {
			k, _, _ := strings.Cut(kv, "=")
			t.Setenv(k, "")
			os.Unsetenv(k)
		}
	}
	c, err := parseRunFlags(nil)
	if err != nil {
		t.Fatal(err)
	}
	for name, addr := range map[string]string{"http": c.httpAddr, "https": c.httpsAddr, "mqtt": c.mqttAddr, "mqtts": c.mqttsAddr, "nats": c.natsAddr} {
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			t.Fatalf("%s %q: %v", name, addr, err)
		}
		if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
			t.Errorf("%s listens on %q by default, not loopback", name, addr)
		}
	}
	if !c.auth {
		t.Errorf("authentication is off by default")
	}
}

// TestFlagErrors: bad flags and bad environment variables are refused with
// a message that names them.
func TestFlagErrors(t *testing.T) {
	for _, c := range []struct {
		args []string
		env  [2]string
		want string
	}{
		{args: []string{"--http-addr", "nonsense"}, want: "--http-addr"},
		{args: []string{"--http-read-timeout", "0s"}, want: "--http-read-timeout"},
		{args: []string{"--hostname", "hub.example.com,hub.example.com:443"}, want: "--hostname"},
		{args: []string{"--tls-cert", "a.pem"}, want: "--tls-key"},
		{args: []string{"--data-dir", ""}, want: "--data-dir"},
		{args: []string{"--mqtt-device-max-in-flight", "0"}, want: "--mqtt-device-max-in-flight"},
		{env: [2]string{"TWINHUB_PARTITIONS", "many"}, want: "TWINHUB_PARTITIONS"},
		{env: [2]string{"TWINHUB_AUTH", "perhaps"}, want: "TWINHUB_AUTH"},
		{env: [2]string{"TWINHUB_SYNC_INTERVAL", "soon"}, want: "TWINHUB_SYNC_INTERVAL"},
		{args: []string{"--replicas", "2"}, want: "--replicas must be 1, 3 or 5"},
		{env: [2]string{"TWINHUB_REPLICAS", "three"}, want: "TWINHUB_REPLICAS"},
	} {
		if c.env[0] != "" {
			t.Setenv(c.env[0], c.env[1])
		}
		_, err := parseRunFlags(c.args)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v %v: err %v, want it to mention %s", c.args, c.env, err, c.want)
		}
		if c.env[0] != "" {
			os.Unsetenv(c.env[0])
		}
	}
}

// TestFlagsAnywhere: flags may follow the arguments, as the README's
// walkthrough writes them (`twin update myDeviceId --tags …`), and "--"
// makes everything after it an argument.
func TestFlagsAnywhere(t *testing.T) {
	for _, tc := range []struct {
		args     []string
		wantTags string
		wantArgs []string
	}{
		{[]string{"myDeviceId", "--tags", `{"a":1}`}, `{"a":1}`, []string{"myDeviceId"}},
		{[]string{"--tags", `{"a":1}`, "myDeviceId"}, `{"a":1}`, []string{"myDeviceId"}},
		{[]string{"SELECT * FROM devices", "--tags", "x", "more"}, "x", []string{"SELECT * FROM devices", "more"}},
		{[]string{"a", "--", "--tags", "b"}, "", []string{"a", "--tags", "b"}},
		{[]string{"--", "-x"}, "", []string{"-x"}},
		{nil, "", nil},
	} {
		fs := flagSet("t")
		tags := fs.String("tags", "", "tags")
		if err := fs.Parse(tc.args); err != nil {
			t.Fatalf("%q: %v", tc.args, err)
		}
		if *tags != tc.wantTags || strings.Join(fs.Args(), "|") != strings.Join(tc.wantArgs, "|") {
			t.Errorf("%q: tags %q args %q, want %q %q", tc.args, *tags, fs.Args(), tc.wantTags, tc.wantArgs)
		}
	}
	fs := flagSet("t")
	fs.String("tags", "", "tags")
	if err := fs.Parse([]string{"myDeviceId", "--nope"}); err == nil {
		t.Errorf("an unknown flag after an argument was accepted")
	}
}

// TestClientEnvironment: the clients read only their documented
// environment variables (TWINHUB_SERVER, TWINHUB_DATA_DIR,
// TWINHUB_CONNECTION_STRING, TWINHUB_MQTT, TWINHUB_NATS_ADDR), not one per flag: a
// TWINHUB_TAGS left in the environment does not become every twin
// update's --tags, and TWINHUB_HOSTNAME (run's names) does not change the
// HostName connection-string prints.
func TestClientEnvironment(t *testing.T) {
	t.Setenv("TWINHUB_TAGS", `{"stray":1}`)
	t.Setenv("TWINHUB_REPLACE", "true")
	t.Setenv("TWINHUB_HOSTNAME", "hub.example.com")
	t.Setenv("TWINHUB_SERVER", "http://127.0.0.1:1")
	t.Setenv("TWINHUB_NATS_ADDR", "127.0.0.1:14222")
	root := newRootCommand()
	update, _, err := root.Find([]string{"twin", "update"})
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{"tags": "", "replace": "false", "server": "http://127.0.0.1:1"} {
		if got := update.Flags().Lookup(name).DefValue; got != want {
			t.Errorf("twin update --%s defaults to %q, want %q", name, got, want)
		}
	}
	cs, _, err := root.Find([]string{"connection-string"})
	if err != nil {
		t.Fatal(err)
	}
	if got := cs.Flags().Lookup("hostname").DefValue; got != "localhost" {
		t.Errorf("connection-string --hostname defaults to %q with TWINHUB_HOSTNAME set, want localhost", got)
	}
	creds, _, err := root.Find([]string{"nats-credentials"})
	if err != nil {
		t.Fatal(err)
	}
	if got := creds.Flags().Lookup("nats-addr").DefValue; got != "127.0.0.1:14222" {
		t.Errorf("nats-credentials --nats-addr defaults to %q, want TWINHUB_NATS_ADDR's 127.0.0.1:14222", got)
	}
	run, _, err := root.Find([]string{"run"})
	if err != nil {
		t.Fatal(err)
	}
	if got := run.Flags().Lookup("hostname").DefValue; got != "hub.example.com" {
		t.Errorf("run --hostname defaults to %q, want TWINHUB_HOSTNAME's hub.example.com", got)
	}
}

// TestRunConfigFile: `twinhub run --config FILE` takes flag names as YAML
// keys; a flag on the command line wins over the environment, which wins
// over the file; an unknown key is an error that names it.
func TestRunConfigFile(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "twinhub.yaml")
	os.WriteFile(file, []byte("http-addr: 127.0.0.1:9001\nmqtt-addr: 127.0.0.1:9002\npartitions: 8\n"+
		"hostname: [a.example, b.example]\nauth: false\nsync-interval: 1m\n"), 0o600)
	t.Setenv("TWINHUB_MQTT_ADDR", "127.0.0.1:9003")
	c, err := parseRunFlags([]string{"--config", file, "--partitions", "4"})
	if err != nil {
		t.Fatal(err)
	}
	if c.httpAddr != "127.0.0.1:9001" || c.mqttAddr != "127.0.0.1:9003" || c.partitions != 4 || c.auth ||
		c.syncInterval != time.Minute || strings.Join(c.hostnames, ",") != "a.example,b.example" {
		t.Errorf("file, environment and flags combined into %+v", c)
	}
	os.WriteFile(file, []byte("http-adr: 127.0.0.1:9001\n"), 0o600)
	if _, err := parseRunFlags([]string{"--config", file}); err == nil || !strings.Contains(err.Error(), `"http-adr" is not a flag`) {
		t.Errorf("a misspelt key: %v", err)
	}
}
