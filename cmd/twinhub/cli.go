package main

import (
	"bytes"
	"cmp"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
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

func newDeviceCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "device", Short: "manage the device registry of a running hub", Args: noArgs, RunE: groupRunE}
	cmd.AddCommand(
		clientCommand("create <device-id>", "register a device (the hub generates its keys)", exactArgs("device-id"),
			func(fs *envFlags) func(context.Context, *apiClient, []string) error {
				status := fs.String("status", "", "initial status, enabled or disabled (default enabled)")
				output := outputFlag(fs, outputJSON)
				return func(ctx context.Context, api *apiClient, args []string) error {
					if err := checkOutput(*output); err != nil {
						return err
					}
					body, _ := json.Marshal(map[string]any{"deviceId": args[0], "status": *status})
					out, err := api.call(ctx, http.MethodPut, "/devices/"+url.PathEscape(args[0]), body, nil)
					if err != nil {
						return err
					}
					return render(os.Stdout, *output, out)
				}
			}),
		clientCommand("get <device-id>", "print a device's registry entry (keys included)", exactArgs("device-id"),
			func(fs *envFlags) func(context.Context, *apiClient, []string) error {
				output := outputFlag(fs, outputJSON)
				return func(ctx context.Context, api *apiClient, args []string) error {
					if err := checkOutput(*output); err != nil {
						return err
					}
					out, err := api.call(ctx, http.MethodGet, "/devices/"+url.PathEscape(args[0]), nil, nil)
					if err != nil {
						return err
					}
					return render(os.Stdout, *output, out)
				}
			}),
		clientCommand("list", "list the registered devices, by device ID (the table leaves the keys out)", noArgs,
			func(fs *envFlags) func(context.Context, *apiClient, []string) error {
				output := outputFlag(fs, outputTable)
				return func(ctx context.Context, api *apiClient, _ []string) error {
					if err := checkOutput(*output); err != nil {
						return err
					}
					out, err := api.call(ctx, http.MethodGet, "/devices", nil, nil)
					if err != nil {
						return err
					}
					return printDeviceList(os.Stdout, *output, out)
				}
			}),
		newDeviceUpdateCommand(),
		clientCommand("delete <device-id>", "delete a device and its twin", exactArgs("device-id"),
			func(fs *envFlags) func(context.Context, *apiClient, []string) error {
				etag := fs.String("etag", "", "only delete if the device still has this etag (default: unconditional)")
				return func(ctx context.Context, api *apiClient, args []string) error {
					if _, err := api.call(ctx, http.MethodDelete, "/devices/"+url.PathEscape(args[0]), nil, map[string]string{"If-Match": ifMatch(*etag)}); err != nil {
						return err
					}
					fmt.Println("deleted", args[0])
					return nil
				}
			}),
	)
	return cmd
}

// ifMatch is the If-Match header for --etag: unconditional without one.
func ifMatch(etag string) string {
	if etag == "" {
		return `"*"`
	}
	return strconv.Quote(strings.Trim(etag, `"`))
}

// printDeviceList prints GET /devices sorted by device ID: as a table of
// the fields an operator scans (never the keys), or the whole documents.
func printDeviceList(w io.Writer, format string, body []byte) error {
	var devices []map[string]any
	if err := json.Unmarshal(body, &devices); err != nil {
		return fmt.Errorf("the hub answered GET /devices with something else than a list of devices: %w", err)
	}
	slices.SortFunc(devices, func(a, b map[string]any) int {
		return strings.Compare(fmt.Sprint(a["deviceId"]), fmt.Sprint(b["deviceId"]))
	})
	if format != outputTable {
		sorted, _ := json.Marshal(devices)
		return render(w, format, sorted)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "DEVICE ID\tSTATUS\tCONNECTION\tLAST ACTIVITY")
	for _, d := range devices {
		fmt.Fprintf(tw, "%v\t%v\t%v\t%v\n", d["deviceId"], d["status"], d["connectionState"], d["lastActivityTime"])
	}
	return tw.Flush()
}

// newDeviceUpdateCommand is `twinhub device update`: a device's status
// and keys, as `az iot hub device-identity update` and `renew-key` do.
func newDeviceUpdateCommand() *cobra.Command {
	return clientCommand("update <device-id>", "enable or disable a device, or rotate its keys", exactArgs("device-id"),
		func(fs *envFlags) func(context.Context, *apiClient, []string) error {
			status := fs.String("status", "", "enabled or disabled (a disabled device cannot connect)")
			reason := fs.String("status-reason", "", "why the status changed, kept with the device")
			rotate := fs.String("rotate-key", "", "replace a key with a new random one: primary, secondary or both")
			etag := fs.String("etag", "", "only apply if the device still has this etag, from device get (default: unconditional)")
			output := outputFlag(fs, outputJSON)
			return func(ctx context.Context, api *apiClient, args []string) error {
				if err := checkOutput(*output); err != nil {
					return err
				}
				body := map[string]any{"deviceId": args[0]}
				switch *status {
				case "":
				case "enabled", "disabled":
					body["status"] = *status
				default:
					return usageError{fmt.Errorf("--status %q: want enabled or disabled", *status)}
				}
				if fs.Changed("status-reason") {
					body["statusReason"] = *reason
				}
				keys := map[string]string{}
				switch *rotate {
				case "":
				case "primary", "secondary", "both":
					if *rotate != "secondary" {
						keys["primaryKey"] = newDeviceKey()
					}
					if *rotate != "primary" {
						keys["secondaryKey"] = newDeviceKey()
					}
					body["authentication"] = map[string]any{"type": "sas", "symmetricKey": keys}
				default:
					return usageError{fmt.Errorf("--rotate-key %q: want primary, secondary or both", *rotate)}
				}
				if len(body) == 1 {
					return usageError{errors.New("device update needs --status, --status-reason or --rotate-key")}
				}
				b, _ := json.Marshal(body)
				out, err := api.call(ctx, http.MethodPut, "/devices/"+url.PathEscape(args[0]), b, map[string]string{"If-Match": ifMatch(*etag)})
				if err != nil {
					return err
				}
				return render(os.Stdout, *output, out)
			}
		})
}

// newDeviceKey is a random 256-bit SAS key, base64, as IoT Hub generates them.
func newDeviceKey() string {
	k := make([]byte, 32)
	rand.Read(k)
	return base64.StdEncoding.EncodeToString(k)
}

func newTwinCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "twin", Short: "read and change twins, read their history", Args: noArgs, RunE: groupRunE}
	cmd.AddCommand(
		clientCommand("get <device-id>", "print a device's twin, now or as it was at a time (--as-of)", exactArgs("device-id"),
			func(fs *envFlags) func(context.Context, *apiClient, []string) error {
				asOf := fs.String("as-of", "", "the twin as it was at this RFC 3339 time, rebuilt from its history")
				output := outputFlag(fs, outputJSON)
				return func(ctx context.Context, api *apiClient, args []string) error {
					if err := checkOutput(*output); err != nil {
						return err
					}
					path := "/twins/" + url.PathEscape(args[0])
					if *asOf != "" {
						path += "?asOf=" + url.QueryEscape(*asOf)
					}
					out, err := api.call(ctx, http.MethodGet, path, nil, nil)
					if err != nil {
						return err
					}
					return render(os.Stdout, *output, out)
				}
			}),
		newTwinUpdateCommand(),
		clientCommand("history <device-id>", "print a twin's change events, newest first", exactArgs("device-id"),
			func(fs *envFlags) func(context.Context, *apiClient, []string) error {
				hist := twinHistoryFlags(fs)
				output := outputFlag(fs, outputJSON)
				return func(ctx context.Context, api *apiClient, args []string) error {
					if err := checkOutput(*output); err != nil {
						return err
					}
					out, err := hist.fetch(ctx, api, "/twins/"+url.PathEscape(args[0]))
					if err != nil {
						return err
					}
					return render(os.Stdout, *output, out)
				}
			}),
	)
	return cmd
}

// newTwinUpdateCommand is `twinhub twin update`: a merge patch of tags and
// desired properties, or with --replace both sections replaced.
func newTwinUpdateCommand() *cobra.Command {
	cmd := clientCommand("update <device-id>", "change a twin's tags and desired properties (JSON merge patches)", exactArgs("device-id"),
		func(fs *envFlags) func(context.Context, *apiClient, []string) error {
			tags := fs.String("tags", "", "tags merge patch, a JSON object")
			desired := fs.String("desired", "", "desired properties merge patch, a JSON object")
			etag := fs.String("etag", "", "only apply if the twin still has this etag (default: unconditional)")
			replace := fs.Bool("replace", false, "replace tags and desired properties with --tags and --desired (a section not given becomes empty)")
			output := fs.StringP("output", "o", "", "print the updated twin: json, yaml or table (default: its new versions and etag)")
			return func(ctx context.Context, api *apiClient, args []string) error {
				if *output != "" {
					if err := checkOutput(*output); err != nil {
						return err
					}
				}
				patch := map[string]json.RawMessage{}
				if *tags != "" {
					if !json.Valid([]byte(*tags)) {
						return usageError{fmt.Errorf("--tags is not valid JSON: %s", *tags)}
					}
					patch["tags"] = json.RawMessage(*tags)
				}
				if *desired != "" {
					if !json.Valid([]byte(*desired)) {
						return usageError{fmt.Errorf("--desired is not valid JSON: %s", *desired)}
					}
					patch["properties"] = json.RawMessage(`{"desired":` + *desired + `}`)
				}
				switch {
				case len(patch) == 0 && *replace:
					return usageError{errors.New("twin update --replace needs --tags and/or --desired: it replaces both sections, " +
						"and one not given becomes empty. To empty both, say so: --replace --tags '{}' --desired '{}'")}
				case len(patch) == 0:
					return usageError{errors.New("twin update needs --tags and/or --desired")}
				}
				body, _ := json.Marshal(patch)
				method := http.MethodPatch
				if *replace {
					method = http.MethodPut
				}
				out, err := api.call(ctx, method, "/twins/"+url.PathEscape(args[0]), body, map[string]string{"If-Match": ifMatch(*etag)})
				if err != nil {
					return err
				}
				if *output != "" {
					return render(os.Stdout, *output, out)
				}
				var tw struct {
					Version    int64
					Etag       string
					Properties struct {
						Desired, Reported struct {
							Version int64 `json:"$version"`
						}
					}
				}
				if err := json.Unmarshal(out, &tw); err != nil {
					return fmt.Errorf("the hub answered the update with something else than a twin: %w", err)
				}
				fmt.Printf("updated %s: version %d, desired $version %d, etag %s\n", args[0], tw.Version, tw.Properties.Desired.Version, tw.Etag)
				return nil
			}
		})
	return cmd
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
	hostname := fs.String("hostname", sas.LocalHost, "HostName in the connection string (the name clients connect to): localhost or one of the hub's names; "+
		"of a comma-separated list, as `twinhub run --hostname` takes, the first")
	gateway := fs.String("gateway", "", "device: GatewayHostName, e.g. localhost:8883, to point unchanged Azure device SDKs at another port")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if err := fs.Err(); err != nil {
			return err
		}
		first, _, _ := strings.Cut(*hostname, ",")
		host := cmp.Or(strings.TrimSpace(first), sas.LocalHost)
		if *device != "" {
			api, err := cf.client()
			if err != nil {
				return err
			}
			cs, err := api.deviceConnectionString(cmd.Context(), *device, host)
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
		cs := sas.ConnectionString{HostName: cmp.Or(strings.TrimSpace(*hostname), sas.LocalHost)}
		if *device != "" {
			api, err := cf.client()
			if err != nil {
				return err
			}
			if cs, err = api.deviceConnectionString(cmd.Context(), *device, cs.HostName); err != nil {
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
