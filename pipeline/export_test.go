package pipeline

import "time"

// EncodeRecord exposes the record encoder to the package's tests.
func EncodeRecord(r *Record) ([]byte, error) { return r.encode() }

// RetryablePublish exposes the publish retry classification to the package's tests.
var RetryablePublish = retryablePublish

// Pulling counts the partitions the processor pulls (owned or standing
// by), that is, those it has not parked after handing them over.
func Pulling(p *Processor) int {
	n := 0
	for _, part := range p.parts.parts {
		part.mu.Lock()
		if time.Now().After(part.parkedUntil) {
			n++
		}
		part.mu.Unlock()
	}
	return n
}
