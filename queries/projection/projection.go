package projection

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Config configures the projection. The zero value is usable.
type Config struct {
	// CatchUpTimeout bounds how long a query waits for the projection to
	// apply every change acknowledged before the query started (default
	// 10 s); after it the query fails with ErrLagging.
	CatchUpTimeout time.Duration
	// QueryTimeout bounds the work of one page of a query (default 30 s).
	QueryTimeout time.Duration
	// MaxConcurrent bounds how many queries are evaluated at once; the
	// others wait their turn (default 2 × GOMAXPROCS).
	MaxConcurrent int
	Logger        *slog.Logger
}

func (c *Config) defaults() {
	if c.CatchUpTimeout == 0 {
		c.CatchUpTimeout = 10 * time.Second
	}
	if c.QueryTimeout == 0 {
		c.QueryTimeout = 30 * time.Second
	}
	if c.MaxConcurrent == 0 {
		c.MaxConcurrent = 2 * runtime.GOMAXPROCS(0)
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Validate reports every problem with the configuration.
func (c Config) Validate() error {
	var errs []error
	if c.CatchUpTimeout < 0 {
		errs = append(errs, fmt.Errorf("projection: catch-up timeout must not be negative, got %s", c.CatchUpTimeout))
	}
	if c.QueryTimeout < 0 {
		errs = append(errs, fmt.Errorf("projection: query timeout must not be negative, got %s", c.QueryTimeout))
	}
	if c.MaxConcurrent < 0 {
		errs = append(errs, fmt.Errorf("projection: max concurrent queries must not be negative, got %d", c.MaxConcurrent))
	}
	return errors.Join(errs...)
}

// Projection is an in-memory copy of every twin, kept current from the twin
// records' KV bucket, with indexes over every path, that answers twin
// queries. See the package documentation for how it stores twins and what
// its queries guarantee.
type Projection struct {
	cfg     Config
	src     source // nil when fed directly (tests, benchmarks)
	log     *slog.Logger
	metrics *metrics

	// mu guards store. The applier holds it exclusively for a batch of
	// changes; queries hold it shared for a step of their work.
	mu    sync.RWMutex
	store *store
	// modules holds the module twins (devices.modules), whose record keys
	// name "{deviceId}/{moduleId}". It shares store's compression codec.
	modules *store

	// inflight counts queries between their start and their end, lock held
	// or not: freed doc slots and value ids are reused only when it is 0.
	inflight atomic.Int64
	sem      chan struct{}
	chunk    int // twins visited per lock hold; tests make it small

	progressMu sync.Mutex
	applied    uint64        // KV revision up to which changes are applied
	progress   chan struct{} // closed and replaced whenever applied advances
	loaded     chan struct{} // closed once the initial load is applied
	stopped    chan struct{} // closed when Run returns
}

// newProjection builds a projection reading src, or fed directly when src
// is nil.
func newProjection(cfg Config, src source, reg prometheus.Registerer) (*Projection, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.defaults()
	p := &Projection{
		cfg:      cfg,
		src:      src,
		log:      cfg.Logger.With("component", "projection"),
		metrics:  newMetrics(reg),
		store:    newStore(),
		modules:  newStore(),
		sem:      make(chan struct{}, cfg.MaxConcurrent),
		chunk:    defaultChunk,
		progress: make(chan struct{}),
		loaded:   make(chan struct{}),
		stopped:  make(chan struct{}),
	}
	p.modules.codec, p.modules.sharedCodec = p.store.codec, true
	return p, nil
}

// storeOf is the store that holds a record key's twin: modules for a
// module's "{deviceId}/{moduleId}", store for a device.
func (p *Projection) storeOf(deviceID string) *store {
	if strings.Contains(deviceID, "/") {
		return p.modules
	}
	return p.store
}

// live counts the twins held, devices and modules.
func (p *Projection) live() int { return p.store.live() + p.modules.live() }

// Loaded is closed once the projection holds every twin that existed when
// Run started; twinhub reports ready only after it.
func (p *Projection) Loaded() <-chan struct{} { return p.loaded }

// change is one twin record change: the new twin JSON, or nil when the
// device is gone.
type change struct {
	deviceID string
	twin     []byte
	rev      uint64
	// blob and dict are the twin compressed, when prepared beforehand
	// (then twin may be nil).
	blob []byte
	dict uint8
}

// gone reports whether the change removes the device.
func (c *change) gone() bool { return c.twin == nil && c.blob == nil }

// stager holds the initial load's changes as they arrive, compressing the
// twins at once so that only their compressed form waits for the load; the
// compression dictionary is made from the first twins.
type stager struct {
	codec   *codec
	changes []change
	raw     int // the first raw changes still waiting for the dictionary
}

func (st *stager) add(c change) {
	st.changes = append(st.changes, c)
	if st.raw < 0 || c.twin == nil {
		if st.raw < 0 && c.twin != nil {
			last := &st.changes[len(st.changes)-1]
			last.blob, last.dict = st.codec.encode(c.twin)
			last.twin = nil
		}
		return
	}
	if st.raw++; st.raw == dictSamples {
		st.compressRaw()
	}
}

// compressRaw makes the dictionary from the raw twins held so far and
// compresses them; later twins are compressed as they come.
func (st *stager) compressRaw() {
	var samples [][]byte
	for _, c := range st.changes {
		if c.twin != nil {
			samples = append(samples, c.twin)
		}
	}
	if st.codec.wantsTraining(len(samples)) {
		st.codec.train(len(samples), samples)
	}
	for i := range st.changes {
		if c := &st.changes[i]; c.twin != nil {
			c.blob, c.dict = st.codec.encode(c.twin)
			c.twin = nil
		}
	}
	st.raw = -1
}

// finish returns the staged changes, all compressed.
func (st *stager) finish() []change {
	if st.raw >= 0 {
		st.compressRaw()
	}
	return st.changes
}

// load applies the initial state: the staged changes, in any order. It
// assigns doc ids in deviceId order, so that queries read twins in memory
// order.
func (p *Projection) load(changes []change) {
	start := time.Now()
	slices.SortFunc(changes, func(a, b change) int {
		if c := strings.Compare(a.deviceID, b.deviceID); c != 0 {
			return c
		}
		return -compareRev(a.rev, b.rev) // the newest first
	})
	changes = slices.CompactFunc(changes, func(a, b change) bool { return a.deviceID == b.deviceID })
	var rev uint64
	for _, c := range changes {
		rev = max(rev, c.rev)
	}
	changes = slices.DeleteFunc(changes, func(c change) bool { return c.gone() })
	p.mu.Lock()
	for i := range changes {
		if err := p.storeOf(changes[i].deviceID).put(&changes[i], true); err != nil {
			p.log.Error("a twin record could not be indexed; queries will not see it until it changes", "device", changes[i].deviceID, "err", err)
		}
		changes[i] = change{}
	}
	p.store.train()
	n := p.live()
	p.mu.Unlock()
	p.metrics.changes.Add(float64(len(changes)))
	p.metrics.twins.Set(float64(n))
	p.metrics.loadTime.Set(time.Since(start).Seconds())
	p.advance(rev)
	close(p.loaded)
}

func compareRev(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// apply applies changes in order, under one exclusive lock.
func (p *Projection) apply(changes []change) {
	var rev uint64
	p.mu.Lock()
	for _, c := range changes {
		rev = max(rev, c.rev)
		s := p.storeOf(c.deviceID)
		if c.gone() {
			s.remove(c.deviceID)
			continue
		}
		if err := s.put(&c, false); err != nil {
			s.remove(c.deviceID)
			p.log.Error("a twin record could not be indexed; queries will not see the device until it changes", "device", c.deviceID, "err", err)
		}
	}
	if p.inflight.Load() == 0 {
		p.store.recycle()
		p.modules.recycle()
	}
	p.store.train()
	n := p.live()
	p.mu.Unlock()
	p.metrics.changes.Add(float64(len(changes)))
	p.metrics.twins.Set(float64(n))
	p.advance(rev)
}

// advance records that every change up to rev is applied and wakes waiters.
func (p *Projection) advance(rev uint64) {
	p.progressMu.Lock()
	defer p.progressMu.Unlock()
	if rev <= p.applied {
		return
	}
	p.applied = rev
	p.metrics.revision.Set(float64(rev))
	close(p.progress)
	p.progress = make(chan struct{})
}

// waitApplied blocks until every change up to rev is applied.
func (p *Projection) waitApplied(ctx context.Context, rev uint64) error {
	for {
		p.progressMu.Lock()
		done, ch := p.applied >= rev, p.progress
		p.progressMu.Unlock()
		if done {
			return nil
		}
		select {
		case <-ch:
		case <-p.stopped:
			return ErrClosed
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// catchUp makes the query see every change acknowledged before it: it reads
// the twin bucket's last revision and waits until the projection applied it.
func (p *Projection) catchUp(ctx context.Context) error {
	if p.src == nil {
		return nil
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, p.cfg.CatchUpTimeout)
	defer cancel()
	lagging := func(err error) error {
		if errors.Is(err, context.DeadlineExceeded) {
			p.progressMu.Lock()
			applied := p.applied
			p.progressMu.Unlock()
			return fmt.Errorf("%w (applied up to revision %d after %s); retry", ErrLagging, applied, p.cfg.CatchUpTimeout)
		}
		return err
	}
	select {
	case <-p.loaded:
	case <-p.stopped:
		return ErrClosed
	case <-ctx.Done():
		return lagging(ctx.Err())
	}
	rev, err := p.src.lastRevision(ctx)
	if err != nil {
		return lagging(fmt.Errorf("reading the twin bucket's last revision: %w", err))
	}
	if err := p.waitApplied(ctx, rev); err != nil {
		return lagging(err)
	}
	p.metrics.catchUp.Observe(time.Since(start).Seconds())
	return nil
}
