package main

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

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
}

func addClientFlags(fs *envFlags) clientFlags {
	return clientFlags{
		server:     fs.String("server", "http://127.0.0.1:8080", "URL of the twinhub HTTP API"),
		dataDir:    fs.String("data-dir", "./data", "data directory of a local twinhub, whose iothubowner policy signs the requests"),
		connString: fs.String("connection-string", "", "service connection string to sign requests with instead (HostName=…;SharedAccessKeyName=…;SharedAccessKey=…)"),
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
	ps, err := sas.LoadPolicies(filepath.Join(*f.dataDir, "policies.json"))
	if errors.Is(err, os.ErrNotExist) {
		return c, nil // a hub running with --auth=false has no policies
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
		return nil, nil, fmt.Errorf("is twinhub running at %s? %w", c.base, err)
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

func printJSON(b []byte) {
	var out bytes.Buffer
	if json.Indent(&out, b, "", "  ") != nil {
		os.Stdout.Write(b)
		return
	}
	out.WriteByte('\n')
	os.Stdout.Write(out.Bytes())
}

func cmdDevice(ctx context.Context, args []string) error {
	const use = "usage: twinhub device create|get|list|delete [flags] [device-id]"
	if len(args) == 0 {
		return errors.New(use)
	}
	sub, args := args[0], args[1:]
	fs := flagSet("device " + sub)
	cf := addClientFlags(fs)
	status := fs.String("status", "", "create: initial status, enabled or disabled")
	if err := fs.Parse(args); err != nil {
		return err
	}
	api, err := cf.client()
	if err != nil {
		return err
	}
	id := func() (string, error) {
		if fs.NArg() != 1 {
			return "", fmt.Errorf("usage: twinhub device %s [flags] <device-id>", sub)
		}
		return url.PathEscape(fs.Arg(0)), nil
	}
	var out []byte
	switch sub {
	case "create":
		d, err := id()
		if err != nil {
			return err
		}
		body, _ := json.Marshal(map[string]any{"deviceId": fs.Arg(0), "status": *status})
		out, err = api.call(ctx, http.MethodPut, "/devices/"+d, body, nil)
		if err != nil {
			return err
		}
	case "get":
		d, err := id()
		if err != nil {
			return err
		}
		if out, err = api.call(ctx, http.MethodGet, "/devices/"+d, nil, nil); err != nil {
			return err
		}
	case "list":
		if out, err = api.call(ctx, http.MethodGet, "/devices", nil, nil); err != nil {
			return err
		}
	case "delete":
		d, err := id()
		if err != nil {
			return err
		}
		if _, err = api.call(ctx, http.MethodDelete, "/devices/"+d, nil, map[string]string{"If-Match": `"*"`}); err != nil {
			return err
		}
		fmt.Println("deleted", fs.Arg(0))
		return nil
	default:
		return fmt.Errorf("unknown device command %q; %s", sub, use)
	}
	printJSON(out)
	return nil
}

func cmdTwin(ctx context.Context, args []string) error {
	const use = "usage: twinhub twin get [--as-of TIME] <device-id> | twin update [--tags JSON] [--desired JSON] [--etag ETAG] <device-id> | " +
		"twin history [--from TIME] [--to TIME] [--limit N] [--all] <device-id>"
	if len(args) == 0 {
		return errors.New(use)
	}
	sub, args := args[0], args[1:]
	fs := flagSet("twin " + sub)
	cf := addClientFlags(fs)
	tags := fs.String("tags", "", "update: tags merge patch, a JSON object")
	desired := fs.String("desired", "", "update: desired properties merge patch, a JSON object")
	etag := fs.String("etag", "", "update: only apply if the twin still has this etag (default: unconditional)")
	replace := fs.Bool("replace", false, "update: replace tags and desired instead of merging")
	hist := twinHistoryFlags(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	api, err := cf.client()
	if err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return errors.New(use)
	}
	path := "/twins/" + url.PathEscape(fs.Arg(0))
	var out []byte
	switch sub {
	case "get":
		out, err = api.call(ctx, http.MethodGet, path+hist.asOfQuery(), nil, nil)
	case "history":
		out, err = hist.fetch(ctx, api, path)
	case "update":
		patch := map[string]json.RawMessage{}
		if *tags != "" {
			if !json.Valid([]byte(*tags)) {
				return fmt.Errorf("--tags is not valid JSON: %s", *tags)
			}
			patch["tags"] = json.RawMessage(*tags)
		}
		if *desired != "" {
			if !json.Valid([]byte(*desired)) {
				return fmt.Errorf("--desired is not valid JSON: %s", *desired)
			}
			patch["properties"] = json.RawMessage(`{"desired":` + *desired + `}`)
		}
		if len(patch) == 0 && !*replace {
			return errors.New("twin update needs --tags and/or --desired")
		}
		body, _ := json.Marshal(patch)
		method := http.MethodPatch
		if *replace {
			method = http.MethodPut
		}
		ifMatch := `"*"`
		if *etag != "" {
			ifMatch = strconv.Quote(*etag)
		}
		out, err = api.call(ctx, method, path, body, map[string]string{"If-Match": ifMatch})
	default:
		return fmt.Errorf("unknown twin command %q; %s", sub, use)
	}
	if err != nil {
		return err
	}
	printJSON(out)
	return nil
}

// deviceConnectionString returns the connection string of deviceID, built
// from its primary key as the registry reports it.
func (c *apiClient) deviceConnectionString(ctx context.Context, deviceID, hostName string) (sas.ConnectionString, error) {
	b, err := c.call(ctx, http.MethodGet, "/devices/"+url.PathEscape(deviceID), nil, nil)
	if err != nil {
		return sas.ConnectionString{}, err
	}
	var d struct {
		Authentication struct {
			SymmetricKey struct{ PrimaryKey string }
		}
	}
	if err := json.Unmarshal(b, &d); err != nil {
		return sas.ConnectionString{}, err
	}
	return sas.ConnectionString{HostName: hostName, DeviceID: deviceID, SharedAccessKey: d.Authentication.SymmetricKey.PrimaryKey}, nil
}

// cmdConnectionString prints IoT Hub connection strings for a policy or a device.
func cmdConnectionString(ctx context.Context, args []string) error {
	fs := flagSet("connection-string")
	cf := addClientFlags(fs)
	policy := fs.String("policy", sas.OwnerPolicy, "shared access policy: iothubowner, service, device, registryRead or registryReadWrite")
	device := fs.String("device", "", "print the device's connection string instead")
	hostnames := fs.String("hostname", sas.LocalHost, "HostName in the connection string (the name clients connect to): localhost or one of the hub's names; "+
		"of a comma-separated list, as `twinhub run --hostname` takes, the first")
	gateway := fs.String("gateway", "", "device: GatewayHostName, e.g. localhost:8883, to point unchanged Azure device SDKs at another port")
	if err := fs.Parse(args); err != nil {
		return err
	}
	// TWINHUB_HOSTNAME is shared with `twinhub run`, whose first name is
	// the one connection strings print.
	first, _, _ := strings.Cut(*hostnames, ",")
	host := cmp.Or(strings.TrimSpace(first), sas.LocalHost)
	if *device != "" {
		api, err := cf.client()
		if err != nil {
			return err
		}
		cs, err := api.deviceConnectionString(ctx, *device, host)
		if err != nil {
			return err
		}
		cs.GatewayHostName = *gateway
		fmt.Println(cs)
		return nil
	}
	ps, err := sas.LoadPolicies(filepath.Join(*cf.dataDir, "policies.json"))
	if err != nil {
		return fmt.Errorf("reading the hub's policies (is --data-dir right?): %w", err)
	}
	p, ok := ps.Get(*policy)
	if !ok {
		return fmt.Errorf("no policy %q in %s", *policy, ps.Path())
	}
	fmt.Println(sas.ConnectionString{HostName: host, SharedAccessKeyName: p.Name, SharedAccessKey: p.PrimaryKey})
	return nil
}
