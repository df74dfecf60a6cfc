package mqttbridge

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/twinhub/twinhub/bridge/sas"
	"github.com/twinhub/twinhub/pipeline"
	"github.com/twinhub/twinhub/pipeline/topology"
)

// Revocation: a device session lasts only as long as the credentials it
// connected with. The hook ends a session
//   - when its SAS token expires (a timer per session, set from the token's
//     se when the session starts and stopped when it ends), and
//   - when the device is disabled or deleted, or its keys change so that the
//     token's key is no longer one of the device's: the processor announces
//     every registry change on a core NATS subject (topology.RegistrySubject),
//     which every instance's hook receives (Run); a hook with a session of
//     that device reads the record and checks each session again. A session
//     that was authenticated before a notice but started after it (its
//     record was read before the change) is checked when it starts: the
//     hook remembers the devices it had notices for in the last
//     recentNotice.
//
// Each revocation is logged with its reason (never the token) and counted in
// twinhub_mqtt_sessions_revoked_total.

// Revocation reasons, the values of the metric's reason label.
const (
	revokedExpired    = "expired"
	revokedDisabled   = "disabled"
	revokedDeleted    = "deleted"
	revokedKeyChanged = "key_changed"
)

// recentNotice is how long a registry notice makes a new session of its
// device be checked again when it starts; far longer than the time between
// authenticating a connection and starting its session.
const recentNotice = 10 * time.Second

// session is an open device connection and the token or certificate it
// connected with.
type session struct {
	cl    *mqtt.Client
	token *sas.Token // nil for a certificate session
	cert  *certAuth  // nil for a SAS session
	// until is when the credentials expire.
	until time.Time
	// expiry ends the session when the credentials expire.
	expiry *time.Timer
}

// sessions tracks this broker's open device sessions by device ID.
type sessions struct {
	revoked *prometheus.CounterVec

	mu       sync.Mutex
	byDevice map[string]map[*mqtt.Client]*session
	// notices holds when devices last had a registry notice; entries older
	// than recentNotice count for nothing and are pruned once there are
	// 1,024.
	notices map[string]time.Time
}

func newSessions(reg prometheus.Registerer) *sessions {
	s := &sessions{byDevice: make(map[string]map[*mqtt.Client]*session), notices: make(map[string]time.Time),
		revoked: promauto.With(reg).NewCounterVec(prometheus.CounterOpts{
			Namespace: "twinhub", Subsystem: "mqtt", Name: "sessions_revoked_total",
			Help: "Device sessions the hub ended because their credentials stopped being valid, by reason (expired, disabled, deleted, key_changed, certificate_changed).",
		}, []string{"reason"}),
	}
	for _, r := range []string{revokedExpired, revokedDisabled, revokedDeleted, revokedKeyChanged, revokedCertificate} {
		s.revoked.WithLabelValues(r)
	}
	return s
}

// track starts following an authenticated session; pk is its CONNECT.
func (a *Auth) track(cl *mqtt.Client, pk packets.Packet) {
	if cl.Net.Inline {
		return
	}
	var s *session
	if len(pk.Connect.Password) == 0 {
		if s = a.trackCertificate(cl); s == nil {
			return
		}
	} else {
		tok, err := sas.Parse(string(pk.Connect.Password))
		if err != nil {
			// Only a session another hook let in has no token: nothing to revoke.
			a.log.Error("a device session started without a SAS token; it cannot be revoked", "device", cl.ID, "remote", cl.Net.Remote)
			return
		}
		s = &session{cl: cl, token: tok, until: tok.Expiry}
	}
	a.sessions.mu.Lock()
	// Runs once, at expiry, unless the session ended first (untrack stops it).
	s.expiry = time.AfterFunc(time.Until(s.until), func() { a.revoke(cl, revokedExpired) })
	m := a.sessions.byDevice[cl.ID]
	if m == nil {
		m = make(map[*mqtt.Client]*session, 1)
		a.sessions.byDevice[cl.ID] = m
	}
	m[cl] = s
	noticed, recent := a.sessions.notices[cl.ID]
	recent = recent && time.Since(noticed) < recentNotice
	a.sessions.mu.Unlock()
	if recent {
		// Ends after one record read, bounded by recheck's timeout.
		go a.recheck(context.Background(), cl.ID)
	}
}

// untrack forgets a session that ended.
func (a *Auth) untrack(cl *mqtt.Client) {
	a.sessions.mu.Lock()
	defer a.sessions.mu.Unlock()
	m := a.sessions.byDevice[cl.ID]
	if s, ok := m[cl]; ok {
		s.expiry.Stop()
		delete(m, cl)
		if len(m) == 0 {
			delete(a.sessions.byDevice, cl.ID)
		}
	}
}

// sessionsOf returns the open sessions of a device.
func (a *Auth) sessionsOf(deviceID string) []*session {
	a.sessions.mu.Lock()
	defer a.sessions.mu.Unlock()
	var out []*session
	for _, s := range a.sessions.byDevice[deviceID] {
		out = append(out, s)
	}
	return out
}

// moduleSessionsOf returns the open sessions of deviceID's modules, by
// module entity ID.
func (a *Auth) moduleSessionsOf(deviceID string) map[string][]*session {
	a.sessions.mu.Lock()
	defer a.sessions.mu.Unlock()
	out := map[string][]*session{}
	for id, sessions := range a.sessions.byDevice {
		if device, module := pipeline.SplitEntity(id); module != "" && device == deviceID {
			for _, s := range sessions {
				out[id] = append(out[id], s)
			}
		}
	}
	return out
}

// revoke ends a session whose credentials are no longer valid.
func (a *Auth) revoke(cl *mqtt.Client, reason string) {
	if cl.Closed() {
		return
	}
	a.sessions.revoked.WithLabelValues(reason).Inc()
	a.log.Warn("ended a device session: its credentials are no longer valid", "device", cl.ID, "remote", cl.Net.Remote, "reason", reason)
	// Stop closes the socket without writing to it (a DISCONNECT could
	// block on a device that does not read); mochi then ends the session
	// as for any dropped connection.
	cl.Stop(packets.ErrNotAuthorized)
}

// Run ends device sessions whose credentials registry changes revoked,
// until ctx ends. nc receives the processor's registry notices.
func (a *Auth) Run(ctx context.Context, nc *nats.Conn) error {
	sub, err := nc.Subscribe(topology.RegistrySubjects, func(m *nats.Msg) {
		token := m.Subject[strings.LastIndexByte(m.Subject, '.')+1:]
		deviceID, err := topology.DeviceID(token)
		if err != nil {
			a.log.Warn("ignoring a registry notice with an undecodable device", "subject", m.Subject, "err", err)
			return
		}
		a.check(ctx, deviceID, a.noticed(deviceID))
		if !pipeline.IsModule(deviceID) {
			// A device's modules connect only while it exists and is enabled.
			for module, open := range a.moduleSessionsOf(deviceID) {
				a.check(ctx, module, open)
			}
		}
	})
	if err == nil {
		err = nc.Flush() // the subscription is in place before Run's caller goes on
	}
	if err != nil {
		return fmt.Errorf("subscribing to registry notices (%s): %w", topology.RegistrySubjects, err)
	}
	<-ctx.Done()
	return sub.Unsubscribe()
}

// noticed records a registry notice for deviceID and returns its open
// sessions.
func (a *Auth) noticed(deviceID string) []*session {
	a.sessions.mu.Lock()
	now := time.Now()
	if len(a.sessions.notices) >= 1024 {
		for id, at := range a.sessions.notices {
			if now.Sub(at) >= recentNotice {
				delete(a.sessions.notices, id)
			}
		}
	}
	a.sessions.notices[deviceID] = now
	a.sessions.mu.Unlock()
	return a.sessionsOf(deviceID)
}

// recheck checks the device's open sessions against its record and ends
// those whose credentials are no longer valid.
func (a *Auth) recheck(ctx context.Context, deviceID string) {
	a.check(ctx, deviceID, a.sessionsOf(deviceID))
}

// parentRevoked returns why a module's sessions end because of its device
// (deleted or disabled), or "" for a device or a module whose device is
// fine (or cannot be read now: its sessions stay until the next notice).
func (a *Auth) parentRevoked(ctx context.Context, entity string) string {
	device, module := pipeline.SplitEntity(entity)
	if module == "" {
		return ""
	}
	parent, err := a.records.Get(ctx, device)
	switch {
	case errors.Is(err, pipeline.ErrNotFound):
		return revokedDeleted
	case err != nil:
		a.log.Error("reading a module's device record to re-check its sessions failed", "module", entity, "err", err)
		return ""
	case parent.Twin.Status != "enabled":
		return revokedDisabled
	}
	return ""
}

func (a *Auth) check(ctx context.Context, deviceID string, open []*session) {
	if len(open) == 0 {
		return // the device is not connected here: nothing to read
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	rec, err := a.records.Get(ctx, deviceID)
	switch {
	case errors.Is(err, pipeline.ErrNotFound):
		for _, s := range open {
			a.revoke(s.cl, revokedDeleted)
		}
		return
	case err != nil:
		a.log.Error("reading a device record to re-check its sessions failed; they stay open until their tokens expire",
			"device", deviceID, "err", err)
		return
	case rec.Twin.Status != "enabled":
		for _, s := range open {
			a.revoke(s.cl, revokedDisabled)
		}
		return
	}
	if reason := a.parentRevoked(ctx, deviceID); reason != "" {
		for _, s := range open {
			a.revoke(s.cl, reason)
		}
		return
	}
	now := time.Now()
	for _, s := range open {
		if s.cert != nil {
			if reason := a.recheckCertificate(ctx, s, rec, now); reason != "" {
				a.revoke(s.cl, reason)
			}
			continue
		}
		if rec.Identity.AuthType() != pipeline.AuthSAS {
			a.revoke(s.cl, revokedKeyChanged) // the device became an X.509 device
			continue
		}
		if s.token.KeyName != "" {
			continue // signed with a policy key, which a device update does not change
		}
		switch err := s.token.Verify(now, rec.Identity.PrimaryKey, rec.Identity.SecondaryKey); {
		case errors.Is(err, sas.ErrExpired):
			a.revoke(s.cl, revokedExpired)
		case err != nil:
			a.revoke(s.cl, revokedKeyChanged)
		}
	}
}
