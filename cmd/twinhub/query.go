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

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"

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
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if err := fs.Err(); err != nil {
			return err
		}
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
}

// cmdQuery runs a twin query against a running hub and prints the rows as
// a JSON array, following continuation tokens to the last page.
func cmdQuery(ctx context.Context, api *apiClient, o queryOptions, query string) error {
	pageSize, onePage, continuation := o.pageSize, o.onePage, o.continuation
	body, _ := json.Marshal(map[string]string{"query": query})
	out := bufio.NewWriter(os.Stdout)
	defer out.Flush()
	out.WriteString("[")
	token, rows := *continuation, 0
	for {
		header := map[string]string{"x-ms-max-item-count": strconv.Itoa(*pageSize)}
		if token != "" {
			header["x-ms-continuation"] = token
		}
		b, h, err := api.callHeader(ctx, http.MethodPost, "/devices/query", body, header)
		if err != nil {
			return err
		}
		var items []json.RawMessage
		if err := json.Unmarshal(b, &items); err != nil {
			return fmt.Errorf("the hub answered a query with something else than a JSON array: %w", err)
		}
		for _, it := range items {
			if rows > 0 {
				out.WriteString(",")
			}
			rows++
			var pretty bytes.Buffer
			if json.Indent(&pretty, it, "  ", "  ") != nil {
				pretty.Reset()
				pretty.Write(it)
			}
			out.WriteString("\n  ")
			out.Write(pretty.Bytes())
		}
		token = h.Get("x-ms-continuation")
		if token == "" || *onePage || *continuation != "" {
			break
		}
	}
	if rows > 0 {
		out.WriteString("\n")
	}
	out.WriteString("]\n")
	if token != "" {
		fmt.Fprintf(os.Stderr, "more rows: twinhub query --continuation %s %q\n", token, query)
	}
	return nil
}
