package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/twinhub/twinhub/bridge/deviceclient"
	"github.com/twinhub/twinhub/bridge/sas"
	"github.com/twinhub/twinhub/pipeline/twin"
)

// cmdDeviceSim is a simulated device: it reads its twin, reports properties,
// and prints every desired-property change it receives (optionally
// reporting the desired values back, as a device that applied them would).
func newDeviceSimCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "device-sim <device-id>",
		Short: "a simulated device: reports properties, prints desired changes",
		Args:  exactArgs("device-id"),
	}
	fs := &envFlags{FlagSet: cmd.Flags(), env: clientEnv}
	o := simOptions{broker: fs.String("mqtt", "tcp://127.0.0.1:1883", "MQTT broker URL; mqtts://host:port connects over TLS")}
	o.ca = fs.String("ca", "", "with an mqtts:// --mqtt: CA certificates (PEM) to trust the broker with, e.g. the hub's own <data-dir>/tls/ca.pem")
	o.client = addClientFlags(fs)
	o.deviceCS = fs.String("device-connection-string", "", "the device's connection string (default: read its key through the API)")
	o.report = fs.String("report", `{"connectivity":{"type":"cellular"}}`, "reported properties to send after connecting (empty: none)")
	o.echo = fs.Bool("echo", false, "report each desired change back as reported properties")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if err := fs.Err(); err != nil {
			return err
		}
		return cmdDeviceSim(cmd.Context(), o, args[0])
	}
	return cmd
}

// simOptions are the flags of `twinhub device-sim`.
type simOptions struct {
	broker, deviceCS, report *string
	ca                       *string
	echo                     *bool
	client                   clientFlags
}

func cmdDeviceSim(ctx context.Context, o simOptions, id string) error {
	broker, deviceCS, report, echo, cf := o.broker, o.deviceCS, o.report, o.echo, o.client
	if *report != "" {
		if _, err := twin.ParseObject([]byte(*report)); err != nil {
			return fmt.Errorf("--report: %w", err)
		}
	}
	var err error
	dctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	opts := deviceclient.Options{Username: id}
	if opts.TLS, err = brokerTLS(*broker, *o.ca); err != nil {
		return err
	}
	var cs sas.ConnectionString
	if *deviceCS != "" {
		cs, err = sas.ParseConnectionString(*deviceCS)
	} else {
		var api *apiClient
		if api, err = cf.client(); err == nil && api.cred.SharedAccessKey != "" {
			cs, err = api.deviceConnectionString(dctx, id, "", "localhost")
		}
	}
	if err != nil {
		return fmt.Errorf("getting the device's key: %w", err)
	}
	if cs.SharedAccessKey != "" {
		if opts.Password, err = cs.Token(24 * time.Hour); err != nil {
			return err
		}
	}
	dev, err := deviceclient.Dial(dctx, *broker, id, opts)
	var unknownCA x509.UnknownAuthorityError
	if errors.As(err, &unknownCA) || (err != nil && strings.Contains(err.Error(), "unknown authority")) {
		return fmt.Errorf("%w; trust the hub's local CA with --ca %s", err, filepath.Join(*cf.dataDir, "tls", "ca.pem"))
	}
	if err != nil {
		return err
	}
	defer dev.Close()
	fmt.Printf("device %s connected to %s\n", id, *broker)
	body, err := dev.GetTwin(dctx)
	if err != nil {
		return fmt.Errorf("reading the twin: %w", err)
	}
	fmt.Printf("twin: %s\n", body)
	if *report != "" {
		v, err := dev.Report(dctx, []byte(*report))
		if err != nil {
			return fmt.Errorf("reporting properties: %w", err)
		}
		fmt.Printf("reported %s, reported $version is now %d\n", *report, v)
	}
	fmt.Println("waiting for desired property changes (Ctrl-C to stop)")
	for {
		select {
		case <-ctx.Done():
			return nil
		case p := <-dev.Desired():
			fmt.Printf("desired change, $version %d: %s\n", p.Version, p.Body)
			if !*echo {
				continue
			}
			var patch map[string]any
			if err := json.Unmarshal(p.Body, &patch); err != nil {
				continue
			}
			delete(patch, "$version")
			b, _ := json.Marshal(patch)
			rctx, cancel := context.WithTimeout(ctx, 15*time.Second)
			v, err := dev.Report(rctx, b)
			cancel()
			if err != nil {
				fmt.Printf("reporting back failed: %v\n", err)
				continue
			}
			fmt.Printf("reported back, reported $version is now %d\n", v)
		}
	}
}

// brokerTLS is the TLS configuration for a device's broker URL: nil for
// plain MQTT, the CA file's certificates as roots with --ca.
func brokerTLS(broker, caFile string) (*tls.Config, error) {
	u, err := url.Parse(broker)
	if err != nil || u.Host == "" {
		return nil, usageError{fmt.Errorf("--mqtt %q: want a URL like tcp://127.0.0.1:1883 or mqtts://localhost:8883", broker)}
	}
	secure := u.Scheme == "mqtts" || u.Scheme == "ssl" || u.Scheme == "tls"
	if caFile == "" {
		return nil, nil
	}
	if !secure {
		return nil, usageError{fmt.Errorf("--ca applies to a TLS broker: give --mqtt as mqtts://%s (the hub's --mqtts-addr, default 127.0.0.1:8883)", u.Hostname()+":8883")}
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("reading --ca: %w", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("--ca %s holds no PEM certificate", caFile)
	}
	return &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}, nil
}
