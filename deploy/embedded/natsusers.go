package embedded

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// User names of the embedded nats-server's users.
const (
	// InternalNATSUser is the user twinhub itself connects as.
	InternalNATSUser = "twinhub"
	// EventsNATSUser is the read-only user of outside change-event consumers.
	EventsNATSUser = "events"
)

// NATSPasswords are the passwords of the embedded server's users, created
// once with the data directory and kept in a file only its owner may read.
type NATSPasswords struct {
	path string
	// Internal is the password of InternalNATSUser.
	Internal string `json:"internal"`
	// Events is the password of EventsNATSUser.
	Events string `json:"events"`
}

// NewPassword returns a random password of 256 bits, URL-safe so that it can
// stand in a nats://user:password@host URL as it is.
func NewPassword() string {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		panic("BUG: crypto/rand failed: " + err.Error())
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// LoadNATSPasswords reads the password file.
func LoadNATSPasswords(path string) (*NATSPasswords, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading the NATS passwords: %w", err)
	}
	ps := &NATSPasswords{path: path}
	if err := json.Unmarshal(b, ps); err != nil {
		return nil, fmt.Errorf("reading the NATS passwords in %s: %w; remove the file to create new ones", path, err)
	}
	if ps.Internal == "" || ps.Events == "" {
		return nil, fmt.Errorf("%s lacks a password; remove the file to create new ones", path)
	}
	return ps, nil
}

// OpenNATSPasswords loads the password file, or creates it (mode 0600) with
// new random passwords if it does not exist. A file others may read is an
// error.
func OpenNATSPasswords(path string) (ps *NATSPasswords, created bool, err error) {
	ps, err = LoadNATSPasswords(path)
	if err == nil {
		if info, serr := os.Stat(path); serr == nil && info.Mode().Perm()&0o077 != 0 {
			return nil, false, fmt.Errorf("%s is readable by others (mode %v); run chmod 600 %s", path, info.Mode().Perm(), path)
		}
		return ps, false, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, false, err
	}
	ps = &NATSPasswords{path: path, Internal: NewPassword(), Events: NewPassword()}
	b, _ := json.MarshalIndent(ps, "", "  ")
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, false, fmt.Errorf("creating the NATS passwords: %w", err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o600); err != nil {
		return nil, false, fmt.Errorf("writing the NATS passwords: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return nil, false, fmt.Errorf("writing the NATS passwords: %w", err)
	}
	return ps, true, nil
}

// Path is the password file.
func (ps *NATSPasswords) Path() string { return ps.path }

// Password returns the password of a user named by InternalNATSUser or
// EventsNATSUser.
func (ps *NATSPasswords) Password(user string) (string, bool) {
	switch user {
	case InternalNATSUser:
		return ps.Internal, true
	case EventsNATSUser:
		return ps.Events, true
	}
	return "", false
}
