package pipeline

import "net/http"

// ErrorCode is one of IoT Hub's error codes: the name error bodies carry
// (the HTTP body's "ErrorCode:<Name>;…" and the iothub-errorcode header),
// the HTTP status it answers with, and the number devices see in MQTT error
// bodies (reference §4.4; 0 where IoT Hub documents none).
type ErrorCode struct {
	Name   string
	Status int
	Number int
}

// The error codes twinhub answers with, the one place their names, statuses
// and numbers are written.
var (
	CodeArgumentInvalid             = ErrorCode{"ArgumentInvalid", http.StatusBadRequest, 400004}
	CodeArgumentNull                = ErrorCode{"ArgumentNull", http.StatusBadRequest, 400005}
	CodeUnauthorized                = ErrorCode{"IotHubUnauthorizedAccess", http.StatusUnauthorized, 401002}
	CodeDeviceNotFound              = ErrorCode{"DeviceNotFound", http.StatusNotFound, 404001}
	CodeJobNotFound                 = ErrorCode{"JobNotFound", http.StatusNotFound, 404002}
	CodeModuleNotFound              = ErrorCode{"ModuleNotFound", http.StatusNotFound, 404010}
	CodeCertificateNotFound         = ErrorCode{"CertificateNotFound", http.StatusNotFound, 0}
	CodeNotFound                    = ErrorCode{"NotFound", http.StatusNotFound, 0}
	CodeRequestTimeout              = ErrorCode{"RequestTimeout", http.StatusRequestTimeout, 0}
	CodeDeviceAlreadyExists         = ErrorCode{"DeviceAlreadyExists", http.StatusConflict, 409001}
	CodeModuleAlreadyExistsOnDevice = ErrorCode{"ModuleAlreadyExistsOnDevice", http.StatusConflict, 409301}
	CodeJobAlreadyExists            = ErrorCode{"JobAlreadyExists", http.StatusConflict, 0}
	CodeCertificateAlreadyExists    = ErrorCode{"CertificateAlreadyExists", http.StatusConflict, 0}
	CodePreconditionFailed          = ErrorCode{"PreconditionFailed", http.StatusPreconditionFailed, 412001}
	CodeMessageTooLarge             = ErrorCode{"MessageTooLarge", http.StatusRequestEntityTooLarge, 413001}
	CodeThrottling                  = ErrorCode{"ThrottlingException", http.StatusTooManyRequests, 429001}
	CodeServerError                 = ErrorCode{"ServerError", http.StatusInternalServerError, 500001}
	CodeServiceUnavailable          = ErrorCode{"ServiceUnavailable", http.StatusServiceUnavailable, 503001}
	CodeGatewayTimeout              = ErrorCode{"GatewayTimeout", http.StatusGatewayTimeout, 504101}
)

var codesByName = func() map[string]ErrorCode {
	m := map[string]ErrorCode{}
	for _, c := range []ErrorCode{CodeArgumentInvalid, CodeArgumentNull, CodeUnauthorized, CodeDeviceNotFound, CodeJobNotFound,
		CodeModuleNotFound, CodeCertificateNotFound, CodeNotFound, CodeRequestTimeout, CodeDeviceAlreadyExists,
		CodeModuleAlreadyExistsOnDevice, CodeJobAlreadyExists, CodeCertificateAlreadyExists, CodePreconditionFailed,
		CodeMessageTooLarge, CodeThrottling, CodeServerError, CodeServiceUnavailable, CodeGatewayTimeout} {
		m[c.Name] = c
	}
	return m
}()

// NumericCode returns IoT Hub's numeric error code for an error code name
// (e.g. 404001 for DeviceNotFound), or status*1000+1 where there is none.
func NumericCode(name string, status int) int {
	if c, ok := codesByName[name]; ok && c.Number != 0 {
		return c.Number
	}
	return status*1000 + 1
}
