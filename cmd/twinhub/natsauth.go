package main

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/spf13/cobra"

	"github.com/twinhub/twinhub/deploy/embedded"
	"github.com/twinhub/twinhub/pipeline/topology"
)

// natsPasswordsFile is where the embedded nats-server's user passwords live
// in the data directory.
const natsPasswordsFile = "nats-passwords.json"

// natsClientConfig is how twinhub authenticates to an external NATS
// (--nats-url); the embedded server's users need none of it.
type natsClientConfig struct {
	creds    string // --nats-creds: a .creds file (JWT and NKey seed)
	nkey     string // --nats-nkey: an NKey seed file
	user     string // --nats-user
	password string // --nats-password
	tlsCA    string // --nats-tls-ca
	tlsCert  string // --nats-tls-cert: client certificate
	tlsKey   string // --nats-tls-key
}

// natsClientFlags declares the flags; the returned func reads them after Parse.
func natsClientFlags(fs *envFlags) func() natsClientConfig {
	creds := fs.String("nats-creds", "", "with --nats-url: authenticate with this credentials file (user JWT and NKey seed)")
	nkey := fs.String("nats-nkey", "", "with --nats-url: authenticate with the NKey seed in this file")
	user := fs.String("nats-user", "", "with --nats-url: user name (or put user:password in the URL)")
	password := fs.String("nats-password", "", "with --nats-url: password of --nats-user")
	tlsCA := fs.String("nats-tls-ca", "", "with --nats-url: CA certificates (PEM) to verify the NATS server with")
	tlsCert := fs.String("nats-tls-cert", "", "with --nats-url: client certificate (PEM) for TLS client authentication")
	tlsKey := fs.String("nats-tls-key", "", "with --nats-url: private key (PEM) of --nats-tls-cert")
	return func() natsClientConfig {
		return natsClientConfig{creds: *creds, nkey: *nkey, user: *user, password: *password,
			tlsCA: *tlsCA, tlsCert: *tlsCert, tlsKey: *tlsKey}
	}
}

func (c natsClientConfig) validate(natsURL string) error {
	var errs []error
	if natsURL == "" {
		if c != (natsClientConfig{}) {
			errs = append(errs, errors.New("--nats-creds, --nats-nkey, --nats-user, --nats-password and --nats-tls-* apply to an external NATS: set --nats-url too"))
		}
		return errors.Join(errs...)
	}
	u, err := url.Parse(natsURL)
	if err != nil {
		// The error would repeat the URL with its password.
		return errors.New("--nats-url is not a URL; want e.g. nats://host:4222")
	}
	methods := 0
	for _, set := range []bool{c.creds != "", c.nkey != "", c.user != "" || c.password != "", u.User != nil} {
		if set {
			methods++
		}
	}
	if methods > 1 {
		errs = append(errs, errors.New("choose one of --nats-creds, --nats-nkey, --nats-user/--nats-password and user:password in --nats-url"))
	}
	if (c.user == "") != (c.password == "") {
		errs = append(errs, errors.New("--nats-user and --nats-password go together"))
	}
	if (c.tlsCert == "") != (c.tlsKey == "") {
		errs = append(errs, errors.New("--nats-tls-cert and --nats-tls-key go together"))
	}
	return errors.Join(errs...)
}

// options are the nats.Options that authenticate to an external NATS.
func (c natsClientConfig) options() []nats.Option {
	var opts []nats.Option
	switch {
	case c.creds != "":
		opts = append(opts, nats.UserCredentials(c.creds))
	case c.nkey != "":
		if o, err := nats.NkeyOptionFromSeed(c.nkey); err == nil {
			opts = append(opts, o)
		} else {
			opts = append(opts, func(*nats.Options) error { return fmt.Errorf("--nats-nkey: %w", err) })
		}
	case c.user != "":
		opts = append(opts, nats.UserInfo(c.user, c.password))
	}
	if c.tlsCA != "" {
		opts = append(opts, nats.RootCAs(c.tlsCA))
	}
	if c.tlsCert != "" {
		opts = append(opts, nats.ClientCert(c.tlsCert, c.tlsKey))
	}
	return opts
}

// embeddedNATSUsers returns the embedded server's users with the passwords
// kept in the data directory (created on first start): twinhub's own,
// which may do everything, and the events reader.
func embeddedNATSUsers(dataDir string) (internal embedded.NATSUser, users []embedded.NATSUser, ps *embedded.NATSPasswords, created bool, err error) {
	ps, created, err = embedded.OpenNATSPasswords(filepath.Join(dataDir, natsPasswordsFile))
	if err != nil {
		return embedded.NATSUser{}, nil, nil, false, err
	}
	perms := embedded.NATSPermissions(topology.EventReaderPermissions())
	internal = embedded.NATSUser{Name: embedded.InternalNATSUser, Password: ps.Internal}
	users = []embedded.NATSUser{{Name: embedded.EventsNATSUser, Password: ps.Events, Permissions: &perms}}
	return internal, users, ps, created, nil
}

// natsErrorLogger logs the errors NATS reports asynchronously, such as a
// permissions violation or a refused password.
func natsErrorLogger(log *slog.Logger) nats.ErrHandler {
	return func(nc *nats.Conn, _ *nats.Subscription, err error) {
		msg := "NATS reported an error"
		if errors.Is(err, nats.ErrPermissionViolation) || errors.Is(err, nats.ErrAuthorization) {
			msg = "NATS refused twinhub: its user needs the permissions in the README (twinhub nats-credentials --server-config)"
		}
		log.Error(msg, "component", "nats-client", "connection", nc.Opts.Name, "err", err)
	}
}

// natsRefusal explains a failed setup by the connection's last error, such
// as refused credentials; it is empty when there is none.
func natsRefusal(nc *nats.Conn) string {
	err := nc.LastError()
	switch {
	case err == nil:
		return ""
	case errors.Is(err, nats.ErrAuthorization), errors.Is(err, nats.ErrAuthExpired), errors.Is(err, nats.ErrAuthRevoked):
		return fmt.Sprintf(" (NATS refused twinhub's credentials: %v; check --nats-creds, --nats-nkey, --nats-user/--nats-password or the user in --nats-url)", err)
	case errors.Is(err, nats.ErrPermissionViolation):
		return fmt.Sprintf(" (%v; twinhub's user needs the permissions `twinhub nats-credentials --server-config` prints)", err)
	}
	return fmt.Sprintf(" (last NATS error: %v)", err)
}

// redactURL returns a NATS URL without its password, for messages.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(an unparsable URL)"
	}
	return u.Redacted()
}

// natsCredentialsURL is nats://user:password@addr.
func natsCredentialsURL(user, password, addr string) string {
	return (&url.URL{Scheme: "nats", User: url.UserPassword(user, password), Host: addr}).String()
}

func newNATSCredentialsCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "nats-credentials",
		Short: "print the embedded NATS's credentials for change-event consumers",
		Args:  noArgs,
	}
	fs := &envFlags{FlagSet: cmd.Flags(), env: clientEnv}
	dataDir := fs.String("data-dir", "./data", "data directory of the hub (the NATS passwords are in it)")
	addr := fs.String("nats-addr", "127.0.0.1:4222", "address the hub's embedded NATS listens on, as `twinhub run --nats-addr`")
	serverConfig := fs.Bool("server-config", false, "print instead the authorization block of a nats-server configuration "+
		"with the users and permissions twinhub and change-event readers need on an external NATS")
	user := fs.String("user", embedded.EventsNATSUser, "events: the read-only change-event reader; "+embedded.InternalNATSUser+
		": twinhub's own user, which may do everything (for a second instance with --nats-url, or repairs)")
	cmd.RunE = func(*cobra.Command, []string) error {
		if err := fs.Err(); err != nil {
			return err
		}
		return cmdNATSCredentials(*dataDir, *addr, *user, *serverConfig)
	}
	return cmd
}

// cmdNATSCredentials prints a user's credentials for the embedded NATS of
// the hub whose data directory is given.
func cmdNATSCredentials(dataDir, addr, user string, serverConfig bool) error {
	if serverConfig {
		fmt.Print(natsServerConfig())
		return nil
	}
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return fmt.Errorf("--nats-addr %q: %v", addr, err)
	}
	ps, err := embedded.LoadNATSPasswords(filepath.Join(dataDir, natsPasswordsFile))
	if err != nil {
		return fmt.Errorf("%w (pass the hub's --data-dir; the file is created when the hub first starts)", err)
	}
	password, ok := ps.Password(user)
	if !ok {
		return fmt.Errorf("--user %q: want %s or %s", user, embedded.EventsNATSUser, embedded.InternalNATSUser)
	}
	fmt.Printf("NATS_URL=%s\nNATS_USER=%s\nNATS_PASSWORD=%s\n", natsCredentialsURL(user, password, addr), user, password)
	if user == embedded.EventsNATSUser {
		// On stderr, so that stdout stays a list of variables (export $(twinhub nats-credentials)).
		fmt.Fprintf(os.Stderr, "read-only: stream %s (subjects %s), its own consumers, replies on _INBOX.>\n", topology.EventStream, topology.EventSubjects)
	}
	return nil
}

// natsServerConfig renders the authorization block of a nats-server
// configuration for an external NATS: twinhub's user and the events reader
// with their permissions, passwords from environment variables.
func natsServerConfig() string {
	var b strings.Builder
	list := func(indent, name string, subjects []string) {
		if len(subjects) == 0 {
			return
		}
		fmt.Fprintf(&b, "%s%s: [\n", indent, name)
		for _, s := range subjects {
			fmt.Fprintf(&b, "%s  %q\n", indent, s)
		}
		fmt.Fprintf(&b, "%s]\n", indent)
	}
	user := func(name, passwordVar string, p topology.Permissions) {
		fmt.Fprintf(&b, "    {\n      user: %s\n      password: $%s\n      permissions: {\n", name, passwordVar)
		b.WriteString("        publish: {\n")
		list("          ", "allow", p.PublishAllow)
		list("          ", "deny", p.PublishDeny)
		b.WriteString("        }\n        subscribe: {\n")
		list("          ", "allow", p.SubscribeAllow)
		list("          ", "deny", p.SubscribeDeny)
		b.WriteString("        }\n      }\n    }\n")
	}
	b.WriteString("authorization {\n  users: [\n")
	user(embedded.InternalNATSUser, "TWINHUB_NATS_PASSWORD", topology.HubPermissions())
	user(embedded.EventsNATSUser, "TWINHUB_EVENTS_PASSWORD", topology.EventReaderPermissions())
	b.WriteString("  ]\n}\n")
	return b.String()
}
