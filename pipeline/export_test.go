package pipeline

// EncodeRecord exposes the record encoder to the package's tests.
func EncodeRecord(r *Record) ([]byte, error) { return r.encode() }
