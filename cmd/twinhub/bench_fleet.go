package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twinhub/twinhub/bridge/deviceclient"
	"github.com/twinhub/twinhub/bridge/sas"
	"github.com/twinhub/twinhub/pipeline"
)

// parallel runs fn for 0..n-1 on workers goroutines.
func parallel(n, workers int, fn func(i int) error) error {
	var next atomic.Int64
	var wg sync.WaitGroup
	var first error
	var mu sync.Mutex
	for range workers {
		wg.Add(1)
		// Exits when every index is taken.
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				if err := fn(i); err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	return first
}

// createFleet creates the devices (keeping existing ones) and returns their primary keys.
func createFleet(ctx context.Context, api *apiClient, ids []string) ([]string, error) {
	keys := make([]string, len(ids))
	err := parallel(len(ids), 16, func(i int) error {
		b, err := api.call(ctx, http.MethodPut, "/devices/"+ids[i], nil, nil)
		if err != nil && !strings.Contains(err.Error(), pipeline.CodeDeviceAlreadyExists.Name) {
			return err
		}
		if b == nil || api.cred.SharedAccessKey == "" {
			cs, err := api.deviceConnectionString(ctx, ids[i], "", "localhost")
			keys[i] = cs.SharedAccessKey
			return err
		}
		var d pipeline.DeviceDocument
		if err := json.Unmarshal(b, &d); err != nil {
			return err
		}
		keys[i] = d.Authentication.SymmetricKey.PrimaryKey
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("creating devices: %w", err)
	}
	return keys, nil
}

// devicePassword is a day-long SAS token for a device, or "" without a key.
func devicePassword(id, key string) string {
	if key == "" {
		return ""
	}
	tok, err := sas.New(sas.DeviceResource("localhost", id), key, "", time.Now().Add(24*time.Hour))
	if err != nil {
		return ""
	}
	return tok
}

// dialFleet connects every device.
func dialFleet(ctx context.Context, c benchConfig, ids, keys []string) ([]*deviceclient.Client, error) {
	devs := make([]*deviceclient.Client, len(ids))
	err := parallel(len(ids), 16, func(i int) error {
		opts := deviceclient.Options{Username: ids[i], QoS: byte(c.qos), Password: devicePassword(ids[i], keys[i])}
		dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		// Devices spread over the brokers round robin (several instances).
		urls := strings.Split(c.mqttURL, ",")
		d, err := deviceclient.Dial(dctx, urls[i%len(urls)], ids[i], opts)
		devs[i] = d
		return err
	})
	if err != nil {
		for _, d := range devs {
			if d != nil {
				d.Close()
			}
		}
		return nil, fmt.Errorf("connecting devices: %w", err)
	}
	return devs, nil
}
