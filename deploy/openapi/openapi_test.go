// Package openapi holds twinhub's OpenAPI 3 description, twinhub.yaml. This
// test checks that the document is valid OpenAPI; cmd/twinhub's
// TestOpenAPIMatchesTheHub checks it against a running hub: every route the
// hub registers is described, and the hub's real answers conform.
package openapi

import (
	"context"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
)

func TestDocumentIsValid(t *testing.T) {
	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromFile("twinhub.yaml")
	if err != nil {
		t.Fatalf("loading twinhub.yaml: %v", err)
	}
	if err := doc.Validate(context.Background()); err != nil {
		t.Fatalf("twinhub.yaml is not valid OpenAPI 3: %v", err)
	}
	// Every error response of the API proper (the operations that need a
	// token) carries IoT Hub's error body and header, and says which rights
	// it needs.
	for path, item := range doc.Paths.Map() {
		for method, op := range item.Operations() {
			if op.Security != nil && len(*op.Security) == 0 {
				continue // open: operations endpoints, the explorer's files
			}
			if !strings.Contains(op.Description, "Rights:") {
				t.Errorf("%s %s needs a token but its description names no rights", method, path)
			}
			for status, resp := range op.Responses.Map() {
				if !strings.HasPrefix(status, "4") && !strings.HasPrefix(status, "5") || resp.Ref == "" {
					continue
				}
				body := resp.Value.Content.Get("application/json")
				if body == nil || body.Schema.Ref != "#/components/schemas/Error" {
					t.Errorf("%s %s: response %s (%s) has no IoT Hub error body", method, path, status, resp.Ref)
				}
				if resp.Value.Headers["iothub-errorcode"] == nil {
					t.Errorf("%s %s: response %s (%s) lacks the iothub-errorcode header", method, path, status, resp.Ref)
				}
			}
		}
	}
}

// TestValidationCatchesAnError makes sure the validation above can fail: a
// document with a response that refers to a missing schema is refused.
func TestValidationCatchesAnError(t *testing.T) {
	const broken = `openapi: 3.0.3
info: {title: broken, version: "1"}
paths:
  /x:
    get:
      responses:
        "200":
          description: x
          content: {application/json: {schema: {$ref: "#/components/schemas/Missing"}}}
`
	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromData([]byte(broken))
	if err == nil {
		err = doc.Validate(context.Background())
	}
	if err == nil {
		t.Fatal("a document with a dangling $ref passed")
	}
}
