package twin

import "fmt"

// MaxDeviceIDLength is IoT Hub's limit on device IDs.
const MaxDeviceIDLength = 128

// ValidateDeviceID checks a device ID against IoT Hub's rules: 1 to 128
// ASCII letters, digits and - . % _ * ? ! ( ) , : = @ $ '.
func ValidateDeviceID(id string) error {
	if id == "" {
		return &Error{Rule: RuleKey, Path: "deviceId", Msg: "device ID is empty"}
	}
	if len(id) > MaxDeviceIDLength {
		return &Error{Rule: RuleKey, Path: "deviceId", Msg: fmt.Sprintf("device ID is %d characters; the limit is %d", len(id), MaxDeviceIDLength)}
	}
	for i := 0; i < len(id); i++ {
		if !deviceIDChar(id[i]) {
			return &Error{Rule: RuleKey, Path: "deviceId",
				Msg: fmt.Sprintf("device ID %q contains %q; allowed are ASCII letters, digits and - . %% _ * ? ! ( ) , : = @ $ '", id, id[i])}
		}
	}
	return nil
}

func deviceIDChar(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	switch c {
	case '-', '.', '%', '_', '*', '?', '!', '(', ')', ',', ':', '=', '@', '$', '\'':
		return true
	}
	return false
}
