package embedded

import (
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/nats-io/nats.go"
)

// TestNATSRequiresAUser: the embedded server refuses anonymous clients and
// wrong passwords, Connect authenticates as the internal user, and a user's
// permissions are enforced.
func TestNATSRequiresAUser(t *testing.T) {
	reader := NATSUser{Name: "reader", Password: NewPassword(), Permissions: &NATSPermissions{
		PublishAllow: []string{"allowed.>"}, SubscribeAllow: []string{"_INBOX.>"}}}
	ns, err := StartNATS(NATSConfig{Addr: "127.0.0.1:-1", StoreDir: t.TempDir(), Users: []NATSUser{reader},
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Shutdown()
	if nc, err := nats.Connect(ns.ClientURL()); !errors.Is(err, nats.ErrAuthorization) {
		if nc != nil {
			nc.Close()
		}
		t.Fatalf("anonymous client: %v, want an authorization violation", err)
	}
	if nc, err := nats.Connect(ns.ClientURL(), nats.UserInfo(reader.Name, "wrong")); !errors.Is(err, nats.ErrAuthorization) {
		if nc != nil {
			nc.Close()
		}
		t.Fatalf("wrong password: %v, want an authorization violation", err)
	}
	internal, err := ns.Connect("internal")
	if err != nil {
		t.Fatalf("in-process connection as the internal user: %v", err)
	}
	defer internal.Close()

	denied := make(chan error, 1)
	nc, err := nats.Connect(ns.ClientURL(), nats.UserInfo(reader.Name, reader.Password),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { denied <- err }))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if err := nc.Publish("other.subject", nil); err != nil {
		t.Fatal(err)
	}
	if err := <-denied; !errors.Is(err, nats.ErrPermissionViolation) {
		t.Errorf("publish outside the allow list: %v, want a permissions violation", err)
	}
}

// TestNATSPasswordsFile: the passwords are created once, mode 0600, the
// same on the next open; a file others may read is refused.
func TestNATSPasswordsFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nats-passwords.json")
	ps, created, err := OpenNATSPasswords(path)
	if err != nil || !created {
		t.Fatalf("first open: created %v, %v", created, err)
	}
	if info, err := os.Stat(path); err != nil || info.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v, %v; want 0600", info.Mode().Perm(), err)
	}
	again, created, err := OpenNATSPasswords(path)
	if err != nil || created || again.Internal != ps.Internal || again.Events != ps.Events || ps.Internal == ps.Events {
		t.Fatalf("second open: created %v, %v, same passwords %v", created, err, again != nil && again.Internal == ps.Internal)
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := OpenNATSPasswords(path); err == nil {
		t.Error("a password file others may read was accepted")
	}
}
