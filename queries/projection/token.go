package projection

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"strconv"
)

// token is the state a continuation token carries. Rows of a query come in a
// total order (deviceId, or the ORDER BY keys then deviceId), so a token
// names the last row returned and the next page starts strictly after it:
// tokens hold no server state, work on every instance and after restarts,
// and stay valid however the fleet changes. Grouped results, which are small
// and recomputed per page, page by offset.
type token struct {
	// Hash is the query text's hash: a token is valid only with its query.
	Hash string `json:"h"`
	// After is the deviceId of the last row returned.
	After string `json:"a,omitempty"`
	// Keys are the ORDER BY values of the last row returned.
	Keys []sortValue `json:"k,omitempty"`
	// Done counts the rows returned so far (for TOP), or the groups skipped.
	Done int `json:"d,omitempty"`
}

func queryHash(query string) string {
	h := fnv.New64a()
	h.Write([]byte(query))
	return strconv.FormatUint(h.Sum64(), 36)
}

func (t token) encode() string {
	b, err := json.Marshal(t)
	if err != nil {
		panic("BUG: projection: encoding a continuation token: " + err.Error())
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// parseToken decodes a token and checks it belongs to query; "" is the
// first page.
func parseToken(s, query string) (token, error) {
	t := token{Hash: queryHash(query)}
	if s == "" {
		return t, nil
	}
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return t, fmt.Errorf("%w: not base64url", ErrInvalidContinuation)
	}
	var got token
	if err := json.Unmarshal(b, &got); err != nil {
		return t, fmt.Errorf("%w: %v", ErrInvalidContinuation, err)
	}
	if got.Hash != t.Hash {
		return t, fmt.Errorf("%w: it was issued for another query; send the same query text with its token", ErrInvalidContinuation)
	}
	if got.Done < 0 {
		return t, fmt.Errorf("%w: negative count", ErrInvalidContinuation)
	}
	for _, k := range got.Keys {
		if k.Rank < rankUndefined || k.Rank > rankOther {
			return t, fmt.Errorf("%w: bad key", ErrInvalidContinuation)
		}
	}
	return got, nil
}
