package main

import (
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
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
)

func newDeviceCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "device", Short: "manage the device registry of a running hub", Args: noArgs, RunE: groupRunE}
	cmd.AddCommand(
		clientCommand("create <device-id>", "register a device (the hub generates its keys)", exactArgs("device-id"),
			func(fs *envFlags) func(context.Context, *apiClient, []string) error {
				status := fs.String("status", "", "initial status, enabled or disabled (default enabled)")
				authMethod := fs.String("auth-method", "sas", "sas (keys), x509_thumbprint (a self-signed certificate, with --primary-thumbprint) "+
					"or x509_ca (a certificate from a verified CA whose CN is the device ID)")
				primary := fs.String("primary-thumbprint", "", "x509_thumbprint: SHA-1 (or SHA-256) hex thumbprint of the device's certificate")
				secondary := fs.String("secondary-thumbprint", "", "x509_thumbprint: a second certificate's thumbprint")
				output := outputFlag(fs, outputJSON)
				return func(ctx context.Context, api *apiClient, args []string) error {
					if err := checkOutput(*output); err != nil {
						return err
					}
					doc := map[string]any{"deviceId": args[0], "status": *status}
					if *authMethod != "x509_thumbprint" && (*primary != "" || *secondary != "") {
						return usageError{errors.New("--primary-thumbprint and --secondary-thumbprint go with --auth-method x509_thumbprint")}
					}
					switch *authMethod {
					case "sas":
					case "x509_thumbprint":
						if *primary == "" {
							return usageError{errors.New("--auth-method x509_thumbprint needs --primary-thumbprint, the SHA-1 (or SHA-256) hex thumbprint of the device's certificate")}
						}
						doc["authentication"] = map[string]any{"type": "selfSigned",
							"x509Thumbprint": map[string]any{"primaryThumbprint": *primary, "secondaryThumbprint": *secondary}}
					case "x509_ca":
						doc["authentication"] = map[string]any{"type": "certificateAuthority"}
					default:
						return usageError{fmt.Errorf("--auth-method %q: want sas, x509_thumbprint or x509_ca", *authMethod)}
					}
					body, _ := json.Marshal(doc)
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
					// No type: an X.509 device is refused (it has no keys) rather than turned into a SAS device.
					body["authentication"] = map[string]any{"symmetricKey": keys}
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
