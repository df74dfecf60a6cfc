package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"

	"github.com/spf13/cobra"
)

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
