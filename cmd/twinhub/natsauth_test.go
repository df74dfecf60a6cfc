package main

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"math/big"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/twinhub/twinhub/deploy/embedded"
	"github.com/twinhub/twinhub/pipeline"
	"github.com/twinhub/twinhub/pipeline/topology"
)

// natsURL is the hub's embedded NATS URL with a user's credentials, read
// from its data directory.
func (p *proc) natsURL(t *testing.T, user string) string {
	t.Helper()
	ps, err := embedded.LoadNATSPasswords(filepath.Join(p.dataDir, natsPasswordsFile))
	if err != nil {
		t.Fatal(err)
	}
	pw, ok := ps.Password(user)
	if !ok {
		t.Fatalf("no NATS user %q", user)
	}
	return natsCredentialsURL(user, pw, strings.TrimPrefix(p.NATS, "nats://"))
}

// violations records the permission errors a NATS connection is sent.
type violations struct {
	mu   sync.Mutex
	errs []string
}

func (v *violations) handler(_ *nats.Conn, _ *nats.Subscription, err error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.errs = append(v.errs, err.Error())
}

// wait waits for a permissions violation naming subject.
func (v *violations) wait(t *testing.T, op, subject string) {
	t.Helper()
	want := "permissions violation for " + op + ` to "` + subject + `"`
	waitFor(t, 10*time.Second, want, func() bool {
		v.mu.Lock()
		defer v.mu.Unlock()
		for _, e := range v.errs {
			if strings.Contains(strings.ToLower(e), strings.ToLower(want)) {
				return true
			}
		}
		return false
	})
}

// natsCredentialsCmd runs `twinhub nats-credentials` and returns its
// variables.
func natsCredentialsCmd(t *testing.T, args ...string) map[string]string {
	t.Helper()
	out, err := exec.Command(binary, append([]string{"nats-credentials"}, args...)...).Output()
	if err != nil {
		t.Fatalf("twinhub nats-credentials %v: %v", args, err)
	}
	vars := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), "="); ok && !strings.HasPrefix(k, "#") {
			vars[k] = v
		}
	}
	return vars
}

// TestEmbeddedNATSRequiresUsers: the embedded NATS refuses anonymous clients
// and wrong passwords, keeps its passwords in a file only the owner may
// read, never logs them, and `twinhub nats-credentials` prints a URL a real
// client connects with as the events user.
func TestEmbeddedNATSRequiresUsers(t *testing.T) {
	p := startTwinhub(t, "")
	if nc, err := nats.Connect(p.NATS); err == nil {
		nc.Close()
		t.Fatal("an anonymous client connected to the embedded NATS")
	} else if !errors.Is(err, nats.ErrAuthorization) {
		t.Errorf("anonymous connection: %v, want an authorization violation", err)
	}
	u, _ := url.Parse(p.NATS)
	u.User = url.UserPassword(embedded.EventsNATSUser, "wrong")
	if nc, err := nats.Connect(u.String()); err == nil {
		nc.Close()
		t.Fatal("a client with a wrong password connected to the embedded NATS")
	}

	path := filepath.Join(p.dataDir, natsPasswordsFile)
	info, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if info.Mode().Perm() != 0o600 {
		t.Errorf("%s has mode %v, want 0600", path, info.Mode().Perm())
	}
	ps, err := embedded.LoadNATSPasswords(path)
	if err != nil {
		t.Fatal(err)
	}
	logs := p.logs.String()
	if strings.Contains(logs, ps.Internal) || strings.Contains(logs, ps.Events) {
		t.Error("the log contains a NATS password")
	}
	if !strings.Contains(logs, path) {
		t.Errorf("the log does not name the password file %s", path)
	}

	vars := natsCredentialsCmd(t, "--data-dir", p.dataDir, "--nats-addr", u.Host)
	if vars["NATS_USER"] != embedded.EventsNATSUser || vars["NATS_PASSWORD"] != ps.Events {
		t.Errorf("nats-credentials printed user %q and another password than the events user's", vars["NATS_USER"])
	}
	nc, err := nats.Connect(vars["NATS_URL"])
	if err != nil {
		t.Fatalf("connecting with the printed NATS_URL: %v", err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := js.Stream(ctx, topology.EventStream); err != nil {
		t.Errorf("the events user cannot read the event stream's info: %v", err)
	}
}

// TestEventsUserReadsEventsOnly: the events user consumes change events with
// an ordered consumer and a durable pull consumer, and cannot read the twin
// bucket (it holds device keys), read or forge commands, or touch twinhub's
// own event consumers.
func TestEventsUserReadsEventsOnly(t *testing.T) {
	p := startTwinhub(t, "")
	var v violations
	nc, err := nats.Connect(p.natsURL(t, embedded.EventsNATSUser), nats.ErrorHandler(v.handler))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	// Replies on _INBOX are the events user's to read: twinhub's (command
	// results carry device keys) must not be among them.
	inbox, err := nc.SubscribeSync("_INBOX.>")
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"sec-A", "sec-B"} {
		if r := p.call(t, "PUT", "/devices/"+id, `{"deviceId":"`+id+`"}`); r.Status != 200 {
			t.Fatalf("create %s: %d %s", id, r.Status, r.Body)
		}
	}
	keyB := p.deviceKey(t, "sec-B")
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	// Change events: an ordered consumer and a durable pull consumer.
	events, err := js.Stream(ctx, topology.EventStream)
	if err != nil {
		t.Fatalf("stream info: %v", err)
	}
	ordered, err := events.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{FilterSubjects: []string{topology.EventSubject("sec-B")}})
	if err != nil {
		t.Fatalf("ordered consumer: %v", err)
	}
	m, err := ordered.Next(jetstream.FetchMaxWait(10 * time.Second))
	if err != nil {
		t.Fatalf("ordered consumer: reading sec-B's creation: %v", err)
	}
	var ev pipeline.Event
	if err := json.Unmarshal(m.Data(), &ev); err != nil || ev.DeviceID != "sec-B" || ev.Op != pipeline.OpCreateDevice {
		t.Errorf("ordered consumer read %s (%v), want sec-B's createDevice event", m.Data(), err)
	}
	if strings.Contains(string(m.Data()), keyB) {
		t.Error("the createDevice event carries the device's key")
	}
	durable, err := events.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{Durable: "reader", AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		t.Fatalf("durable pull consumer: %v", err)
	}
	batch, err := durable.Fetch(2, jetstream.FetchMaxWait(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for m := range batch.Messages() {
		if err := m.DoubleAck(ctx); err != nil {
			t.Errorf("durable pull consumer: ack: %v", err)
		}
		n++
	}
	if n != 2 || batch.Error() != nil {
		t.Fatalf("durable pull consumer fetched %d of 2 events: %v", n, batch.Error())
	}
	if info, err := durable.Info(ctx); err != nil || info.AckFloor.Consumer != 2 {
		t.Errorf("durable pull consumer after two acks: %+v, %v", info, err)
	}

	short := func() (context.Context, context.CancelFunc) { return context.WithTimeout(ctx, time.Second) }

	// The twin bucket: no KV handle, no direct get, no watch, no raw subscription.
	kvStream := "KV_" + topology.TwinBucket
	sctx, scancel := short()
	if _, err := js.KeyValue(sctx, topology.TwinBucket); err == nil {
		t.Error("the events user opened the twin bucket")
	}
	scancel()
	v.wait(t, "publish", "$JS.API.STREAM.INFO."+kvStream)
	directGet := "$JS.API.DIRECT.GET." + kvStream + "." + topology.KeySubject("sec-B")
	if msg, err := nc.Request(directGet, nil, 2*time.Second); err == nil {
		t.Errorf("direct get of sec-B's record answered: %.200s", msg.Data)
	}
	v.wait(t, "publish", directGet)
	sctx, scancel = short()
	if _, err := js.OrderedConsumer(sctx, kvStream, jetstream.OrderedConsumerConfig{}); err == nil {
		t.Error("the events user watches the twin bucket with an ordered consumer")
	}
	scancel()
	sub, err := nc.SubscribeSync("$KV." + topology.TwinBucket + ".>")
	if err != nil {
		t.Fatal(err)
	}
	v.wait(t, "subscription", "$KV."+topology.TwinBucket+".>")
	sub.Unsubscribe()

	// The hub bucket holds the shared access policies' keys: no way in either.
	hubStream := "KV_" + topology.HubBucket
	sctx, scancel = short()
	if _, err := js.KeyValue(sctx, topology.HubBucket); err == nil {
		t.Error("the events user opened the hub bucket")
	}
	scancel()
	v.wait(t, "publish", "$JS.API.STREAM.INFO."+hubStream)
	hubGet := "$JS.API.STREAM.MSG.GET." + hubStream
	if msg, err := nc.Request(hubGet, []byte(`{"last_by_subj":"$KV.`+topology.HubBucket+`.policies"}`), 2*time.Second); err == nil {
		t.Errorf("a get of the hub bucket's policies answered: %.200s", msg.Data)
	}
	v.wait(t, "publish", hubGet)

	// Commands: neither readable nor forgeable.
	sctx, scancel = short()
	if _, err := js.Stream(sctx, topology.CommandStream); err == nil {
		t.Error("the events user reads the command stream's info")
	}
	scancel()
	v.wait(t, "publish", "$JS.API.STREAM.INFO."+topology.CommandStream)
	sctx, scancel = short()
	if _, err := js.OrderedConsumer(sctx, topology.CommandStream, jetstream.OrderedConsumerConfig{}); err == nil {
		t.Error("the events user reads the command stream")
	}
	scancel()
	forged := pipeline.Command{ID: "forged-1", Kind: pipeline.KindPatchTwin, DeviceID: "sec-B", Body: []byte(`{"tags":{"forged":true}}`)}
	subject := topology.CommandSubject("sec-B", 4)
	sctx, scancel = short()
	if _, err := js.PublishMsg(sctx, forged.Msg(subject, "")); err == nil {
		t.Error("JetStream acknowledged a forged command from the events user")
	}
	scancel()
	v.wait(t, "publish", subject)
	// Commands of one device apply in order: once a later change is in
	// the twin, a forged command stored before it would be too.
	if r := p.call(t, "PATCH", "/twins/sec-B", `{"tags":{"real":true}}`); r.Status != 200 {
		t.Fatalf("patch sec-B: %d %s", r.Status, r.Body)
	}
	tags := p.call(t, "GET", "/twins/sec-B", "").json(t)["tags"]
	if m, _ := tags.(map[string]any); m["forged"] != nil || m["real"] != true {
		t.Errorf("sec-B's tags after a forged and a real patch: %v, want only the real one", tags)
	}

	for {
		m, err := inbox.NextMsg(0)
		if err != nil {
			break
		}
		if strings.Contains(string(m.Data), keyB) {
			t.Fatalf("the events user read sec-B's key on %s", m.Subject)
		}
	}

	// twinhub's own consumers of the event stream are out of reach.
	sctx, scancel = short()
	if err := js.DeleteConsumer(sctx, topology.EventStream, topology.HistoryConsumer); err == nil {
		t.Error("the events user deleted the history consumer")
	}
	scancel()
	v.wait(t, "publish", "$JS.API.CONSUMER.DELETE."+topology.EventStream+"."+topology.HistoryConsumer)
	notifier, err := js.Consumer(ctx, topology.EventStream, topology.NotifierConsumer)
	if err != nil {
		t.Fatalf("consumer info of the notifier: %v", err)
	}
	if b, err := notifier.Fetch(1, jetstream.FetchMaxWait(time.Second)); err == nil {
		for m := range b.Messages() {
			t.Errorf("the events user took a message from the notifier's consumer: %s", m.Data())
		}
	}
	v.wait(t, "publish", "$JS.API.CONSUMER.MSG.NEXT."+topology.EventStream+"."+topology.NotifierConsumer)
}

// TestExternalNATSWithUsers runs twinhub on an external nats-server
// configured with the authorization block `twinhub nats-credentials
// --server-config` prints (and the README shows): twinhub works as its user
// given by --nats-user/--nats-password, never logs the password, and the
// events user reads its change events.
func TestExternalNATSWithUsers(t *testing.T) {
	hubPW, eventsPW := embedded.NewPassword(), embedded.NewPassword()
	t.Setenv("TWINHUB_NATS_PASSWORD", hubPW)
	t.Setenv("TWINHUB_EVENTS_PASSWORD", eventsPW)
	out, err := exec.Command(binary, "nats-credentials", "--server-config").Output()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	conf := filepath.Join(dir, "nats.conf")
	if err := os.WriteFile(conf, append([]byte("listen: 127.0.0.1:-1\njetstream { store_dir: "+
		`"`+filepath.Join(dir, "js")+`"`+" }\n"), out...), 0o600); err != nil {
		t.Fatal(err)
	}
	opts, err := server.ProcessConfigFile(conf)
	if err != nil {
		t.Fatalf("nats-server refuses the printed configuration: %v\n%s", err, out)
	}
	opts.NoSigs, opts.NoLog = true, true
	ns, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	ns.Start()
	defer ns.Shutdown()
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	os.Unsetenv("TWINHUB_NATS_PASSWORD") // the hub gets it as a flag

	// A wrong password in the URL: a clear error, without the password.
	u, _ := url.Parse(ns.ClientURL())
	u.User = url.UserPassword(embedded.InternalNATSUser, "wrong-secret-123")
	out, err = exec.Command(binary, "run", "--data-dir", t.TempDir(), "--http-addr", "127.0.0.1:0", "--mqtt-addr", "127.0.0.1:0",
		"--mqtts-addr", "", "--https-addr", "", "--nats-url", u.String()).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "NATS refused twinhub's credentials") {
		t.Errorf("twinhub with a wrong NATS password: %v, want an error naming the refused credentials:\n%s", err, out)
	}
	if strings.Contains(string(out), "wrong-secret-123") {
		t.Errorf("twinhub printed the password of --nats-url:\n%s", out)
	}

	p := startTwinhub(t, "", "--nats-url", ns.ClientURL(), "--nats-user", embedded.InternalNATSUser, "--nats-password", hubPW)
	if r := p.call(t, "PUT", "/devices/ext-1", ""); r.Status != 200 {
		t.Fatalf("create device: %d %s", r.Status, r.Body)
	}
	if r := p.call(t, "PATCH", "/twins/ext-1", `{"tags":{"site":"x"}}`); r.Status != 200 {
		t.Fatalf("patch twin: %d %s", r.Status, r.Body)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dev, err := p.dialDevice(t, ctx, "ext-1")
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	if _, err := dev.Report(ctx, []byte(`{"fw":"1.0"}`)); err != nil {
		t.Fatalf("reported patch: %v", err)
	}
	// CA certificates live in the hub bucket too (read, watched, listed).
	caPEM := newCert(t, certSpec{cn: "ext CA", ca: true}, nil).pem()
	if r := p.call(t, "PUT", "/certificates/ext", `{"properties":{"certificate":`+strconv.Quote(caPEM)+`}}`); r.Status != 200 {
		t.Fatalf("PUT /certificates/ext: %d %s", r.Status, r.Body)
	}
	if r := p.call(t, "GET", "/certificates", ""); r.Status != 200 || !strings.Contains(string(r.Body), `"name":"ext"`) {
		t.Fatalf("GET /certificates: %d %s", r.Status, r.Body)
	}
	if strings.Contains(p.logs.String(), hubPW) {
		t.Error("the log contains the NATS password")
	}
	if strings.Contains(p.logs.String(), "ermissions violation") {
		t.Errorf("twinhub hit a permissions violation with the documented permissions:\n%s", p.logs.String())
	}

	nc, err := nats.Connect(natsCredentialsURL(embedded.EventsNATSUser, eventsPW, u.Host))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	cons, err := js.OrderedConsumer(ctx, topology.EventStream, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	var ops []string
	for len(ops) < 3 {
		m, err := cons.Next(jetstream.FetchMaxWait(10 * time.Second))
		if err != nil {
			t.Fatalf("events read so far %v: %v", ops, err)
		}
		var ev pipeline.Event
		if err := json.Unmarshal(m.Data(), &ev); err != nil {
			t.Fatal(err)
		}
		ops = append(ops, ev.Op+"/"+ev.Source)
	}
	if want := "createDevice/backend updateTwin/backend updateTwin/device"; strings.Join(ops, " ") != want {
		t.Errorf("events %v, want %s", ops, want)
	}
}

// TestREADMEShowsNATSServerConfig: the README's nats-server configuration
// block is the one twinhub prints, so it grants what twinhub needs.
func TestREADMEShowsNATSServerConfig(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(readme), natsServerConfig()) {
		t.Errorf("README.md lacks the authorization block of `twinhub nats-credentials --server-config`:\n%s", natsServerConfig())
	}
}

// TestExternalNATSWithNKeyAndTLS runs twinhub on an external nats-server
// that requires TLS with a client certificate and an NKey user with the
// documented permissions: --nats-nkey, --nats-tls-ca and
// --nats-tls-cert/--nats-tls-key are enough for twinhub to work.
func TestExternalNATSWithNKeyAndTLS(t *testing.T) {
	dir := t.TempDir()
	files, err := embedded.LocalTLS(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	clientCert, clientKey := issueClientCert(t, dir, files.CA)
	user, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	seed, _ := user.Seed()
	pub, _ := user.PublicKey()
	seedFile := filepath.Join(dir, "twinhub.nk")
	if err := os.WriteFile(seedFile, seed, 0o600); err != nil {
		t.Fatal(err)
	}
	tlsConfig, err := server.GenTLSConfig(&server.TLSConfigOpts{CertFile: files.Cert, KeyFile: files.Key, CaFile: files.CA, Verify: true})
	if err != nil {
		t.Fatal(err)
	}
	hub := topology.HubPermissions()
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: filepath.Join(dir, "js"),
		NoSigs: true, NoLog: true, TLSConfig: tlsConfig, TLSVerify: true,
		Nkeys: []*server.NkeyUser{{Nkey: pub, Permissions: &server.Permissions{
			Publish:   &server.SubjectPermission{Allow: hub.PublishAllow},
			Subscribe: &server.SubjectPermission{Allow: hub.SubscribeAllow}}}}})
	if err != nil {
		t.Fatal(err)
	}
	ns.Start()
	defer ns.Shutdown()
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	p := startTwinhub(t, "", "--nats-url", ns.ClientURL(), "--nats-nkey", seedFile,
		"--nats-tls-ca", files.CA, "--nats-tls-cert", clientCert, "--nats-tls-key", clientKey)
	if r := p.call(t, "PUT", "/devices/tls-1", ""); r.Status != 200 {
		t.Fatalf("create device: %d %s", r.Status, r.Body)
	}
	if r := p.call(t, "PATCH", "/twins/tls-1", `{"tags":{"site":"x"}}`); r.Status != 200 {
		t.Fatalf("patch twin: %d %s", r.Status, r.Body)
	}
	if strings.Contains(p.logs.String(), "ermissions violation") {
		t.Errorf("twinhub hit a permissions violation with the documented permissions:\n%s", p.logs.String())
	}
}

// issueClientCert writes a TLS client certificate signed by the local CA
// in dir/tls and returns its certificate and key files.
func issueClientCert(t *testing.T, dir, caFile string) (certFile, keyFile string) {
	t.Helper()
	caPair, err := tls.LoadX509KeyPair(caFile, filepath.Join(dir, "tls", "ca-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caPair.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "twinhub-client"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caPair.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	certFile, keyFile = filepath.Join(dir, "client.pem"), filepath.Join(dir, "client-key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

// TestNATSClientFlagErrors: the external-NATS credential flags are refused
// without --nats-url, in conflicting combinations and half given, and the
// errors never repeat a password.
func TestNATSClientFlagErrors(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--nats-user", "u", "--nats-password", "secret-1"}, "--nats-url"},
		{[]string{"--nats-url", "nats://h:4222", "--nats-user", "u"}, "--nats-password"},
		{[]string{"--nats-url", "nats://h:4222", "--nats-creds", "a.creds", "--nats-nkey", "a.nk"}, "choose one"},
		{[]string{"--nats-url", "nats://u:secret-1@h:4222", "--nats-user", "u", "--nats-password", "secret-1"}, "choose one"},
		{[]string{"--nats-url", "nats://h:4222", "--nats-tls-cert", "c.pem"}, "--nats-tls-key"},
		{[]string{"--nats-url", "nats://u:secret-1@h:4222\x7f"}, "--nats-url"},
	} {
		_, err := parseRunFlags(c.args)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: err %v, want it to mention %s", c.args, err, c.want)
		} else if strings.Contains(err.Error(), "secret-1") {
			t.Errorf("%v: the error repeats the password: %v", c.args, err)
		}
	}
	if _, err := parseRunFlags([]string{"--nats-url", "nats://u:secret-1@h:4222", "--nats-tls-ca", "ca.pem"}); err != nil {
		t.Errorf("credentials in the URL with a CA: %v", err)
	}
}
