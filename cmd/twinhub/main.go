// Command twinhub is a self-hosted device-twin hub, wire-compatible with
// Azure IoT Hub device twins. `twinhub run` starts the hub; the other
// subcommands are clients of a running hub.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
)

const usage = `twinhub: a self-hosted device-twin hub, wire-compatible with Azure IoT Hub twins.

Usage:
  twinhub run [flags]                       start the hub (embedded NATS and MQTT broker by default)
  twinhub device create|get|list|delete     manage the device registry of a running hub
  twinhub twin get|update|history           read and change twins, read their history (get --as-of TIME)
  twinhub query "SELECT * FROM devices …"   query twins (IoT Hub's query language, plus ORDER BY)
  twinhub device-sim <device-id>            a simulated device: reports properties, prints desired changes
  twinhub bench [flags]                     a simulated fleet against a hub (its own embedded one by default)
  twinhub connection-string [--policy NAME | --device ID]
                                            print IoT Hub connection strings for Azure SDKs
  twinhub nats-credentials [--user events]  print the embedded NATS's credentials for change-event consumers
  twinhub version

Run 'twinhub <command> -h' for a command's flags. Every flag can also be set
with an environment variable: --http-addr is TWINHUB_HTTP_ADDR.
`

var version = "dev"

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	args := os.Args[2:]
	var err error
	switch os.Args[1] {
	case "run":
		err = cmdRun(ctx, args)
	case "device":
		err = cmdDevice(ctx, args)
	case "twin":
		err = cmdTwin(ctx, args)
	case "query":
		err = cmdQuery(ctx, args)
	case "bench":
		err = cmdBench(ctx, args)
	case "connection-string":
		err = cmdConnectionString(ctx, args)
	case "nats-credentials":
		err = cmdNATSCredentials(ctx, args)
	case "device-sim":
		err = cmdDeviceSim(ctx, args)
	case "version", "--version":
		fmt.Println("twinhub", version)
	case "help", "-h", "--help":
		fmt.Print(usage)
	default:
		fmt.Fprintf(os.Stderr, "twinhub: unknown command %q\n\n%s", os.Args[1], usage)
		os.Exit(2)
	}
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(2)
		}
		fmt.Fprintln(os.Stderr, "twinhub:", err)
		os.Exit(1)
	}
}

// flagSet returns a flag set whose flags default to TWINHUB_* environment variables.
func flagSet(name string) *envFlags {
	return &envFlags{FlagSet: flag.NewFlagSet(name, flag.ContinueOnError)}
}

type envFlags struct {
	*flag.FlagSet
	envErrs []error // environment variables that did not parse
}

// Parse parses args, with flags anywhere on the line (`twin update
// myDeviceId --tags …` as well as `twin update --tags … myDeviceId`; after
// "--" everything is an argument); the arguments keep their order in
// Args. A malformed TWINHUB_* variable is an error too.
func (f *envFlags) Parse(args []string) error {
	var positional []string
	for {
		if err := f.FlagSet.Parse(args); err != nil {
			return err
		}
		rest := f.FlagSet.Args()
		if len(rest) == 0 {
			break
		}
		if i := len(args) - len(rest); i > 0 && args[i-1] == "--" {
			positional = append(positional, rest...)
			break
		}
		positional = append(positional, rest[0])
		args = rest[1:]
	}
	// Leave exactly the arguments in Args ("--" stops the flags).
	if err := f.FlagSet.Parse(append([]string{"--"}, positional...)); err != nil {
		return err
	}
	return errors.Join(f.envErrs...)
}

func (f *envFlags) envErr(name, v string, err error) {
	f.envErrs = append(f.envErrs, fmt.Errorf("environment variable %s=%q: %v", envName(name), v, err))
}

func envName(flagName string) string {
	return "TWINHUB_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

func (f *envFlags) String(name, def, usage string) *string {
	if v, ok := os.LookupEnv(envName(name)); ok {
		def = v
	}
	return f.FlagSet.String(name, def, usage+" ["+envName(name)+"]")
}

func (f *envFlags) Int(name string, def int, usage string) *int {
	if v, ok := os.LookupEnv(envName(name)); ok {
		n, err := strconv.Atoi(v)
		if err != nil {
			f.envErr(name, v, err)
		}
		def = n
	}
	return f.FlagSet.Int(name, def, usage+" ["+envName(name)+"]")
}

func (f *envFlags) Bool(name string, def bool, usage string) *bool {
	if v, ok := os.LookupEnv(envName(name)); ok {
		b, err := strconv.ParseBool(v)
		if err != nil {
			f.envErr(name, v, err)
		}
		def = b
	}
	return f.FlagSet.Bool(name, def, usage+" ["+envName(name)+"]")
}

func (f *envFlags) Duration(name string, def time.Duration, usage string) *time.Duration {
	if v, ok := os.LookupEnv(envName(name)); ok {
		d, err := time.ParseDuration(v)
		if err != nil {
			f.envErr(name, v, err)
		}
		def = d
	}
	return f.FlagSet.Duration(name, def, usage+" ["+envName(name)+"]")
}
