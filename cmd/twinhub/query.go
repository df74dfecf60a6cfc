package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/twinhub/twinhub/bridge/httpapi"
	"github.com/twinhub/twinhub/queries/lang"
	"github.com/twinhub/twinhub/queries/projection"
)

// queryService is the query projection, following the twin bucket on a NATS
// connection of its own (its initial load is every twin record), and
// answering POST /devices/query.
type queryService struct {
	proj *projection.Projection
	nc   *nats.Conn
}

var _ httpapi.Querier = (*queryService)(nil)

func startQueries(ctx context.Context, connect func(name string) (*nats.Conn, error), log *slog.Logger, reg prometheus.Registerer) (*queryService, error) {
	nc, err := connect("twinhub-projection")
	if err != nil {
		return nil, fmt.Errorf("connecting to NATS: %w", err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, err
	}
	proj, err := projection.Open(ctx, js, projection.Config{Logger: log}, reg)
	if err != nil {
		nc.Close()
		return nil, err
	}
	return &queryService{proj: proj, nc: nc}, nil
}

// close drops the connection, once Run has returned.
func (q *queryService) close() { q.nc.Close() }

// Query implements httpapi.Querier: bad queries and tokens are the
// request's fault, anything else means the hub cannot answer now.
func (q *queryService) Query(ctx context.Context, req httpapi.QueryRequest) (httpapi.QueryPage, error) {
	page, err := q.proj.Query(ctx, projection.Request{Query: req.Query, PageSize: req.PageSize, Continuation: req.Continuation})
	switch {
	case errors.Is(err, lang.ErrQuery), errors.Is(err, projection.ErrInvalidContinuation):
		return httpapi.QueryPage{}, badQuery{err}
	case err != nil:
		return httpapi.QueryPage{}, err
	}
	return httpapi.QueryPage{Items: page.Items, Twins: page.Twins, Continuation: page.Continuation}, nil
}

// badQuery marks an error as the request's fault (httpapi.ErrBadQuery),
// keeping its message.
type badQuery struct{ error }

func (e badQuery) Is(target error) bool { return target == httpapi.ErrBadQuery }
func (e badQuery) Unwrap() error        { return e.error }

func newQueryCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   `query "SELECT … FROM devices …"`,
		Short: "query twins (IoT Hub's query language, plus ORDER BY)",
		Long: `Query twins with IoT Hub's query language (plus ORDER BY) and print the rows
as a JSON array, following continuation tokens to the last page.`,
		Args: exactArgs("query"),
	}
	fs := &envFlags{FlagSet: cmd.Flags()}
	cf := addClientFlags(fs)
	o := queryOptions{
		pageSize:     fs.Int("page-size", 100, "rows per request (x-ms-max-item-count, at most 1000)"),
		onePage:      fs.Bool("one-page", false, "print only the first page; its continuation token goes to stderr"),
		continuation: fs.String("continuation", "", "print the one page this token (from --one-page) continues with"),
	}
	o.output = outputFlag(fs, outputJSON)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if err := fs.Err(); err != nil {
			return err
		}
		if err := checkOutput(*o.output); err != nil {
			return err
		}
		o.hint = queryHint(cmd.Flags())
		if *o.pageSize < 1 {
			return usageError{fmt.Errorf("--page-size must be at least 1, got %d", *o.pageSize)}
		}
		api, err := cf.client()
		if err != nil {
			return err
		}
		return cmdQuery(cmd.Context(), api, o, args[0])
	}
	return cmd
}

// queryOptions are the flags of `twinhub query`.
type queryOptions struct {
	pageSize     *int
	onePage      *bool
	continuation *string
	output       *string
	hint         string // the command line to repeat for the next page
}

// cmdQuery runs a twin query against a running hub and prints the rows,
// following continuation tokens to the last page. As JSON the rows stream
// out page by page; nothing is printed before the first page arrived, and
// a failure on a later page still closes the array, so stdout is valid
// JSON whatever happens (the exit status tells the failure). Tables and
// YAML are printed once every page is in.
func cmdQuery(ctx context.Context, api *apiClient, o queryOptions, query string) error {
	pageSize, onePage, continuation := o.pageSize, o.onePage, o.continuation
	body, _ := json.Marshal(map[string]string{"query": query})
	out := bufio.NewWriter(os.Stdout)
	defer out.Flush()
	stream := *o.output == outputJSON
	var all []json.RawMessage // the rows, unless they stream
	token, rows, opened := *continuation, 0, false
	for {
		header := map[string]string{"x-ms-max-item-count": strconv.Itoa(*pageSize)}
		if token != "" {
			header["x-ms-continuation"] = token
		}
		b, h, err := api.callHeader(ctx, http.MethodPost, "/devices/query", body, header)
		var items []json.RawMessage
		if err == nil {
			if jerr := json.Unmarshal(b, &items); jerr != nil {
				err = fmt.Errorf("the hub answered a query with something else than a JSON array: %w", jerr)
			}
		}
		if err != nil {
			if opened {
				out.WriteString("\n]\n")
				return fmt.Errorf("after %d rows: %w", rows, err)
			}
			return err
		}
		if !stream {
			all = append(all, items...)
		} else {
			if !opened {
				out.WriteString("[")
				opened = true
			}
			for _, it := range items {
				if rows > 0 {
					out.WriteString(",")
				}
				var pretty bytes.Buffer
				if json.Indent(&pretty, it, "  ", "  ") != nil {
					pretty.Reset()
					pretty.Write(it)
				}
				out.WriteString("\n  ")
				out.Write(pretty.Bytes())
				rows++
			}
		}
		token = h.Get("x-ms-continuation")
		if token == "" || *onePage || *continuation != "" {
			break
		}
	}
	if stream {
		if rows > 0 {
			out.WriteString("\n")
		}
		out.WriteString("]\n")
	} else {
		if all == nil {
			all = []json.RawMessage{}
		}
		doc, _ := json.Marshal(all)
		if err := render(out, *o.output, doc); err != nil {
			return err
		}
	}
	if token != "" {
		fmt.Fprintf(os.Stderr, "more rows: %s --continuation %s %s\n", o.hint, token, shellQuote(query))
	}
	return nil
}

// shellQuote quotes s for a POSIX shell, when it needs quoting.
func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./:=,@%+") == "" {
		return s
	}
	if !strings.ContainsAny(s, "\"$`\\!") {
		return `"` + s + `"`
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// queryHint is the command line that repeats a query's flags, for the
// "more rows" hint: every flag given on the line, except the paging ones.
func queryHint(fs *pflag.FlagSet) string {
	parts := []string{"twinhub query"}
	fs.Visit(func(f *pflag.Flag) {
		switch f.Name {
		case "continuation", "one-page":
			return
		case "connection-string":
			return // a secret, not for a terminal's scrollback
		}
		if f.Value.Type() == "bool" {
			parts = append(parts, "--"+f.Name+"="+f.Value.String())
			return
		}
		parts = append(parts, "--"+f.Name, shellQuote(f.Value.String()))
	})
	return strings.Join(parts, " ")
}
