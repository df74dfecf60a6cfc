package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/twinhub/twinhub/bridge/sas"
)

// apiClient calls a running hub's HTTP API.
type apiClient struct {
	base string
	http *http.Client
	cred sas.ConnectionString // the service policy the calls are signed with
}

// clientFlags are the flags every API client command takes.
type clientFlags struct {
	server, dataDir, connString *string
	auth                        *bool
}

func addClientFlags(fs *envFlags) clientFlags {
	fs.env = clientEnv
	return clientFlags{
		server:     fs.String("server", "http://127.0.0.1:8080", "URL of the twinhub HTTP API"),
		dataDir:    fs.String("data-dir", "./data", "data directory of a local twinhub, whose iothubowner policy signs the requests"),
		connString: fs.String("connection-string", "", "service connection string to sign requests with instead (HostName=…;SharedAccessKeyName=…;SharedAccessKey=…)"),
		auth:       fs.Bool("auth", true, "sign requests (false: unsigned, for a hub running with --auth=false)"),
	}
}

func (f clientFlags) client() (*apiClient, error) {
	u, err := url.Parse(*f.server)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("--server %q: want a URL like http://127.0.0.1:8080", *f.server)
	}
	c := &apiClient{base: strings.TrimRight(*f.server, "/"), http: &http.Client{Timeout: 60 * time.Second}}
	if *f.connString != "" {
		if c.cred, err = sas.ParseConnectionString(*f.connString); err != nil {
			return nil, fmt.Errorf("--connection-string: %w", err)
		}
		return c, nil
	}
	if !*f.auth {
		return c, nil
	}
	file := filepath.Join(*f.dataDir, "policies.json")
	ps, err := sas.LoadPolicies(file)
	if errors.Is(err, os.ErrNotExist) {
		abs, _ := filepath.Abs(file)
		return nil, fmt.Errorf("no shared access policies at %s to sign requests with: pass the hub's data directory with --data-dir "+
			"(`twinhub run` creates them in its --data-dir, default ./data where it was started), or a --connection-string; "+
			"a hub running with --auth=false takes --auth=false here too", abs)
	}
	if err != nil {
		return nil, fmt.Errorf("reading the owner policy (pass --connection-string or --data-dir): %w", err)
	}
	owner, ok := ps.Get(sas.OwnerPolicy)
	if !ok {
		return nil, fmt.Errorf("%s has no %s policy", ps.Path(), sas.OwnerPolicy)
	}
	// The token names localhost, which every hub answers to (sas.HubNames),
	// whatever address --server gives (127.0.0.1, or a name the hub was
	// not told with --hostname).
	c.cred = sas.ConnectionString{HostName: sas.LocalHost, SharedAccessKeyName: owner.Name, SharedAccessKey: owner.PrimaryKey}
	return c, nil
}

// call sends a request and returns the body of a 2xx response; other
// statuses become errors carrying IoT Hub's message.
func (c *apiClient) call(ctx context.Context, method, path string, body []byte, header map[string]string) ([]byte, error) {
	b, _, err := c.callHeader(ctx, method, path, body, header)
	return b, err
}

// callHeader is call that also returns the response headers.
func (c *apiClient) callHeader(ctx context.Context, method, path string, body []byte, header map[string]string) ([]byte, http.Header, error) {
	sep := "?"
	if strings.Contains(path, "?") {
		sep = "&"
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path+sep+"api-version=2021-04-12", bytes.NewReader(body))
	if err != nil {
		return nil, nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json; charset=utf-8")
	}
	if c.cred.SharedAccessKey != "" {
		tok, err := c.cred.Token(time.Hour)
		if err != nil {
			return nil, nil, err
		}
		req.Header.Set("Authorization", tok)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, nil, fmt.Errorf("cannot reach twinhub at %s: start it with `twinhub run`, or point --server (TWINHUB_SERVER) at it: %w", c.base, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, nil, err
	}
	if resp.StatusCode >= 300 {
		var e struct{ Message string }
		if json.Unmarshal(b, &e) == nil && e.Message != "" {
			return nil, nil, fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, e.Message)
		}
		return nil, nil, fmt.Errorf("%s %s: %s", method, path, resp.Status)
	}
	return b, resp.Header, nil
}

// clientCommand is a client subcommand: its flags are the client flags
// plus what declare adds; do runs it with a client of the hub.
func clientCommand(use, short string, args cobra.PositionalArgs, declare func(fs *envFlags) func(ctx context.Context, api *apiClient, args []string) error) *cobra.Command {
	cmd := &cobra.Command{Use: use, Short: short, Args: args}
	fs := &envFlags{FlagSet: cmd.Flags()}
	cf := addClientFlags(fs)
	do := declare(fs)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if err := fs.Err(); err != nil {
			return err
		}
		api, err := cf.client()
		if err != nil {
			return err
		}
		return do(cmd.Context(), api, args)
	}
	return cmd
}

// deviceConnectionString returns the connection string of deviceID, built
// from its primary key as the registry reports it.
func (c *apiClient) deviceConnectionString(ctx context.Context, deviceID, moduleID, hostName string) (sas.ConnectionString, error) {
	path := "/devices/" + url.PathEscape(deviceID)
	if moduleID != "" {
		path += "/modules/" + url.PathEscape(moduleID)
	}
	b, err := c.call(ctx, http.MethodGet, path, nil, nil)
	if err != nil {
		return sas.ConnectionString{}, err
	}
	var d struct {
		Authentication struct {
			SymmetricKey struct{ PrimaryKey string }
			Type         string
		}
	}
	if err := json.Unmarshal(b, &d); err != nil {
		return sas.ConnectionString{}, err
	}
	if t := d.Authentication.Type; t != "" && t != "sas" {
		return sas.ConnectionString{}, fmt.Errorf("device %s authenticates with an X.509 certificate (%s) and has no keys: it connects over TLS "+
			"with its certificate and no password; the Azure device SDK takes HostName=%s;DeviceId=%s;x509=true", deviceID, t, hostName, deviceID)
	}
	return sas.ConnectionString{HostName: hostName, DeviceID: deviceID, ModuleID: moduleID, SharedAccessKey: d.Authentication.SymmetricKey.PrimaryKey}, nil
}
