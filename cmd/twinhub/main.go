// Command twinhub is a self-hosted device-twin hub, wire-compatible with
// Azure IoT Hub device twins. `twinhub run` starts the hub; the other
// subcommands are clients of a running hub.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := newRootCommand().ExecuteContext(ctx)
	if err == nil {
		return
	}
	fmt.Fprintln(os.Stderr, "twinhub:", err)
	var u usageError
	if errors.As(err, &u) {
		os.Exit(2)
	}
	os.Exit(1)
}

// newRootCommand is the whole command tree.
func newRootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:   "twinhub",
		Short: "a self-hosted device-twin hub, wire-compatible with Azure IoT Hub twins",
		Long: `twinhub: a self-hosted device-twin hub, wire-compatible with Azure IoT Hub twins.

'twinhub run' starts the hub; the other commands are its clients. They sign
their requests with the iothubowner policy in the hub's data directory
(--data-dir, default ./data) or with --connection-string. Environment
variables: 'twinhub run' reads TWINHUB_<FLAG> for each of its flags
(--http-addr is TWINHUB_HTTP_ADDR); the clients read TWINHUB_SERVER,
TWINHUB_DATA_DIR, TWINHUB_CONNECTION_STRING and TWINHUB_MQTT.`,
		Version:       readBuildIdentity().String(),
		SilenceUsage:  true,
		SilenceErrors: true,
		Args:          noArgs,
		RunE:          groupRunE,
	}
	root.SetVersionTemplate("twinhub {{.Version}}\n")
	root.SetFlagErrorFunc(flagError)
	root.AddCommand(newRunCommand(), newDeviceCommand(), newTwinCommand(), newQueryCommand(), newDeviceSimCommand(),
		newBenchCommand(), newConnectionStringCommand(), newSASTokenCommand(), newNATSCredentialsCommand(), newDemoCommand(),
		newVersionCommand(), newHealthcheckCommand())
	return root
}

// usageError is a command line twinhub cannot make sense of (exit status 2).
type usageError struct{ error }

func (e usageError) Unwrap() error { return e.error }

// flagError adds where to read about the flags to a flag parsing error.
func flagError(c *cobra.Command, err error) error {
	return usageError{fmt.Errorf("%w; run '%s --help' for its flags", err, c.CommandPath())}
}

// groupRunE answers a command group called without a known subcommand:
// its help when there is nothing else on the line, else an error naming
// the unknown command.
func groupRunE(c *cobra.Command, args []string) error {
	if len(args) == 0 {
		return c.Help()
	}
	return usageError{fmt.Errorf("unknown command %q for '%s'; run '%s --help' for its commands", args[0], c.CommandPath(), c.CommandPath())}
}

// noArgs accepts no positional arguments, except that a group passes
// them to groupRunE to name an unknown subcommand.
func noArgs(c *cobra.Command, args []string) error {
	if len(args) == 0 || c.HasSubCommands() {
		return nil
	}
	return usageError{fmt.Errorf("'%s' takes no arguments, got %q; run '%s --help'", c.CommandPath(), args, c.CommandPath())}
}

// exactArgs wants exactly the named positional arguments.
func exactArgs(names ...string) cobra.PositionalArgs {
	return func(c *cobra.Command, args []string) error {
		if len(args) == len(names) {
			return nil
		}
		want := ""
		for _, n := range names {
			want += " <" + n + ">"
		}
		if len(args) < len(names) {
			return usageError{fmt.Errorf("'%s' needs%s; run '%s --help'", c.CommandPath(), want, c.CommandPath())}
		}
		return usageError{fmt.Errorf("'%s' takes%s, got %d arguments %q (quote a query; -- ends the flags); run '%s --help'",
			c.CommandPath(), want, len(args), args, c.CommandPath())}
	}
}
