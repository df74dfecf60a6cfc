package sas

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/twinhub/twinhub/deploy/natstest"
)

func sharedBucket(t *testing.T) jetstream.KeyValue {
	t.Helper()
	js, err := jetstream.New(natstest.StartStandalone(t).Connect())
	if err != nil {
		t.Fatal(err)
	}
	kv, err := js.CreateKeyValue(context.Background(), jetstream.KeyValueConfig{Bucket: "hub"})
	if err != nil {
		t.Fatal(err)
	}
	return kv
}

// TestOpenSharedRace: instances starting at once on one bucket, each with
// its own data directory, end up with the same policies; exactly one of
// them created them, and each has a 0600 copy of them.
func TestOpenSharedRace(t *testing.T) {
	kv := sharedBucket(t)
	const n = 6
	owners := make([]string, n)
	origins := make([]Origin, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		// Ends when OpenShared returns.
		go func() {
			defer wg.Done()
			file := filepath.Join(t.TempDir(), "policies.json")
			ps, origin, err := OpenShared(context.Background(), SharedConfig{Bucket: kv, Key: "policies", File: file})
			if err != nil {
				t.Error(err)
				return
			}
			owner, _ := ps.Get(OwnerPolicy)
			owners[i], origins[i] = owner.PrimaryKey, origin
			copied, err := LoadPolicies(file)
			if err != nil {
				t.Error(err)
				return
			}
			if c, _ := copied.Get(OwnerPolicy); c.PrimaryKey != owner.PrimaryKey {
				t.Errorf("instance %d: the file copy differs from the shared policies", i)
			}
			if info, _ := os.Stat(file); info.Mode().Perm() != 0o600 {
				t.Errorf("instance %d: copy has mode %v, want 0600", i, info.Mode().Perm())
			}
		}()
	}
	wg.Wait()
	created := 0
	for i := range n {
		if owners[i] != owners[0] {
			t.Errorf("instance %d has owner key %q, instance 0 %q", i, owners[i], owners[0])
		}
		if origins[i] == Created {
			created++
		} else if origins[i] != Loaded {
			t.Errorf("instance %d: origin %d, want Loaded", i, origins[i])
		}
	}
	if created != 1 {
		t.Errorf("%d instances created policies, want exactly 1", created)
	}
}

// TestOpenSharedImport: a hub's existing policy file is imported into an
// empty bucket, so its keys keep working; another instance then gets the
// same keys, and one whose data directory held other policies has them
// moved aside and uses the shared ones.
func TestOpenSharedImport(t *testing.T) {
	kv := sharedBucket(t)
	ctx := context.Background()
	dirA, dirB, dirC := t.TempDir(), t.TempDir(), t.TempDir()
	before, _, err := OpenPolicies(filepath.Join(dirA, "policies.json"))
	if err != nil {
		t.Fatal(err)
	}
	want, _ := before.Get(OwnerPolicy)
	ownerKey := func(ps *Policies) string { p, _ := ps.Get(OwnerPolicy); return p.PrimaryKey }

	a, origin, err := OpenShared(ctx, SharedConfig{Bucket: kv, Key: "policies", File: filepath.Join(dirA, "policies.json")})
	if err != nil || origin != Imported || ownerKey(a) != want.PrimaryKey {
		t.Fatalf("first start with a policy file: origin %d, %v; owner key kept: %v", origin, err, err == nil && ownerKey(a) == want.PrimaryKey)
	}
	b, origin, err := OpenShared(ctx, SharedConfig{Bucket: kv, Key: "policies", File: filepath.Join(dirB, "policies.json")})
	if err != nil || origin != Loaded || ownerKey(b) != want.PrimaryKey {
		t.Fatalf("second instance: origin %d, %v", origin, err)
	}
	tok, _ := New("localhost", want.SecondaryKey, OwnerPolicy, time.Now().Add(time.Minute))
	if _, err := b.Authenticate(tok, time.Now()); err != nil {
		t.Errorf("instance B refuses a token signed with A's original key: %v", err)
	}
	if _, _, err := OpenPolicies(filepath.Join(dirC, "policies.json")); err != nil {
		t.Fatal(err)
	}
	c, origin, err := OpenShared(ctx, SharedConfig{Bucket: kv, Key: "policies", File: filepath.Join(dirC, "policies.json")})
	if err != nil || origin != Replaced || ownerKey(c) != want.PrimaryKey {
		t.Fatalf("instance with its own older policies: origin %d, %v", origin, err)
	}
	if _, err := os.Stat(filepath.Join(dirC, "policies.json.replaced")); err != nil {
		t.Errorf("the replaced policies were not kept aside: %v", err)
	}
	if copied, err := LoadPolicies(filepath.Join(dirC, "policies.json")); err != nil || ownerKey(copied) != want.PrimaryKey {
		t.Errorf("instance C's copy does not hold the shared policies: %v", err)
	}
}

// TestOpenSharedBadValue: a value in the bucket that is not a policy list
// is an error naming the key, not an empty set of policies.
func TestOpenSharedBadValue(t *testing.T) {
	kv := sharedBucket(t)
	if _, err := kv.Put(context.Background(), "policies", []byte("[]")); err != nil {
		t.Fatal(err)
	}
	_, _, err := OpenShared(context.Background(), SharedConfig{Bucket: kv, Key: "policies", File: filepath.Join(t.TempDir(), "p.json")})
	if err == nil || !strings.Contains(err.Error(), "key policies") {
		t.Errorf("OpenShared with a bad value: %v", err)
	}
}
