package pipeline

import "testing"

// TestErrorCodes: every code's number, where IoT Hub has one, starts with
// its HTTP status (IoT Hub's numbering), names are unique, and NumericCode
// falls back to status*1000+1.
func TestErrorCodes(t *testing.T) {
	if len(codesByName) != 19 {
		t.Errorf("%d codes by name, want 19: a name is listed twice or a code is missing from codesByName", len(codesByName))
	}
	for name, c := range codesByName {
		if c.Name != name || c.Status < 400 || c.Status > 599 {
			t.Errorf("%s: %+v", name, c)
		}
		if c.Number != 0 && c.Number/1000 != c.Status {
			t.Errorf("%s: number %d does not start with status %d", name, c.Number, c.Status)
		}
	}
	if n := NumericCode("DeviceNotFound", 404); n != 404001 {
		t.Errorf("DeviceNotFound: %d", n)
	}
	if n := NumericCode("JobAlreadyExists", 409); n != 409001 {
		t.Errorf("JobAlreadyExists (no IoT Hub number): %d", n)
	}
	if n := NumericCode("SomethingNew", 418); n != 418001 {
		t.Errorf("unknown name: %d", n)
	}
}
