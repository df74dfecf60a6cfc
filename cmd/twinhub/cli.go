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
	"strconv"
	"strings"
	"time"
)

// apiClient calls a running hub's HTTP API.
type apiClient struct {
	base string
	http *http.Client
}

func newAPIClient(server string) (*apiClient, error) {
	u, err := url.Parse(server)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("--server %q: want a URL like http://127.0.0.1:8080", server)
	}
	return &apiClient{base: strings.TrimRight(server, "/"), http: &http.Client{Timeout: 60 * time.Second}}, nil
}

// call sends a request and returns the body of a 2xx response; other
// statuses become errors carrying IoT Hub's message.
func (c *apiClient) call(ctx context.Context, method, path string, body []byte, header map[string]string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.base+path+"?api-version=2021-04-12", bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json; charset=utf-8")
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("is twinhub running at %s? %w", c.base, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode >= 300 {
		var e struct{ Message string }
		if json.Unmarshal(b, &e) == nil && e.Message != "" {
			return nil, fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, e.Message)
		}
		return nil, fmt.Errorf("%s %s: %s", method, path, resp.Status)
	}
	return b, nil
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

func serverFlag(fs *envFlags) *string {
	return fs.String("server", "http://127.0.0.1:8080", "URL of the twinhub HTTP API")
}

func cmdDevice(ctx context.Context, args []string) error {
	const use = "usage: twinhub device create|get|list|delete [flags] [device-id]"
	if len(args) == 0 {
		return errors.New(use)
	}
	sub, args := args[0], args[1:]
	fs := flagSet("device " + sub)
	server := serverFlag(fs)
	status := fs.String("status", "", "create: initial status, enabled or disabled")
	if err := fs.Parse(args); err != nil {
		return err
	}
	api, err := newAPIClient(*server)
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
	const use = "usage: twinhub twin get <device-id> | twin update [--tags JSON] [--desired JSON] [--etag ETAG] <device-id>"
	if len(args) == 0 {
		return errors.New(use)
	}
	sub, args := args[0], args[1:]
	fs := flagSet("twin " + sub)
	server := serverFlag(fs)
	tags := fs.String("tags", "", "update: tags merge patch, a JSON object")
	desired := fs.String("desired", "", "update: desired properties merge patch, a JSON object")
	etag := fs.String("etag", "", "update: only apply if the twin still has this etag (default: unconditional)")
	replace := fs.Bool("replace", false, "update: replace tags and desired instead of merging")
	if err := fs.Parse(args); err != nil {
		return err
	}
	api, err := newAPIClient(*server)
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
		out, err = api.call(ctx, http.MethodGet, path, nil, nil)
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
