package pipeline

// EncodeRecord exposes the record encoder to the package's tests.
func EncodeRecord(r *Record) ([]byte, error) { return r.encode() }

// RetryablePublish exposes the publish retry classification to the package's tests.
var RetryablePublish = retryablePublish
