package main

import (
	"cmp"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/twinhub/twinhub/bridge/sas"
)

func newConnectionStringCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "connection-string",
		Short: "print an IoT Hub connection string for a policy or a device, for Azure SDKs",
		Args:  noArgs,
	}
	fs := &envFlags{FlagSet: cmd.Flags()}
	cf := addClientFlags(fs)
	policy := fs.String("policy", sas.OwnerPolicy, "shared access policy: iothubowner, service, device, registryRead or registryReadWrite")
	device := fs.String("device", "", "print the device's connection string instead")
	module := fs.String("module", "", "with --device: print the connection string of this module of the device")
	hostname := fs.String("hostname", sas.LocalHost, "HostName in the connection string (the name clients connect to): localhost or one of the hub's names; "+
		"of a comma-separated list, as `twinhub run --hostname` takes, the first")
	gateway := fs.String("gateway", "", "device: GatewayHostName, e.g. localhost:8883, to point unchanged Azure device SDKs at another port")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if err := fs.Err(); err != nil {
			return err
		}
		first, _, _ := strings.Cut(*hostname, ",")
		host := cmp.Or(strings.TrimSpace(first), sas.LocalHost)
		if *module != "" && *device == "" {
			return usageError{errors.New("--module needs --device: a module belongs to a device")}
		}
		if *device != "" {
			api, err := cf.client()
			if err != nil {
				return err
			}
			cs, err := api.deviceConnectionString(cmd.Context(), *device, *module, host)
			if err != nil {
				return err
			}
			cs.GatewayHostName = *gateway
			fmt.Println(cs)
			return nil
		}
		p, err := cf.policy(*policy)
		if err != nil {
			return err
		}
		fmt.Println(sas.ConnectionString{HostName: host, SharedAccessKeyName: p.Name, SharedAccessKey: p.PrimaryKey})
		return nil
	}
	return cmd
}

// policy reads a shared access policy from the hub's data directory.
func (f clientFlags) policy(name string) (*sas.Policy, error) {
	ps, err := sas.LoadPolicies(filepath.Join(*f.dataDir, "policies.json"))
	if err != nil {
		return nil, fmt.Errorf("reading the hub's policies (is --data-dir right?): %w", err)
	}
	p, ok := ps.Get(name)
	if !ok {
		return nil, fmt.Errorf("no policy %q in %s", name, ps.Path())
	}
	return p, nil
}

func newSASTokenCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "sas-token",
		Short: "print a SAS token for a policy or a device, e.g. for curl's Authorization header",
		Long: `Print a SAS token (SharedAccessSignature sr=…&sig=…&se=…&skn=…) signed with a
shared access policy's key from the hub's data directory, or with --device a
device's key read through the API. Back ends send it in the Authorization
header; devices send a device's token as their MQTT password.`,
		Args: noArgs,
	}
	fs := &envFlags{FlagSet: cmd.Flags()}
	cf := addClientFlags(fs)
	policy := fs.String("policy", sas.OwnerPolicy, "shared access policy: iothubowner, service, device, registryRead or registryReadWrite")
	device := fs.String("device", "", "a token for this device instead (its primary key)")
	module := fs.String("module", "", "with --device: a token for this module of the device (its primary key)")
	ttl := fs.Duration("ttl", time.Hour, "how long the token is valid")
	hostname := fs.String("hostname", sas.LocalHost, "host name the token names: localhost or one of the hub's --hostname names")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if err := fs.Err(); err != nil {
			return err
		}
		if *ttl <= 0 {
			return usageError{fmt.Errorf("--ttl %s: must be positive", *ttl)}
		}
		if *device != "" && fs.Changed("policy") {
			return usageError{errors.New("--policy and --device exclude each other: a token is signed by one key")}
		}
		if *module != "" && *device == "" {
			return usageError{errors.New("--module needs --device: a module belongs to a device")}
		}
		cs := sas.ConnectionString{HostName: cmp.Or(strings.TrimSpace(*hostname), sas.LocalHost)}
		if *device != "" {
			api, err := cf.client()
			if err != nil {
				return err
			}
			if cs, err = api.deviceConnectionString(cmd.Context(), *device, *module, cs.HostName); err != nil {
				return err
			}
		} else {
			p, err := cf.policy(*policy)
			if err != nil {
				return err
			}
			cs.SharedAccessKeyName, cs.SharedAccessKey = p.Name, p.PrimaryKey
		}
		tok, err := cs.Token(*ttl)
		if err != nil {
			return err
		}
		fmt.Println(tok)
		return nil
	}
	return cmd
}
