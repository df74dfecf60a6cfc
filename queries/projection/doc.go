// Package projection answers twin queries (queries/lang) from an in-memory
// projection of every twin, kept current from the twin records' KV bucket.
//
// # Storage
//
// Each twin is kept as its JSON, the bytes of the KV record (which is what
// GET /twins/{id} returns), compressed with S2 against a dictionary made of
// sample twins of the fleet itself: keys, $metadata and timestamps repeat
// across a fleet, so a 2 KB twin keeps about 260 bytes and a page of 100
// twins decompresses in about 0.2 ms. SELECT * rows are these bytes.
//
// For evaluation each twin is also flattened into nodes: one (path, value)
// pair of two dictionary ids per property, object level and array, 8 bytes
// each; the sections' $metadata is not flattened. Paths
// (tags.location.plant) and values are interned once for the whole fleet; a
// value keeps its exact text, so 1.0 stays 1.0 in rows while it equals 1 in
// conditions and groups.
//
// # Indexes
//
// Every path has an inverted index from each of its values to the twins
// holding it: the twin's id inline when one twin holds the value, else a
// sorted id list, or a bitmap when dense. A path's comparable values in order
// are built by the first range or prefix query on it and kept current from
// then on. The planner turns the WHERE condition into candidate sets: = and
// IN (equality lookups), < <= > >= != and STARTSWITH (scans of the ordered
// values), IS_DEFINED and IS_NULL, AND (intersection), OR (union), NOT
// (pushed down with De Morgan and by inverting comparisons and IN), constant
// operands (-5, 2 * 3), and any other condition on a single path (evaluated
// once per distinct value of the path, not per twin). When every part of the
// condition was answered this way the candidates are exact and rows need no
// check; otherwise each candidate is checked with lang on a sparse document
// holding only the paths the query reads. Queries that read a section's
// $metadata (or a whole section, or properties) decode whole twins.
//
// Aggregates with GROUP BY over paths, and COUNT, SUM, AVG, MIN, MAX of
// paths, are folded from the nodes without building rows; other grouped
// queries stream sparse documents through lang's evaluator.
//
// # Order and paging
//
// Rows come in deviceId order (bytewise), and with ORDER BY in that order
// among equal keys; groups come in order of first appearance in that order.
// That is lang's Execute over the twins in deviceId order, and the tests
// check the projection against it. A continuation token names the last row
// returned (its deviceId, and its ORDER BY values) and the next page starts
// strictly after it in that total order. So tokens hold no server state, are
// valid on any instance and after restarts, and stay valid however the fleet
// changes: no row is returned twice and none is skipped because of a write
// to another twin; a twin that matches throughout the paging is returned
// exactly once. A twin that itself changes, appears or disappears between
// pages is returned according to its state when the page covering its
// position is read: at most once without ORDER BY, and with ORDER BY again
// at its new position if its ORDER BY values moved past the token. Grouped
// results are recomputed for every page and paged by offset.
//
// # Consistency
//
// The processor writes every acknowledged change (twin changes, registry
// changes and connection state included) to the KV bucket before it
// acknowledges it. The projection watches the bucket, and before answering a
// query it reads the bucket's last revision (a JetStream stream info
// request) and waits until it has applied the changes up to it. So a query
// sees every change acknowledged before it was sent, by this instance or any
// other sharing the NATS.
//
// A query holds the projection's shared lock for at most 64 Ki twins at a
// time; changes are applied in between. After such a pause a quick plan is
// made again (so its candidates are current) and a slow one checks every
// twin, so every row matches its twin's state when the row was read; changes
// applied during a long query may or may not be reflected.
package projection
