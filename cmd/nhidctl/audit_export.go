package main

import (
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/nhid/nhid/pkg/audit"
	adminv1 "github.com/nhid/nhid/proto/nhid/admin/v1"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

func newAuditExportCmd(g *globals) *cobra.Command {
	var since, until string
	cmd := &cobra.Command{
		Use:   "export [--since T] [--until T] [-o jsonl|json]",
		Short: "Write audit records and checkpoints as JSON lines (default) or one JSON array",
		Long: `Writes the records (kind "record"), then the checkpoints among them (kind
"checkpoint"), then, for a whole-log export, the head (kind "head"): the
format of docs/audit.md, which "audit verify --file" reads back.
--since and --until take an RFC 3339 time or how long ago (90m, 2h, 7d);
records with since <= time < until are exported.`,
		Args:        exactArgs(),
		Annotations: map[string]string{annotationOutputs: "table,jsonl,json"},
		RunE: func(cmd *cobra.Command, _ []string) error {
			format := g.output
			switch {
			case !cmd.Root().PersistentFlags().Changed("output"):
				format = formatJSONL
			case format == formatTable:
				return usagef("export writes JSON: use -o jsonl (the default) or -o json")
			}
			now := time.Now()
			from, err := parseWhen("--since", since, now)
			if err != nil {
				return err
			}
			to, err := parseWhen("--until", until, now)
			if err != nil {
				return err
			}
			if to != 0 && to < from {
				return usagef("--until %s is before --since %s", until, since)
			}
			return withAdmin(cmd, g, func(a *admin) error {
				return exportAudit(cmd, a, &recordWriter{w: cmd.OutOrStdout(), format: format}, from, to)
			})
		},
	}
	cmd.Flags().StringVar(&since, "since", "", "only records at or after this time (RFC 3339, or how long ago: 2h, 7d)")
	cmd.Flags().StringVar(&until, "until", "", "only records before this time (RFC 3339, or how long ago)")
	return cmd
}

// exportAudit reads the checkpoints, then the head, then the records up to
// the head, in the order a verifier needs (see audit.VerifyConfig), and
// writes records, the checkpoints among them, and the head.
func exportAudit(cmd *cobra.Command, a *admin, w *recordWriter, since, until int64) error {
	whole := since == 0 && until == 0
	cps, err := listCheckpoints(cmd, a)
	if err != nil {
		return err
	}
	head, err := call(cmd, a, adminv1.NewAuditServiceClient(a.conn).GetAuditHead, &adminv1.GetAuditHeadRequest{})
	if err != nil {
		return err
	}
	var first, last uint64
	_, err = streamRecords(cmd.Context(), a, &adminv1.ListAuditRecordsRequest{Since: since, Until: until}, func(r *typesv1.AuditRecord) error {
		if r.GetSeq() > head.GetSeq() {
			return errStop
		}
		if first == 0 {
			first = r.GetSeq()
		}
		last = r.GetSeq()
		return w.add(r)
	})
	if err != nil {
		return err
	}
	for _, cp := range cps {
		if whole || first != 0 && cp.GetSeq() >= first && cp.GetSeq() <= last {
			if err := w.line(audit.Line{Checkpoint: cp}); err != nil {
				return err
			}
		}
	}
	if whole {
		if err := w.line(audit.Line{Head: &audit.Head{Seq: head.GetSeq(), Hash: head.GetHash()}}); err != nil {
			return err
		}
	}
	return w.close()
}

// checkpointPage is the most checkpoints the server returns per call.
const checkpointPage = 1000

// listCheckpoints reads every checkpoint, page by page. Pages start at
// the last seq of the page before (several keys may sign one seq), so
// checkpoints seen already are skipped.
func listCheckpoints(cmd *cobra.Command, a *admin) ([]*typesv1.AuditCheckpoint, error) {
	client := adminv1.NewAuditServiceClient(a.conn)
	var all []*typesv1.AuditCheckpoint
	seen := map[string]bool{}
	var from uint64
	for {
		resp, err := call(cmd, a, client.ListAuditCheckpoints, &adminv1.ListAuditCheckpointsRequest{FromSeq: from})
		if err != nil {
			return nil, err
		}
		page, added := resp.GetCheckpoints(), 0
		for _, cp := range page {
			k := strconv.FormatUint(cp.GetSeq(), 10) + "/" + cp.GetKeyId()
			if !seen[k] {
				seen[k] = true
				all = append(all, cp)
				added++
			}
		}
		if len(page) < checkpointPage || added == 0 {
			return all, nil
		}
		from = page[len(page)-1].GetSeq()
	}
}
