package main

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/twinhub/twinhub/bridge/certs"
	"github.com/twinhub/twinhub/pipeline/topology"
)

// openCertificates returns the hub's X.509 CA certificates, kept in NATS
// (bucket topology.HubBucket) like the shared access policies, loaded once
// now; the store's Run keeps them current.
func openCertificates(ctx context.Context, js jetstream.JetStream, log *slog.Logger) (*certs.Store, error) {
	kv, err := js.KeyValue(ctx, topology.HubBucket)
	if err != nil {
		return nil, fmt.Errorf("opening KV bucket %s for the CA certificates: %w", topology.HubBucket, err)
	}
	s := certs.NewStore(kv, log)
	if err := s.Load(ctx); err != nil {
		return nil, fmt.Errorf("KV bucket %s: %w", topology.HubBucket, err)
	}
	return s, nil
}
