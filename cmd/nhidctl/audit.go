package main

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/nhid/nhid/pkg/audit"
	adminv1 "github.com/nhid/nhid/proto/nhid/admin/v1"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

// formatJSONL is the JSON lines output of the audit commands.
const formatJSONL = "jsonl"

// tailPoll is how often "audit tail -f" asks for new records.
const tailPoll = time.Second

func newAuditCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "audit",
		Short: "Read, export and verify the tamper-evident audit log",
		Long: `The audit log is a hash chain of records signed by checkpoints
(docs/audit.md). "audit verify" recomputes it on this side: it trusts no
answer of the server but the keys it anchors the checkpoints with.`,
	}
	cmd.AddCommand(newAuditTailCmd(g), newAuditExportCmd(g), newAuditVerifyCmd(g), newAuditHeadCmd(g))
	return cmd
}

func newAuditTailCmd(g *globals) *cobra.Command {
	var n int
	var follow bool
	cmd := &cobra.Command{
		Use:         "tail [-n N] [-f]",
		Short:       "Show the newest audit records; -f keeps showing new ones",
		Args:        exactArgs(),
		Annotations: map[string]string{annotationOutputs: "table,json,jsonl"},
		RunE: func(cmd *cobra.Command, _ []string) error {
			switch {
			case n < 1 || n > 100_000:
				return usagef("-n %d: must be 1 to 100000", n)
			case follow && g.output == formatJSON:
				return usagef("-f streams records: use -o table or -o jsonl")
			}
			return withAdmin(cmd, g, func(a *admin) error {
				w := &recordWriter{w: cmd.OutOrStdout(), format: g.output}
				last, err := streamRecords(cmd.Context(), a, &adminv1.ListAuditRecordsRequest{Tail: int64(n)}, w.add)
				if err != nil {
					return err
				}
				if !follow {
					return w.close()
				}
				return followRecords(cmd.Context(), a, last, w)
			})
		},
	}
	cmd.Flags().IntVarP(&n, "lines", "n", 20, "how many of the newest records to show")
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep showing new records until interrupted")
	return cmd
}

// followRecords polls for records after last until ctx ends (Ctrl-C),
// which is a normal end.
func followRecords(ctx context.Context, a *admin, last uint64, w *recordWriter) error {
	for {
		if err := w.flush(); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(tailPoll):
		}
		next, err := streamRecords(ctx, a, &adminv1.ListAuditRecordsRequest{FromSeq: last + 1}, w.add)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			return err
		}
		last = max(last, next)
	}
}

// streamRecords reads the records req selects and hands each to fn; it
// returns the highest seq seen. fn returning errStop ends the stream early.
func streamRecords(ctx context.Context, a *admin, req *adminv1.ListAuditRecordsRequest, fn func(*typesv1.AuditRecord) error) (uint64, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := adminv1.NewAuditServiceClient(a.conn).ListAuditRecords(ctx, req)
	if err != nil {
		return 0, a.explain(err)
	}
	var last uint64
	for {
		resp, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return last, nil
		}
		if err != nil {
			return last, a.explain(err)
		}
		for _, r := range resp.GetRecords() {
			last = max(last, r.GetSeq())
			if err := fn(r); errors.Is(err, errStop) {
				return last, nil
			} else if err != nil {
				return last, err
			}
		}
	}
}

// errStop ends a record stream early without an error.
var errStop = errors.New("stop")

// recordWriter prints records as a table (in chunks, so "tail -f" shows
// them as they come), as JSON lines, or as one JSON array.
type recordWriter struct {
	w       io.Writer
	format  string
	rows    [][]string
	n       int
	started bool
}

func (rw *recordWriter) add(r *typesv1.AuditRecord) error {
	rw.n++
	if rw.format == formatTable {
		rw.rows = append(rw.rows, recordRow(r))
		return nil
	}
	return rw.line(audit.Line{Record: r})
}

// line writes l as a JSON line, or as the next element of the JSON array.
func (rw *recordWriter) line(l audit.Line) error {
	b, err := audit.MarshalLine(l)
	if err != nil {
		return err
	}
	if rw.format == formatJSON {
		sep := ",\n  "
		if !rw.started {
			sep = "[\n  "
		}
		b = append([]byte(sep), b[:len(b)-1]...)
		rw.started = true
	}
	_, err = rw.w.Write(b)
	return err
}

// flush prints the table rows gathered so far.
func (rw *recordWriter) flush() error {
	if len(rw.rows) == 0 {
		return nil
	}
	var header []string
	if !rw.started {
		header = []string{"SEQ", "TIME", "ACTOR", "ON BEHALF OF", "ACTION", "TARGET", "OUTCOME", "REASON"}
		rw.started = true
	}
	rows := rw.rows
	rw.rows = nil
	return (&printer{w: rw.w}).table(header, rows)
}

func (rw *recordWriter) close() error {
	switch {
	case rw.format == formatJSON && !rw.started:
		_, err := io.WriteString(rw.w, "[]\n")
		return err
	case rw.format == formatJSON:
		_, err := io.WriteString(rw.w, "\n]\n")
		return err
	case rw.format == formatTable && rw.n == 0:
		_, err := io.WriteString(rw.w, "no audit records\n")
		return err
	}
	return rw.flush()
}

func recordRow(r *typesv1.AuditRecord) []string {
	return []string{strconv.FormatUint(r.GetSeq(), 10), time.Unix(0, r.GetTime()).UTC().Format(time.RFC3339),
		r.GetActor(), r.GetOnBehalfOf(), r.GetAction(), r.GetTarget(), r.GetOutcome(), r.GetReason()}
}

func newAuditHeadCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "head",
		Short: "Show the chain's head and the server's checkpoint key (-o pem: the key, for --trusted-key)",
		Long: `Shows the newest record's seq and hash and the checkpoint key the server
holds. Save the key once (nhidctl audit head -o pem > server-audit.pem) and
give it to "audit verify --trusted-key" later: then a server that has been
replaced cannot vouch for a forged log.`,
		Args:        exactArgs(),
		Annotations: map[string]string{annotationOutputs: "table,json,pem"},
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withAdmin(cmd, g, func(a *admin) error {
				head, err := call(cmd, a, adminv1.NewAuditServiceClient(a.conn).GetAuditHead, &adminv1.GetAuditHeadRequest{})
				if err != nil {
					return err
				}
				return printHead(g.printer(cmd), head)
			})
		},
	}
}

func printHead(p *printer, head *adminv1.GetAuditHeadResponse) error {
	switch p.format {
	case formatPEM:
		for _, k := range head.GetTrustedKeys() {
			if err := pem.Encode(p.w, &pem.Block{Type: "PUBLIC KEY", Bytes: k}); err != nil {
				return err
			}
		}
		return nil
	case formatJSON:
		keys := make([]map[string]string, 0, len(head.GetTrustedKeys()))
		for _, k := range head.GetTrustedKeys() {
			keys = append(keys, map[string]string{"key_id": audit.KeyID(k),
				"public_key_pem": string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: k}))})
		}
		b, err := json.MarshalIndent(map[string]any{"seq": head.GetSeq(), "hash": hex.EncodeToString(head.GetHash()), "keys": keys}, "", "  ")
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(p.w, "%s\n", b)
		return err
	}
	ids := make([]string, 0, len(head.GetTrustedKeys()))
	for _, k := range head.GetTrustedKeys() {
		ids = append(ids, audit.KeyID(k))
	}
	return p.record([]field{
		{"Seq", strconv.FormatUint(head.GetSeq(), 10)},
		{"Hash", hex.EncodeToString(head.GetHash())},
		{"Checkpoint key", strings.Join(ids, ", ")},
	})
}

// parseWhen reads --since/--until: an RFC 3339 time, or a duration (Go
// syntax, plus d for days) meaning that long ago. It returns unix
// nanoseconds.
func parseWhen(flag, s string, now time.Time) (int64, error) {
	if s == "" {
		return 0, nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t.UnixNano(), nil
	}
	d, err := parseAgo(strings.TrimSuffix(strings.TrimSpace(s), " ago"))
	if err != nil || d < 0 {
		return 0, usagef("%s %q: want an RFC 3339 time (2026-01-02T15:04:05Z) or how long ago (90m, 2h, 7d)", flag, s)
	}
	return now.Add(-d).UnixNano(), nil
}

func parseAgo(s string) (time.Duration, error) {
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.ParseUint(days, 10, 16)
		return time.Duration(n) * 24 * time.Hour, err
	}
	return time.ParseDuration(s)
}
