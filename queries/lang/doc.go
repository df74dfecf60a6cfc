// Package lang is twinhub's twin query language: IoT Hub's SQL-like
// language over device twins, plus ORDER BY, with a parser and an evaluator
// over twins given as generic JSON objects (map[string]any in Azure's
// service shape). It imports nothing of ours and only the standard library.
//
// # Grammar
//
//	query      = SELECT [TOP n] ( "*" | item {"," item} ) FROM devices [".modules"]
//	             [WHERE expr] [GROUP BY path {"," path}]
//	             [ORDER BY key [ASC|DESC] {"," key [ASC|DESC]}]
//	item       = ( expr | COUNT "(" ")" | (AVG|SUM|MIN|MAX) "(" expr ")" ) [AS name]
//	expr       = expr OR expr | expr AND expr | NOT expr
//	           | expr ("=" | "!=" | "<>" | "<" | "<=" | ">" | ">=") expr
//	           | expr (IN | NIN) array
//	           | expr ("+" | "-" | "*" | "/" | "%") expr | ("-" | "+") expr
//	           | "(" expr ")" | literal | array | path | function "(" [expr {"," expr}] ")"
//	path       = name {"." name}
//	literal    = string | number | true | false | null | undefined
//	array      = "[" [constant {"," constant}] "]"   (constants: literals but undefined, signed numbers, arrays)
//	function   = IS_DEFINED | IS_NULL | STARTSWITH | ENDSWITH
//
// Precedence, loosest first: OR, AND, NOT, comparisons and IN/NIN, + -,
// * / %, unary signs. Keywords and function names are case-insensitive.
// Strings take single or double quotes and the escapes \' \" \\ \/ \b \f \n
// \r \t \uXXXX; numbers are decimal (12, 1.5, 2e-3) or hexadecimal (0x1F).
// A query may be at most MaxQueryLength (8192) characters, and expressions
// may nest at most 128 levels deep.
//
// # Paths
//
// A path names a property of the twin: tags.location.plant,
// properties.reported.connectivity.type, deviceId. A leading "devices." is
// dropped (devices.deviceId is deviceId). A first segment that names a
// top-level twin property (deviceId, moduleId, etag, deviceEtag, version,
// status, statusReason, statusUpdateTime, connectionState,
// lastActivityTime, cloudToDeviceMessageCount, authenticationType,
// x509Thumbprint, modelId, capabilities, configurations, deviceScope,
// parentScopes, tags, properties) matches case-insensitively and takes the
// canonical spelling (DeviceId is deviceId, also as an output key); every
// other segment is case-sensitive. Unlike IoT Hub, a keyword is accepted as a
// property name after a dot (tags.group, tags.order work); only the first
// segment may not be a keyword. Identifiers are letters, digits, '_' and
// '$' (so properties.desired.$version works); there are no bracketed or
// quoted names, and no array indexing.
//
// # Values and conditions
//
// A missing property is undefined, and so is any operation on the wrong kind
// of value: evaluation never fails, it yields undefined. Numbers in twins
// may be json.Number, float64, int, int64 or any Go integer or float type;
// they are compared and computed as float64.
//
//   - Comparisons (= != <> < <= > >=) are defined only between two
//     primitives of the same kind: numbers (numerically), strings (by
//     bytes, case-sensitive), booleans (false < true), null (null = null is
//     true, null < null is false). Any other pair, and any object or array,
//     gives undefined, even for != (so status != null is undefined; use
//     IS_NULL).
//   - x IN [..] is true when x is a primitive equal (as with =) to an
//     element, false when it is a primitive equal to none; NIN is its
//     negation. Both are undefined when x is undefined, an object or an
//     array.
//   - NOT of a non-boolean is undefined. AND and OR are three-valued:
//     false AND x is false, true OR x is true, otherwise a non-boolean
//     operand makes the result undefined.
//   - Arithmetic takes numbers only and returns a float64; division or
//     modulo by zero, and results that are not finite, are undefined. The
//     operator + does not concatenate strings.
//   - IS_DEFINED(x) is true when x is defined, including null. IS_NULL(x) is
//     true when x is defined and null (false, not undefined, otherwise).
//     STARTSWITH(s, p) and ENDSWITH(s, p) are case-sensitive and defined only
//     when both are strings.
//   - WHERE keeps a twin only when the condition is boolean true.
//
// # Results
//
// SELECT * returns the twins themselves. A projection returns one row per
// twin mapping each item's name to its value; undefined values are left out
// of the row. An item's name is its AS alias, else the last segment of its
// path (canonical spelling), else "$1", "$2", ... counting the items without
// alias and path from the left (so SELECT 1+1, COUNT() names them $1 and
// $2). Names must be distinct.
//
// A query with GROUP BY or an aggregate returns one row per group: per
// distinct combination of GROUP BY values (numbers grouped by numeric value,
// undefined is a group of its own whose key is left out of the row), or
// exactly one row without GROUP BY, even over no twins. Outside aggregates,
// such a query may only use GROUP BY paths. COUNT() counts rows and is an
// int; SUM and AVG add numbers and return a float64; MIN and MAX take numbers
// and strings, ordered as ORDER BY orders them (so numbers before strings)
// and return the value as stored. Other values, and undefined, are skipped;
// an aggregate that saw no value is undefined, so left out of the row.
//
// ORDER BY sorts stably, in this order across kinds: undefined < null <
// false < true < numbers < strings < arrays < objects (arrays with arrays
// and objects with objects compare equal). A key that is a single name equal
// to an AS alias orders by that item's value; in a grouped query a key must
// be a GROUP BY path or the name (alias or output name) of a select item.
// Otherwise it is a path into the twin. Without ORDER BY, rows come in input
// order and groups in order of first appearance. TOP n keeps the first n
// rows after ordering.
//
// # Errors
//
// Every error from Parse is an *Error with the line and column (1-based,
// in characters) where the problem is and a message that says what was
// expected there, e.g. "query: line 1, column 10: expected FROM, found
// 'FORM'"; all match ErrQuery. FROM devices queries device twins, FROM
// devices.modules module twins; no other collection is supported.
package lang
