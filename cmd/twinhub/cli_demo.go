package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/twinhub/twinhub/bridge/deviceclient"
	"github.com/twinhub/twinhub/bridge/sas"
)

// demoDevice is one device of the fleet `twinhub demo` seeds.
type demoDevice struct {
	id, region, plant string
	temperature       float64 // its first reading; later ones drift from it
	offline           bool    // never connects: silent, its desired properties pending
}

// demoFleet is the demo's fleet. Its story, told through the hub's own API
// and MQTT, so that every analytics query, the fleet queries and the
// history endpoints have something to show:
//   - all are tagged with a location (tags.location.region and .plant) and a model;
//   - the connected ones report firmware 1.0.0, connectivity and three
//     temperature readings each;
//   - firmware 1.1.0 and a telemetry interval are rolled out (desired);
//     most devices report them back, demo-06 fails the firmware update and
//     demo-08 never connects, so both stay pending;
//   - 1.2.0 goes to a canary ring (demo-01, demo-02), which converges;
//   - demo-05 moves plant: its twin is replaced (tags and desired);
//   - demo-07 is decommissioned (deleted) with its update still pending;
//   - demo-03 is swapped for new hardware: deleted and created again under
//     the same ID, which reports 1.2.0 at once.
var demoFleet = []demoDevice{
	{"demo-01", "EU", "Berlin", 21.5, false},
	{"demo-02", "EU", "Berlin", 22.1, false},
	{"demo-03", "EU", "Berlin", 20.8, false},
	{"demo-04", "EU", "Lyon", 19.4, false},
	{"demo-05", "US", "Redmond43", 23.0, false},
	{"demo-06", "US", "Redmond43", 24.2, false},
	{"demo-07", "EU", "Lyon", 18.9, false},
	{"demo-08", "US", "Redmond43", 0, true},
}

func newDemoCommand() *cobra.Command {
	return clientCommand("demo", "seed a running hub with a small fleet that has history: tags, a firmware rollout, replaced and deleted devices", noArgs,
		func(fs *envFlags) func(context.Context, *apiClient, []string) error {
			broker := fs.String("mqtt", "tcp://127.0.0.1:1883", "MQTT broker URL the demo devices connect to; mqtts://host:port connects over TLS")
			ca := fs.String("ca", "", "with an mqtts:// --mqtt: CA certificates (PEM) to trust the broker with, e.g. <data-dir>/tls/ca.pem")
			return func(ctx context.Context, api *apiClient, _ []string) error {
				d := &demo{api: api, broker: *broker, devices: map[string]*deviceclient.Client{}}
				var err error
				if d.opts.TLS, err = brokerTLS(*broker, *ca); err != nil {
					return err
				}
				defer d.closeAll()
				start := time.Now()
				if err := d.run(ctx); err != nil {
					return fmt.Errorf("twinhub demo: %w", err)
				}
				fmt.Printf("demo fleet seeded in %.1fs. Try:\n"+
					"  twinhub device list\n"+
					"  twinhub query \"SELECT deviceId, tags.location.plant AS plant, properties.reported.firmware.version AS firmware FROM devices WHERE tags.model = 'TH-200'\" -o table\n"+
					"  twinhub twin history demo-01\n"+
					"  twinhub twin get demo-05 --as-of <a time from its history>\n"+
					"and, with history in ClickHouse, the analytics SQL in deploy/clickhouse/analytics/\n",
					time.Since(start).Seconds())
				return nil
			}
		})
}

// demo is one run of `twinhub demo`.
type demo struct {
	api     *apiClient
	broker  string
	opts    deviceclient.Options // TLS only; the rest per device
	devices map[string]*deviceclient.Client
}

func (d *demo) run(ctx context.Context) error {
	ids := make([]string, len(demoFleet))
	for i, dev := range demoFleet {
		ids[i] = dev.id
	}
	fmt.Printf("removing the demo devices of an earlier run, then creating %d devices (%s … %s)\n", len(ids), ids[0], ids[len(ids)-1])
	if err := d.removeEarlier(ctx, ids); err != nil {
		return err
	}
	for _, dev := range demoFleet {
		if err := d.create(ctx, dev); err != nil {
			return err
		}
	}

	fmt.Println("connecting the devices over MQTT; each reports firmware 1.0.0 and three temperature readings")
	for _, dev := range demoFleet {
		if dev.offline {
			continue
		}
		if err := d.connect(ctx, dev.id); err != nil {
			return err
		}
		if err := d.report(ctx, dev.id, `{"firmware":{"version":"1.0.0"},"connectivity":{"type":"wifi"}}`); err != nil {
			return err
		}
	}
	for round := range 3 {
		for _, dev := range demoFleet {
			if d.devices[dev.id] == nil {
				continue
			}
			t := dev.temperature + float64(round)*0.4 - float64(round%2)*0.7
			if err := d.report(ctx, dev.id, fmt.Sprintf(`{"temperature":%.1f}`, t)); err != nil {
				return err
			}
		}
	}

	fmt.Println("rolling out firmware 1.1.0 and a 5m telemetry interval; demo-06's firmware update fails, demo-08 is offline")
	const rollout = `{"firmware":{"version":"1.1.0"},"telemetryConfig":{"sendFrequency":"5m"}}`
	for _, dev := range demoFleet {
		if err := d.patch(ctx, dev.id, `{"properties":{"desired":`+rollout+`}}`); err != nil {
			return err
		}
	}
	for _, dev := range demoFleet {
		switch {
		case dev.offline, dev.id == "demo-07":
			// demo-07 is decommissioned below before it applies the update
		case dev.id == "demo-06":
			if err := d.report(ctx, dev.id, `{"telemetryConfig":{"sendFrequency":"5m"},"firmware":{"lastError":"download failed"}}`); err != nil {
				return err
			}
		default:
			if err := d.report(ctx, dev.id, rollout); err != nil {
				return err
			}
		}
	}

	fmt.Println("rolling out firmware 1.2.0 to the canary ring (demo-01, demo-02)")
	for _, id := range []string{"demo-01", "demo-02"} {
		if err := d.patch(ctx, id, `{"properties":{"desired":{"firmware":{"version":"1.2.0"}}}}`); err != nil {
			return err
		}
		if err := d.report(ctx, id, `{"firmware":{"version":"1.2.0"},"temperature":21.9}`); err != nil {
			return err
		}
	}

	fmt.Println("demo-05 moves to Lyon: its twin is replaced (tags and desired)")
	if _, err := d.api.call(ctx, http.MethodPut, "/twins/demo-05",
		[]byte(`{"tags":{"location":{"region":"EU","plant":"Lyon"},"model":"TH-200"},"properties":{"desired":{"firmware":{"version":"1.1.0"}}}}`),
		map[string]string{"If-Match": "*"}); err != nil {
		return fmt.Errorf("replacing demo-05's twin: %w", err)
	}
	if err := d.report(ctx, "demo-05", `{"temperature":19.8}`); err != nil {
		return err
	}

	fmt.Println("demo-07 is decommissioned (deleted) with its update pending; demo-03 is swapped for new hardware (deleted and created again)")
	if err := d.delete(ctx, "demo-07"); err != nil {
		return err
	}
	if err := d.delete(ctx, "demo-03"); err != nil {
		return err
	}
	swapped := demoFleet[slices.IndexFunc(demoFleet, func(dev demoDevice) bool { return dev.id == "demo-03" })]
	if err := d.create(ctx, swapped); err != nil {
		return err
	}
	if err := d.patch(ctx, "demo-03", `{"properties":{"desired":{"firmware":{"version":"1.2.0"},"telemetryConfig":{"sendFrequency":"5m"}}}}`); err != nil {
		return err
	}
	if err := d.connect(ctx, "demo-03"); err != nil {
		return err
	}
	return d.report(ctx, "demo-03", `{"firmware":{"version":"1.2.0"},"telemetryConfig":{"sendFrequency":"5m"},"connectivity":{"type":"cellular"},"temperature":20.5}`)
}

// removeEarlier deletes those of ids that are registered (an earlier
// demo's fleet), so that a second run starts the same story afresh.
func (d *demo) removeEarlier(ctx context.Context, ids []string) error {
	b, err := d.api.call(ctx, http.MethodGet, "/devices", nil, nil)
	if err != nil {
		return fmt.Errorf("listing devices: %w", err)
	}
	var list []struct{ DeviceID string }
	if err := json.Unmarshal(b, &list); err != nil {
		return fmt.Errorf("listing devices: the hub answered with something else than a device list: %w", err)
	}
	for _, dev := range list {
		if slices.Contains(ids, dev.DeviceID) {
			if err := d.delete(ctx, dev.DeviceID); err != nil {
				return err
			}
		}
	}
	return nil
}

func (d *demo) create(ctx context.Context, dev demoDevice) error {
	body, _ := json.Marshal(map[string]any{"deviceId": dev.id})
	if _, err := d.api.call(ctx, http.MethodPut, "/devices/"+url.PathEscape(dev.id), body, nil); err != nil {
		return fmt.Errorf("creating %s: %w", dev.id, err)
	}
	tags, _ := json.Marshal(map[string]any{"tags": map[string]any{
		"location": map[string]string{"region": dev.region, "plant": dev.plant}, "model": "TH-200"}})
	return d.patch(ctx, dev.id, string(tags))
}

func (d *demo) patch(ctx context.Context, id, body string) error {
	if _, err := d.api.call(ctx, http.MethodPatch, "/twins/"+url.PathEscape(id), []byte(body), map[string]string{"If-Match": "*"}); err != nil {
		return fmt.Errorf("updating %s's twin: %w", id, err)
	}
	return nil
}

func (d *demo) delete(ctx context.Context, id string) error {
	if c := d.devices[id]; c != nil {
		c.Close()
		delete(d.devices, id)
	}
	if _, err := d.api.call(ctx, http.MethodDelete, "/devices/"+url.PathEscape(id), nil, map[string]string{"If-Match": "*"}); err != nil {
		return fmt.Errorf("deleting %s: %w", id, err)
	}
	return nil
}

// connect connects id over MQTT with a SAS token from its primary key
// (none when the client is unsigned, for a hub with --auth=false).
func (d *demo) connect(ctx context.Context, id string) error {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	opts := d.opts
	opts.Username = id
	if d.api.cred.SharedAccessKey != "" {
		cs, err := d.api.deviceConnectionString(ctx, id, "", sas.LocalHost)
		if err != nil {
			return fmt.Errorf("getting %s's key: %w", id, err)
		}
		if opts.Password, err = cs.Token(time.Hour); err != nil {
			return err
		}
	}
	c, err := deviceclient.Dial(ctx, d.broker, id, opts)
	if err != nil {
		if strings.Contains(err.Error(), "unknown authority") {
			return fmt.Errorf("connecting %s to %s: %w; trust the hub's local CA with --ca <data-dir>/tls/ca.pem", id, d.broker, err)
		}
		return fmt.Errorf("connecting %s to %s (point --mqtt, or TWINHUB_MQTT, at the hub's broker): %w", id, d.broker, err)
	}
	d.devices[id] = c
	return nil
}

func (d *demo) report(ctx context.Context, id, patch string) error {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if _, err := d.devices[id].Report(ctx, []byte(patch)); err != nil {
		return fmt.Errorf("%s reporting %s: %w", id, patch, err)
	}
	return nil
}

func (d *demo) closeAll() {
	for _, c := range d.devices {
		c.Close()
	}
}
