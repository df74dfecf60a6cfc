package main

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"
)

// envFlags declares flags on a pflag set; the flags env selects default to
// TWINHUB_* environment variables (--http-addr: TWINHUB_HTTP_ADDR).
// `twinhub run` reads every flag from the environment; the clients only
// the ones clientEnv lists.
type envFlags struct {
	*pflag.FlagSet
	env     func(name string) bool // nil: none
	envErrs []error                // environment variables that did not parse
}

// allEnv: every flag has an environment variable (twinhub run).
func allEnv(string) bool { return true }

// clientEnv: the clients' environment variables. They mean the same as
// the flags of `twinhub run` of the same name, or have no such flag.
func clientEnv(name string) bool {
	switch name {
	case "server", "data-dir", "connection-string", "mqtt", "nats-addr":
		return true
	}
	return false
}

// flagSet returns a flag set of its own, without environment variables.
func flagSet(name string) *envFlags {
	return &envFlags{FlagSet: pflag.NewFlagSet(name, pflag.ContinueOnError)}
}

// Err reports the environment variables that did not parse.
func (f *envFlags) Err() error { return errors.Join(f.envErrs...) }

func (f *envFlags) lookup(name string) (string, bool) {
	if f.env == nil || !f.env(name) {
		return "", false
	}
	return os.LookupEnv(envName(name))
}

func (f *envFlags) usage(name, usage string) string {
	if f.env != nil && f.env(name) {
		return usage + " [" + envName(name) + "]"
	}
	return usage
}

func (f *envFlags) envErr(name, v string, err error) {
	f.envErrs = append(f.envErrs, fmt.Errorf("environment variable %s=%q: %v", envName(name), v, err))
}

func envName(flagName string) string {
	return "TWINHUB_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

func (f *envFlags) String(name, def, usage string) *string {
	if v, ok := f.lookup(name); ok {
		def = v
	}
	return f.FlagSet.String(name, def, f.usage(name, usage))
}

func (f *envFlags) Int(name string, def int, usage string) *int {
	if v, ok := f.lookup(name); ok {
		n, err := strconv.Atoi(v)
		if err != nil {
			f.envErr(name, v, err)
		}
		def = n
	}
	return f.FlagSet.Int(name, def, f.usage(name, usage))
}

func (f *envFlags) Bool(name string, def bool, usage string) *bool {
	if v, ok := f.lookup(name); ok {
		b, err := strconv.ParseBool(v)
		if err != nil {
			f.envErr(name, v, err)
		}
		def = b
	}
	return f.FlagSet.Bool(name, def, f.usage(name, usage))
}

func (f *envFlags) Duration(name string, def time.Duration, usage string) *time.Duration {
	if v, ok := f.lookup(name); ok {
		d, err := time.ParseDuration(v)
		if err != nil {
			f.envErr(name, v, err)
		}
		def = d
	}
	return f.FlagSet.Duration(name, def, f.usage(name, usage))
}
