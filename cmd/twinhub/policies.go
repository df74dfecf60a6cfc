package main

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/twinhub/twinhub/bridge/sas"
	"github.com/twinhub/twinhub/pipeline/topology"
)

// openPolicies returns the hub's shared access policies. They live in NATS
// (bucket topology.HubBucket), the same for every instance on it; each
// instance keeps a 0600 copy in <data-dir>/policies.json, which the CLI's
// --data-dir reads.
func openPolicies(ctx context.Context, js jetstream.JetStream, dataDir string, log *slog.Logger) (*sas.Policies, error) {
	kv, err := js.KeyValue(ctx, topology.HubBucket)
	if err != nil {
		return nil, fmt.Errorf("opening KV bucket %s for the shared access policies: %w", topology.HubBucket, err)
	}
	ps, origin, err := sas.OpenShared(ctx, sas.SharedConfig{Bucket: kv, Key: topology.PoliciesKey, File: filepath.Join(dataDir, "policies.json")})
	if err != nil {
		return nil, fmt.Errorf("KV bucket %s: %w", topology.HubBucket, err)
	}
	switch origin {
	case sas.Created:
		log.Info("created the hub's shared access policies in NATS; `twinhub connection-string` prints connection strings",
			"bucket", topology.HubBucket, "copy", ps.Path())
	case sas.Imported:
		log.Info("imported the data directory's shared access policies into NATS; every instance on this NATS uses them",
			"file", ps.Path(), "bucket", topology.HubBucket)
	case sas.Replaced:
		log.Warn("the data directory held other shared access policies than the hub's in NATS; they were moved aside and no longer work",
			"moved_to", ps.Path()+".replaced", "bucket", topology.HubBucket)
	default:
		log.Info("using the hub's shared access policies from NATS", "bucket", topology.HubBucket, "copy", ps.Path())
	}
	return ps, nil
}
