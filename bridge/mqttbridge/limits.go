package mqttbridge

import "sync"

// deviceLimiter bounds the requests each device has in flight, so that one
// device flooding the hub gets 429s while the others are served.
type deviceLimiter struct {
	max int
	mu  sync.Mutex
	// n holds the devices with requests in flight; a device leaves the map
	// when its last request is answered, so it stays as small as the
	// number of busy devices.
	n map[string]int
}

func newDeviceLimiter(max int) *deviceLimiter {
	return &deviceLimiter{max: max, n: make(map[string]int)}
}

// acquire takes one of the device's slots; false when it has none left.
func (l *deviceLimiter) acquire(deviceID string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.n[deviceID] >= l.max {
		return false
	}
	l.n[deviceID]++
	return true
}

// release returns a slot taken by acquire.
func (l *deviceLimiter) release(deviceID string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch n := l.n[deviceID]; {
	case n <= 0:
		panic("BUG: releasing a device request slot that was not taken")
	case n == 1:
		delete(l.n, deviceID)
	default:
		l.n[deviceID] = n - 1
	}
}
