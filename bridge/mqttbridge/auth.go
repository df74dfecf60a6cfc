package mqttbridge

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/twinhub/twinhub/bridge/sas"
	"github.com/twinhub/twinhub/pipeline"
)

// Records reads twin records; *pipeline.Store implements it.
type Records interface {
	Get(ctx context.Context, deviceID string) (*pipeline.Record, error)
}

// Commands submits pipeline commands; *pipeline.Client implements it.
type Commands interface {
	Submit(ctx context.Context, cmd pipeline.Command) (*pipeline.Pending, error)
}

// Auth authenticates and authorizes devices on the embedded broker, and
// keeps each twin's connectionState current.
//
// A device connects with client ID = device ID, user name = device ID (or
// IoT Hub's "{host}/{deviceId}/?api-version=…"), and a SAS token as the
// password, signed with the device's primary or secondary key (or with a
// policy key that has DeviceConnect, named by skn). A disabled device is
// refused. Refusals get CONNACK 5 (not authorized). What a connected device
// may do is Isolation's to decide.
type Auth struct {
	mqtt.HookBase
	records  Records
	commands Commands
	policies *sas.Policies
	hubNames []string // host names a token's sr may name (sas.CheckScope); nil: localhost
	server   *mqtt.Server
	log      *slog.Logger
	failures *prometheus.CounterVec
	// sessions are the open device sessions, for revocation (revoke.go).
	sessions *sessions
	// cas verifies CA-signed devices (x509.go); nil refuses them.
	cas CertificateAuthorities
	// pending holds authenticated certificates until their sessions start.
	pending certPending
}

var _ mqtt.Hook = (*Auth)(nil)

// NewAuth returns the hook; policies may be nil (device keys only).
func NewAuth(records Records, commands Commands, policies *sas.Policies, log *slog.Logger, reg prometheus.Registerer) *Auth {
	f := promauto.With(reg)
	a := &Auth{records: records, commands: commands, policies: policies, log: log.With("component", "mqtt-auth"),
		sessions: newSessions(reg),
		failures: f.NewCounterVec(prometheus.CounterOpts{
			Namespace: "twinhub", Subsystem: "mqtt", Name: "auth_failures_total",
			Help: "MQTT connections refused, by reason.",
		}, []string{"reason"}),
	}
	for _, r := range []string{"malformed", "client_id", "unknown_device", "disabled", "expired", "audience", "resource", "signature",
		failAuthType, failThumbprint, failCertificate} {
		a.failures.WithLabelValues(r)
	}
	return a
}

// SetHubNames sets the host names a device token's sr may name
// (sas.HubNames; localhost only until it is called).
func (a *Auth) SetHubNames(names []string) { a.hubNames = names }

// SetServer gives the hook the broker, to tell a device's current
// connection from one it replaced.
func (a *Auth) SetServer(s *mqtt.Server) { a.server = s }

// ID names the hook.
func (a *Auth) ID() string { return "twinhub-auth" }

// Provides reports the hook points the hook implements.
func (a *Auth) Provides(b byte) bool {
	switch b {
	case mqtt.OnConnectAuthenticate, mqtt.OnSessionEstablished, mqtt.OnDisconnect:
		return true
	}
	return false
}

// DeviceFromUsername returns the device ID a user name names: the user name
// itself, or the second segment of "{host}/{deviceId}/?api-version=…". For
// a module's "{host}/{deviceId}/{moduleId}/?api-version=…" it is the
// module's entity ID, "{deviceId}/{moduleId}" (pipeline.ModuleEntity).
func DeviceFromUsername(username string) string {
	if !strings.Contains(username, "/") {
		return username
	}
	parts := strings.SplitN(username, "/", 4)
	if len(parts) == 4 && parts[2] != "" && !strings.HasPrefix(parts[2], "?") {
		return pipeline.ModuleEntity(parts[1], parts[2])
	}
	return parts[1]
}

// OnConnectAuthenticate verifies the device's SAS token. Its sr must name
// one of the hub's names and cover the device (sas.CheckScope: {host},
// {host}/devices or {host}/devices/{id}).
func (a *Auth) OnConnectAuthenticate(cl *mqtt.Client, pk packets.Packet) bool {
	user := string(pk.Connect.Username)
	deviceID := DeviceFromUsername(user)
	remote := cl.Net.Remote
	fail := func(reason string) bool {
		a.failures.WithLabelValues(reason).Inc()
		a.log.Warn("refused an MQTT connection", "client", cl.ID, "device", deviceID, "remote", remote, "reason", reason)
		return false
	}
	if deviceID == "" || cl.ID != deviceID {
		return fail("client_id")
	}
	if chain := peerCertificates(cl.Net.Conn); len(chain) > 0 && len(pk.Connect.Password) == 0 {
		return a.authenticateCertificate(cl, deviceID, chain, fail)
	}
	tok, err := sas.Parse(string(pk.Connect.Password))
	if err != nil {
		return fail("malformed")
	}
	hubNames := a.hubNames
	if hubNames == nil {
		hubNames = sas.HubNames()
	}
	switch err := tok.ForDevice(hubNames, deviceID); {
	case errors.Is(err, sas.ErrAudience):
		return fail("audience")
	case err != nil:
		return fail("resource")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	rec, ok := a.deviceRecord(ctx, deviceID)
	if !ok {
		return fail("unknown_device")
	}
	if rec.Identity.AuthType() != pipeline.AuthSAS {
		return fail(failAuthType) // an X.509 device has no SAS credentials
	}
	keys := []string{rec.Identity.PrimaryKey, rec.Identity.SecondaryKey}
	if tok.KeyName != "" {
		keys = nil
		if a.policies != nil {
			if p, ok := a.policies.Get(tok.KeyName); ok && p.Has(sas.DeviceConnect) {
				keys = []string{p.PrimaryKey, p.SecondaryKey}
			}
		}
	}
	switch err := tok.Verify(time.Now(), keys...); {
	case errors.Is(err, sas.ErrExpired):
		return fail("expired")
	case err != nil:
		return fail("signature")
	}
	if rec.Twin.Status != "enabled" {
		return fail("disabled")
	}
	if device, module := pipeline.SplitEntity(deviceID); module != "" {
		// A module connects only while its device exists and is enabled.
		parent, err := a.records.Get(ctx, device)
		if err != nil {
			return fail("unknown_device")
		}
		if parent.Twin.Status != "enabled" {
			return fail("disabled")
		}
	}
	return true
}

// deviceRecord reads the record of a device (or module) that connects; ok is
// false when it does not exist or cannot be read (logged).
func (a *Auth) deviceRecord(ctx context.Context, deviceID string) (*pipeline.Record, bool) {
	rec, err := a.records.Get(ctx, deviceID)
	if err != nil {
		if !errors.Is(err, pipeline.ErrNotFound) {
			a.log.Error("reading a device record to authenticate it failed", "device", deviceID, "err", err)
		}
		return nil, false
	}
	return rec, true
}

// OnSessionEstablished marks the twin connected, and follows the session
// until it ends, to end it when its credentials are revoked.
func (a *Auth) OnSessionEstablished(cl *mqtt.Client, pk packets.Packet) {
	a.track(cl, pk)
	a.connection(cl, true)
}

// OnDisconnect marks the twin disconnected, unless a newer connection of
// the same device replaced this one.
func (a *Auth) OnDisconnect(cl *mqtt.Client, _ error, _ bool) {
	a.untrack(cl)
	if a.server != nil {
		if cur, ok := a.server.Clients.Get(cl.ID); ok && cur != cl && !cur.Closed() {
			return
		}
	}
	a.connection(cl, false)
}

func (a *Auth) connection(cl *mqtt.Client, connected bool) {
	if cl.Net.Inline || a.commands == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := a.commands.Submit(ctx, pipeline.Command{Kind: pipeline.KindConnection, DeviceID: cl.ID, Connected: connected}); err != nil {
		a.log.Warn("recording a device's connection state failed", "device", cl.ID, "connected", connected, "err", err)
	}
}
