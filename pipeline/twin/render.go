package twin

import (
	"encoding/json"
	"strconv"
	"time"
)

// timeLayout is IoT Hub's timestamp form: UTC with 7 fractional digits.
const timeLayout = "2006-01-02T15:04:05.0000000Z"

// zeroTime is how IoT Hub renders a time that was never set.
const zeroTime = "0001-01-01T00:00:00Z"

// FormatTime renders t as IoT Hub does, "2006-01-02T15:04:05.0000000Z" in
// UTC (digits beyond 100 ns are dropped), and the zero time as
// "0001-01-01T00:00:00Z".
func FormatTime(t time.Time) string {
	if t.IsZero() {
		return zeroTime
	}
	return t.UTC().Format(timeLayout)
}

// MarshalJSON renders the service view of the twin exactly in IoT Hub's
// shape (reference §1.1, §1.3): fields in IoT Hub's order, "statusReason"
// only when set, "tags" only when there are tags, x509Thumbprint both null,
// capabilities {"iotEdge":false}, and in each section the user properties
// (keys sorted) followed by "$metadata" and "$version". Metadata holds
// "$lastUpdated" at every object level and leaf, plus "$lastUpdatedVersion"
// in desired. It fails only when the twin holds a value of a type the twin
// model does not know (possible only in a hand-built twin).
func (t *Twin) MarshalJSON() ([]byte, error) {
	b := make([]byte, 0, 512)
	b = append(b, `{"deviceId":`...)
	b = appendString(b, t.DeviceID)
	if t.ModuleID != "" {
		b = append(b, `,"moduleId":`...)
		b = appendString(b, t.ModuleID)
	}
	b = append(b, `,"etag":`...)
	b = appendString(b, t.ETag())
	b = append(b, `,"status":`...)
	b = appendString(b, t.Status)
	if t.StatusReason != "" {
		b = append(b, `,"statusReason":`...)
		b = appendString(b, t.StatusReason)
	}
	b = append(b, `,"statusUpdateTime":`...)
	b = appendString(b, FormatTime(t.StatusUpdateTime))
	b = append(b, `,"connectionState":`...)
	b = appendString(b, t.ConnectionState)
	b = append(b, `,"lastActivityTime":`...)
	b = appendString(b, FormatTime(t.LastActivityTime))
	b = append(b, `,"cloudToDeviceMessageCount":`...)
	b = strconv.AppendInt(b, t.CloudToDeviceMessageCount, 10)
	b = append(b, `,"authenticationType":`...)
	b = appendString(b, t.AuthenticationType)
	b = append(b, `,"x509Thumbprint":{"primaryThumbprint":`...)
	b = appendNullable(b, t.X509PrimaryThumbprint)
	b = append(b, `,"secondaryThumbprint":`...)
	b = appendNullable(b, t.X509SecondaryThumbprint)
	b = append(b, `},"modelId":`...)
	b = appendString(b, t.ModelID)
	b = append(b, `,"version":`...)
	b = strconv.AppendInt(b, t.Version, 10)
	var err error
	if len(t.Tags) > 0 {
		b = append(b, `,"tags":`...)
		if b, err = appendValue(b, t.Tags); err != nil {
			return nil, err
		}
	}
	b = append(b, `,"properties":{"desired":`...)
	if b, err = t.Desired.append(b, true, true); err != nil {
		return nil, err
	}
	b = append(b, `,"reported":`...)
	if b, err = t.Reported.append(b, false, true); err != nil {
		return nil, err
	}
	b = append(b, `},"capabilities":{"iotEdge":false}}`...)
	return b, nil
}

// append renders the section: its properties, then "$metadata" when
// withMeta, then "$version".
func (s *Section) append(b []byte, desired, withMeta bool) ([]byte, error) {
	b = append(b, '{')
	for _, k := range sortedKeys(s.Props) {
		b = appendString(b, k)
		b = append(b, ':')
		var err error
		if b, err = appendValue(b, s.Props[k]); err != nil {
			return nil, err
		}
		b = append(b, ',')
	}
	if withMeta {
		b = append(b, `"$metadata":`...)
		b = s.Meta.append(b, desired)
		b = append(b, ',')
	}
	b = append(b, `"$version":`...)
	b = strconv.AppendInt(b, s.Version, 10)
	return append(b, '}'), nil
}

// append renders a $metadata node and its children (keys sorted). A nil
// node renders as never updated.
func (m *Meta) append(b []byte, desired bool) []byte {
	if m == nil {
		m = &Meta{}
	}
	b = append(b, `{"$lastUpdated":`...)
	b = appendString(b, FormatTime(m.LastUpdated))
	if desired {
		b = append(b, `,"$lastUpdatedVersion":`...)
		b = strconv.AppendInt(b, m.LastUpdatedVersion, 10)
	}
	for _, k := range sortedKeys(m.Children) {
		b = append(b, ',')
		b = appendString(b, k)
		b = append(b, ':')
		b = m.Children[k].append(b, desired)
	}
	return append(b, '}')
}

// DeviceView renders the body of the device's MQTT twin GET response:
// {"desired":{...,"$version":n},"reported":{...,"$version":m}}, without
// $metadata. A value the twin model does not know (possible only in a
// hand-built twin) renders as null.
func (t *Twin) DeviceView() []byte {
	b := make([]byte, 0, 256)
	b = append(b, `{"desired":`...)
	b = t.Desired.appendLenient(b)
	b = append(b, `,"reported":`...)
	b = t.Reported.appendLenient(b)
	return append(b, '}')
}

func (s *Section) appendLenient(b []byte) []byte {
	props := lenient(s.Props)
	sec := Section{Props: props, Version: s.Version}
	out, err := sec.append(b, false, false)
	if err != nil {
		panic("BUG: twin: rendering a lenient copy failed: " + err.Error())
	}
	return out
}

// DesiredNotification renders the desired-change message sent to the device
// (§2.5): the patch as given, nulls kept, keys sorted, plus "$version":
// version, e.g. {"route":null,"telemetrySendFrequency":"5m","$version":8}.
// After Replace, pass the new Desired.Props (the device gets a full
// replacement). A "$version" key in patch is ignored; a value the twin model
// does not know renders as null.
func DesiredNotification(patch map[string]any, version int64) []byte {
	props := lenient(patch)
	delete(props, "$version")
	b, err := (&Section{Props: props, Version: version}).append(make([]byte, 0, 128), false, false)
	if err != nil {
		panic("BUG: twin: rendering a lenient copy failed: " + err.Error())
	}
	return b
}

// lenient returns a copy of m in which every value appendValue cannot
// render is replaced by null.
func lenient(m map[string]any) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = lenientValue(v)
	}
	return out
}

func lenientValue(v any) any {
	switch v := v.(type) {
	case map[string]any:
		return lenient(v)
	case []any:
		out := make([]any, len(v))
		for i, e := range v {
			out[i] = lenientValue(e)
		}
		return out
	case nil, bool, string:
		return v
	case json.Number:
		if validNumber(string(v)) {
			return v
		}
		return nil
	}
	if text, ok := goNumber(v); ok && text != "" {
		return json.Number(text)
	}
	return nil
}

// UnmarshalJSON parses the service view (MarshalJSON's output, which is also
// the hub's storage format) into t, overwriting every field. The input is
// parsed with ParseJSON, unknown top-level fields and unknown $-keys are
// ignored, and tags and properties must satisfy every rule (keys, values,
// depth, sizes) with no nulls. A $metadata node that is missing takes its
// parent's time and version; metadata for keys that do not exist is dropped.
// For twins whose times are in UTC and truncated to 100 ns (all twins this
// package builds), Unmarshal(Marshal(t)) is deep-equal to t. On error t is
// unchanged.
func (t *Twin) UnmarshalJSON(data []byte) error {
	doc, err := ParseObject(data)
	if err != nil {
		return err
	}
	r := reader{doc: doc}
	nt := Twin{
		DeviceID:                  r.str("deviceId"),
		ModuleID:                  r.str("moduleId"),
		Etag:                      r.etag("etag"),
		Version:                   r.int("version"),
		Status:                    r.str("status"),
		StatusReason:              r.str("statusReason"),
		StatusUpdateTime:          r.time("statusUpdateTime"),
		ConnectionState:           r.str("connectionState"),
		LastActivityTime:          r.time("lastActivityTime"),
		CloudToDeviceMessageCount: r.int("cloudToDeviceMessageCount"),
		AuthenticationType:        r.str("authenticationType"),
		X509PrimaryThumbprint:     r.thumbprint("primaryThumbprint"),
		X509SecondaryThumbprint:   r.thumbprint("secondaryThumbprint"),
		ModelID:                   r.str("modelId"),
	}
	if r.err != nil {
		return r.err
	}
	if v, ok := doc["tags"]; ok && v != nil {
		m, ok := v.(map[string]any)
		if !ok {
			return &Error{Rule: RuleShape, Path: pathTags, Msg: "tags is " + kindOf(v) + "; an object is required"}
		}
		if nt.Tags, err = normalizeObject(m, pathTags, 0, nullRejected); err != nil {
			return err
		}
		if err := checkSize(nt.Tags, pathTags, MaxTagsSize); err != nil {
			return err
		}
		if len(nt.Tags) == 0 {
			nt.Tags = nil
		}
	}
	var props map[string]any
	if v, ok := doc["properties"]; ok && v != nil {
		if props, ok = v.(map[string]any); !ok {
			return &Error{Rule: RuleShape, Path: "properties", Msg: "properties is " + kindOf(v) + "; an object is required"}
		}
	}
	if nt.Desired, err = readSection(props["desired"], pathDesired, true, MaxDesiredSize); err != nil {
		return err
	}
	if nt.Reported, err = readSection(props["reported"], pathReported, false, MaxReportedSize); err != nil {
		return err
	}
	*t = nt
	return nil
}

// reader reads typed top-level fields of a parsed twin, keeping the first
// error. Absent and null fields read as zero values.
type reader struct {
	doc map[string]any
	err error
}

func (r *reader) wrongType(field, want string, v any) {
	if r.err == nil {
		r.err = &Error{Rule: RuleShape, Path: field, Msg: field + " is " + kindOf(v) + "; " + want + " is required"}
	}
}

func (r *reader) str(field string) string {
	v := r.doc[field]
	if v == nil {
		return ""
	}
	s, ok := v.(string)
	if !ok {
		r.wrongType(field, "a string", v)
	}
	return s
}

// thumbprint reads x509Thumbprint.<field>: a string, or null.
func (r *reader) thumbprint(field string) string {
	v := r.doc["x509Thumbprint"]
	if v == nil {
		return ""
	}
	m, ok := v.(map[string]any)
	if !ok {
		r.wrongType("x509Thumbprint", "an object", v)
		return ""
	}
	sub := reader{doc: m}
	s := sub.str(field)
	if sub.err != nil && r.err == nil {
		r.err = sub.err
	}
	return s
}

// appendNullable appends s as a JSON string, or null when it is empty.
func appendNullable(b []byte, s string) []byte {
	if s == "" {
		return append(b, "null"...)
	}
	return appendString(b, s)
}

func (r *reader) int(field string) int64 {
	v := r.doc[field]
	if v == nil {
		return 0
	}
	n, err := readInt(v, field)
	if err != nil && r.err == nil {
		r.err = err
	}
	return n
}

func (r *reader) time(field string) time.Time {
	v := r.doc[field]
	if v == nil {
		return time.Time{}
	}
	t, err := readTime(v, field)
	if err != nil && r.err == nil {
		r.err = err
	}
	return t
}

func (r *reader) etag(field string) int64 {
	s := r.str(field)
	if s == "" || r.err != nil {
		return 0
	}
	n, err := ParseETag(s)
	if err != nil {
		r.err = err
	}
	return n
}

func readInt(v any, path string) (int64, error) {
	num, ok := v.(json.Number)
	if !ok {
		return 0, &Error{Rule: RuleShape, Path: path, Msg: path + " is " + kindOf(v) + "; an integer is required"}
	}
	n, err := strconv.ParseInt(string(num), 10, 64)
	if err != nil {
		return 0, &Error{Rule: RuleShape, Path: path, Msg: path + " is " + string(num) + "; a 64-bit integer is required"}
	}
	return n, nil
}

func readTime(v any, path string) (time.Time, error) {
	s, ok := v.(string)
	if !ok {
		return time.Time{}, &Error{Rule: RuleShape, Path: path, Msg: path + " is " + kindOf(v) + "; a timestamp string is required"}
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, &Error{Rule: RuleShape, Path: path, Msg: "timestamp " + strconv.Quote(s) + " is not RFC 3339"}
	}
	return t.UTC(), nil
}

// readSection reads properties.desired or properties.reported. An absent
// section is empty, with version 0 and zero metadata.
func readSection(v any, path string, desired bool, limit int) (Section, error) {
	var raw map[string]any
	if v != nil {
		var ok bool
		if raw, ok = v.(map[string]any); !ok {
			return Section{}, &Error{Rule: RuleShape, Path: path, Msg: path + " is " + kindOf(v) + "; an object is required"}
		}
	}
	user := make(map[string]any, len(raw))
	for k, v := range raw {
		if len(k) > 0 && k[0] == '$' {
			continue
		}
		user[k] = v
	}
	props, err := normalizeObject(user, path, 0, nullRejected)
	if err != nil {
		return Section{}, err
	}
	if err := checkSize(props, path, limit); err != nil {
		return Section{}, err
	}
	s := Section{Props: props}
	if ver, ok := raw["$version"]; ok && ver != nil {
		if s.Version, err = readInt(ver, path+".$version"); err != nil {
			return Section{}, err
		}
	}
	metaDoc, _ := raw["$metadata"].(map[string]any)
	if raw["$metadata"] != nil && metaDoc == nil {
		return Section{}, &Error{Rule: RuleShape, Path: path + ".$metadata", Msg: "$metadata is " + kindOf(raw["$metadata"]) + "; an object is required"}
	}
	if s.Meta, err = readMeta(props, metaDoc, &Meta{}, path+".$metadata", desired); err != nil {
		return Section{}, err
	}
	return s, nil
}

// readMeta builds the metadata node of content from its $metadata object
// doc (nil when absent), inheriting what doc lacks from parent.
func readMeta(content any, doc map[string]any, parent *Meta, path string, desired bool) (*Meta, error) {
	n := &Meta{LastUpdated: parent.LastUpdated, LastUpdatedVersion: parent.LastUpdatedVersion}
	if v, ok := doc["$lastUpdated"]; ok && v != nil {
		t, err := readTime(v, path+".$lastUpdated")
		if err != nil {
			return nil, err
		}
		n.LastUpdated = t
	}
	if desired {
		if v, ok := doc["$lastUpdatedVersion"]; ok && v != nil {
			ver, err := readInt(v, path+".$lastUpdatedVersion")
			if err != nil {
				return nil, err
			}
			n.LastUpdatedVersion = ver
		}
	} else {
		n.LastUpdatedVersion = 0
	}
	obj, ok := content.(map[string]any)
	if !ok {
		return n, nil
	}
	n.Children = make(map[string]*Meta, len(obj))
	for _, k := range sortedKeys(obj) {
		v := obj[k]
		cp := joinKey(path, k)
		childDoc, _ := doc[k].(map[string]any)
		if doc[k] != nil && childDoc == nil {
			return nil, &Error{Rule: RuleShape, Path: cp, Msg: "metadata is " + kindOf(doc[k]) + "; an object is required"}
		}
		c, err := readMeta(v, childDoc, n, cp, desired)
		if err != nil {
			return nil, err
		}
		n.Children[k] = c
	}
	return n, nil
}
