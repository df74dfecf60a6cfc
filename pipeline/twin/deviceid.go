package twin

import "fmt"

// MaxDeviceIDLength is IoT Hub's limit on device IDs.
const MaxDeviceIDLength = 128

// ValidateDeviceID checks a device ID against IoT Hub's rules: 1 to 128
// ASCII letters, digits and - . % _ * ? ! ( ) , : = @ $ '.
func ValidateDeviceID(id string) error { return validateID(id, "deviceId", "device ID") }

// ValidateModuleID checks a module ID against IoT Hub's rules, which are
// those of device IDs.
func ValidateModuleID(id string) error { return validateID(id, "moduleId", "module ID") }

func validateID(id, path, what string) error {
	if id == "" {
		return &Error{Rule: RuleKey, Path: path, Msg: what + " is empty"}
	}
	if len(id) > MaxDeviceIDLength {
		return &Error{Rule: RuleKey, Path: path, Msg: fmt.Sprintf("%s is %d characters; the limit is %d", what, len(id), MaxDeviceIDLength)}
	}
	for i := 0; i < len(id); i++ {
		if !deviceIDChar(id[i]) {
			return &Error{Rule: RuleKey, Path: path,
				Msg: fmt.Sprintf("%s %q contains %q; allowed are ASCII letters, digits and - . %% _ * ? ! ( ) , : = @ $ '", what, id, id[i])}
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
