package pipeline

import (
	"encoding/json"
	"strings"
	"testing"
)

const (
	sha1Print   = "00D4530B4719425E0DB2E2F67A06E9CF0DF02BD8"
	sha256Print = "6F1ED002AB5595859014EBF0951522D9D5E9D8C2A4D5F0E7CE3F5C7A9D4E3B21"
)

// TestNormalizeThumbprint: SHA-1 and SHA-256 hex in either case, with or
// without colons, come out upper case without colons; anything else is
// refused.
func TestNormalizeThumbprint(t *testing.T) {
	colons := func(s string) string {
		var parts []string
		for i := 0; i < len(s); i += 2 {
			parts = append(parts, s[i:i+2])
		}
		return strings.Join(parts, ":")
	}
	for in, want := range map[string]string{
		sha1Print:                          sha1Print,
		strings.ToLower(sha1Print):         sha1Print,
		colons(sha1Print):                  sha1Print,
		" " + strings.ToLower(sha256Print): sha256Print,
	} {
		if got, err := NormalizeThumbprint(in); err != nil || got != want {
			t.Errorf("NormalizeThumbprint(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"", "xyz", sha1Print[:39], sha1Print + "0", sha1Print + "00", "G" + sha1Print[1:], sha256Print[:62]} {
		if got, err := NormalizeThumbprint(in); err == nil {
			t.Errorf("NormalizeThumbprint(%q) = %q, want an error", in, got)
		}
	}
}

// TestDecideAuthentication: what each registry body does to a device's
// credentials, from SAS and from self-signed, and which bodies are refused
// (the record is then unchanged: decide returns no change).
func TestDecideAuthentication(t *testing.T) {
	self := func(primary, secondary string) string {
		b, _ := json.Marshal(map[string]any{"authentication": map[string]any{"type": "selfSigned",
			"x509Thumbprint": map[string]any{"primaryThumbprint": primary, "secondaryThumbprint": secondary}}})
		return string(b)
	}
	sasRec := created(t)
	selfRec := mustApply(t, sasRec, Command{ID: "to-self", Kind: KindUpdateDevice, DeviceID: "d", Body: json.RawMessage(self(sha1Print, ""))})
	type want struct {
		typ, primary, secondary string
		keys                    bool
	}
	for _, tc := range []struct {
		name string
		rec  *Record
		body string
		want *want // nil: refused with 400
	}{
		{"sas to selfSigned", sasRec, self(strings.ToLower(sha1Print), sha256Print), &want{AuthSelfSigned, sha1Print, sha256Print, false}},
		{"sas to certificateAuthority", sasRec, `{"authentication":{"type":"certificateAuthority"}}`, &want{AuthCertificateAuthority, "", "", false}},
		{"sas stays sas without a type", sasRec, `{"authentication":{"symmetricKey":{"primaryKey":"` + key('p') + `"}}}`, &want{AuthSAS, "", "", true}},
		{"selfSigned: new thumbprints", selfRec, self(sha256Print, ""), &want{AuthSelfSigned, sha256Print, "", false}},
		{"selfSigned: no authentication keeps it", selfRec, `{"status":"enabled"}`, &want{AuthSelfSigned, sha1Print, "", false}},
		{"selfSigned: a type-less body is selfSigned", selfRec, `{"authentication":{"x509Thumbprint":{"primaryThumbprint":"` + sha256Print + `"}}}`, &want{AuthSelfSigned, sha256Print, "", false}},
		{"selfSigned back to sas gets keys", selfRec, `{"authentication":{"type":"sas"}}`, &want{AuthSAS, "", "", true}},
		{"selfSigned to certificateAuthority", selfRec, `{"authentication":{"type":"certificateAuthority"}}`, &want{AuthCertificateAuthority, "", "", false}},

		{"selfSigned without thumbprints", sasRec, `{"authentication":{"type":"selfSigned"}}`, nil},
		{"selfSigned with only a secondary", sasRec, self("", sha1Print), nil},
		{"a malformed thumbprint", sasRec, self("abc", ""), nil},
		{"a thumbprint that is not a string", sasRec, `{"authentication":{"type":"selfSigned","x509Thumbprint":{"primaryThumbprint":1}}}`, nil},
		{"the same thumbprint twice", sasRec, self(sha1Print, strings.ToLower(sha1Print)), nil},
		{"selfSigned with keys", sasRec, `{"authentication":{"type":"selfSigned","symmetricKey":{"primaryKey":"` + key('p') + `"},"x509Thumbprint":{"primaryThumbprint":"` + sha1Print + `"}}}`, nil},
		{"sas with thumbprints", sasRec, `{"authentication":{"type":"sas","x509Thumbprint":{"primaryThumbprint":"` + sha1Print + `"}}}`, nil},
		{"a type-less body with thumbprints on a sas device", sasRec, `{"authentication":{"x509Thumbprint":{"primaryThumbprint":"` + sha1Print + `"}}}`, nil},
		{"keys on a selfSigned device", selfRec, `{"authentication":{"symmetricKey":{"primaryKey":"` + key('p') + `"}}}`, nil},
		{"certificateAuthority with a thumbprint", sasRec, `{"authentication":{"type":"certificateAuthority","x509Thumbprint":{"primaryThumbprint":"` + sha1Print + `"}}}`, nil},
		{"an unknown type", sasRec, `{"authentication":{"type":"none"}}`, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := mustJSON(t, tc.rec)
			ch, res := decide(Command{ID: "x-" + tc.name, Kind: KindUpdateDevice, DeviceID: "d", Body: json.RawMessage(tc.body)}, tc.rec, decideNow)
			if string(mustJSON(t, tc.rec)) != string(before) {
				t.Fatal("decide changed the record it was given")
			}
			if tc.want == nil {
				if ch != nil || res.Status != 400 || res.Code != "ArgumentInvalid" {
					t.Fatalf("got change %v, %d %s; want 400 ArgumentInvalid", ch != nil, res.Status, res.Code)
				}
				return
			}
			if ch == nil {
				t.Fatalf("refused: %d %s", res.Status, res.Message)
			}
			id, tw := ch.next.Identity, ch.next.Twin
			if id.AuthType() != tc.want.typ || id.PrimaryThumbprint != tc.want.primary || id.SecondaryThumbprint != tc.want.secondary {
				t.Errorf("identity %q %q %q, want %+v", id.AuthType(), id.PrimaryThumbprint, id.SecondaryThumbprint, *tc.want)
			}
			if hasKeys := id.PrimaryKey != "" && id.SecondaryKey != ""; hasKeys != tc.want.keys {
				t.Errorf("keys %q %q, want keys: %v", id.PrimaryKey, id.SecondaryKey, tc.want.keys)
			}
			if tw.AuthenticationType != tc.want.typ || tw.X509PrimaryThumbprint != tc.want.primary || tw.X509SecondaryThumbprint != tc.want.secondary {
				t.Errorf("twin %q %q %q, want %+v", tw.AuthenticationType, tw.X509PrimaryThumbprint, tw.X509SecondaryThumbprint, *tc.want)
			}
			// The registry document shows the same.
			var doc DeviceDocument
			if err := json.Unmarshal(ch.next.IdentityJSON(), &doc); err != nil {
				t.Fatal(err)
			}
			if doc.Authentication.Type != tc.want.typ {
				t.Errorf("document type %q", doc.Authentication.Type)
			}
			// And the twin survives its storage round trip.
			var back Record
			b, err := ch.next.encode()
			if err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal(b, &back); err != nil {
				t.Fatal(err)
			}
			if back.Twin.X509PrimaryThumbprint != tc.want.primary || back.Identity.AuthType() != tc.want.typ {
				t.Errorf("after encoding: twin thumbprint %q, type %q", back.Twin.X509PrimaryThumbprint, back.Identity.AuthType())
			}
		})
	}

	// A module authenticates with SAS only.
	if ch, res := decide(Command{ID: "mod", Kind: KindCreateDevice, DeviceID: "d/m", Body: json.RawMessage(self(sha1Print, ""))}, nil, decideNow); ch != nil || res.Status != 400 || !strings.Contains(res.Message, "a module authenticates with its symmetric keys") {
		t.Errorf("a selfSigned module: change %v, %d %s", ch != nil, res.Status, res.Message)
	}

	// A device created as selfSigned has no keys.
	ch, res := decide(Command{ID: "new", Kind: KindCreateDevice, DeviceID: "n", Body: json.RawMessage(self(sha1Print, ""))}, nil, decideNow)
	if ch == nil || ch.next.Identity.PrimaryKey != "" || ch.next.Identity.AuthType() != AuthSelfSigned || ch.next.Twin.AuthenticationType != AuthSelfSigned {
		t.Fatalf("create selfSigned: %+v %+v", ch, res)
	}
	if s := string(ch.next.IdentityJSON()); !strings.Contains(s, `"symmetricKey":{"primaryKey":null,"secondaryKey":null}`) {
		t.Errorf("registry document of a selfSigned device: %s", s)
	}
}
