package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/nhid/nhid/pkg/audit"
	adminv1 "github.com/nhid/nhid/proto/nhid/admin/v1"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

// maxLineBytes bounds one line of an export file.
const maxLineBytes = 16 << 20

func newAuditVerifyCmd(g *globals) *cobra.Command {
	var keyFiles []string
	var file string
	cmd := &cobra.Command{
		Use:   "verify [--trusted-key FILE]... [--file EXPORT]",
		Short: "Recompute the audit chain, check its checkpoints, and name the first broken record",
		Long: `Reads every checkpoint, the head and every record from the server (or an
export with --file), recomputes each record's hash and link, matches every
checkpoint against the chain, and checks its signature and key. It exits 1
naming the first record (or checkpoint) that does not verify.

Checkpoint keys are trusted when given with --trusted-key (PEM public keys,
see "nhidctl audit head -o pem"), or, without --trusted-key, when the
server reports them as its own; and keys announced in the chain (audit.key
records) are trusted once a checkpoint by a trusted key covers their
announcement. docs/audit.md explains what this does and does not prove.`,
		Args: exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			pinned, err := readTrustedKeys(keyFiles)
			if err != nil {
				return err
			}
			var sum audit.Summary
			if file != "" {
				sum, err = verifyFile(cmd, g, file, pinned)
			} else {
				err = withAdmin(cmd, g, func(a *admin) error {
					sum, err = verifyServer(cmd, a, pinned)
					return err
				})
			}
			var f *audit.Failure
			if err != nil && !errors.As(err, &f) {
				return err
			}
			if perr := printVerify(g.printer(cmd), sum, f); perr != nil {
				return perr
			}
			if f != nil {
				return fmt.Errorf("audit verify: %w", f)
			}
			return nil
		},
	}
	cmd.Flags().StringArrayVar(&keyFiles, "trusted-key", nil, "PEM file of a checkpoint public key to trust (repeatable); then the server's word on its key is not used")
	cmd.Flags().StringVar(&file, "file", "", "verify this export (nhidctl audit export) instead of asking the server")
	return cmd
}

// readTrustedKeys reads the PEM public keys of every file.
func readTrustedKeys(files []string) ([]audit.TrustedKey, error) {
	var out []audit.TrustedKey
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, usagef("--trusted-key: %v", err)
		}
		n := 0
		for rest := data; ; n++ {
			var b *pem.Block
			b, rest = pem.Decode(rest)
			if b == nil {
				break
			}
			if b.Type != "PUBLIC KEY" {
				return nil, usagef("--trusted-key %s: a %q PEM block; want PUBLIC KEY (nhidctl audit head -o pem)", f, b.Type)
			}
			if _, err := audit.ParsePublicKey(b.Bytes); err != nil {
				return nil, usagef("--trusted-key %s: %v", f, err)
			}
			out = append(out, audit.TrustedKey{PublicKey: b.Bytes, Source: audit.TrustPinned})
		}
		if n == 0 {
			return nil, usagef("--trusted-key %s: no PEM PUBLIC KEY block", f)
		}
	}
	return out, nil
}

// verifyServer reads the checkpoints, then the head, then the records up
// to the head from the server: a checkpoint beyond the head then means
// the log was truncated.
func verifyServer(cmd *cobra.Command, a *admin, pinned []audit.TrustedKey) (audit.Summary, error) {
	cps, err := listCheckpoints(cmd, a)
	if err != nil {
		return audit.Summary{}, err
	}
	head, err := call(cmd, a, adminv1.NewAuditServiceClient(a.conn).GetAuditHead, &adminv1.GetAuditHeadRequest{})
	if err != nil {
		return audit.Summary{}, err
	}
	keys := pinned
	if len(keys) == 0 {
		keys = serverKeys(head)
	}
	v := audit.NewVerifier(audit.VerifyConfig{
		TrustedKeys: keys, Checkpoints: cps, Head: &audit.Head{Seq: head.GetSeq(), Hash: head.GetHash()},
		AllowPending: len(pinned) == 0,
	})
	if head.GetSeq() > 0 {
		_, err = streamRecords(cmd.Context(), a, &adminv1.ListAuditRecordsRequest{FromSeq: 1}, func(r *typesv1.AuditRecord) error {
			if v.Add(r) != nil || r.GetSeq() >= head.GetSeq() {
				return errStop
			}
			return nil
		})
		if err != nil {
			return audit.Summary{}, err
		}
	}
	return v.Finish()
}

func serverKeys(head *adminv1.GetAuditHeadResponse) []audit.TrustedKey {
	var keys []audit.TrustedKey
	for _, k := range head.GetTrustedKeys() {
		keys = append(keys, audit.TrustedKey{PublicKey: k, Source: audit.TrustServer})
	}
	return keys
}

// verifyFile verifies an export in two passes: the checkpoints and the
// head first, then the records. Without --trusted-key the server's keys
// anchor it, if the server can be reached.
func verifyFile(cmd *cobra.Command, g *globals, path string, pinned []audit.TrustedKey) (audit.Summary, error) {
	var cps []*typesv1.AuditCheckpoint
	var head *audit.Head
	err := readExport(path, func(l audit.Line) error {
		switch {
		case l.Checkpoint != nil:
			cps = append(cps, l.Checkpoint)
		case l.Head != nil && head != nil:
			return errors.New("a second head")
		case l.Head != nil:
			head = l.Head
		}
		return nil
	})
	if err != nil {
		return audit.Summary{}, err
	}
	keys := pinned
	if len(keys) == 0 && len(cps) > 0 {
		err := withAdmin(cmd, g, func(a *admin) error {
			h, err := call(cmd, a, adminv1.NewAuditServiceClient(a.conn).GetAuditHead, &adminv1.GetAuditHeadRequest{})
			keys = serverKeys(h)
			return err
		})
		if err != nil {
			return audit.Summary{}, fmt.Errorf("no trusted key: give --trusted-key FILE (nhidctl audit head -o pem), or run where the server can be asked for its key (%w)", err)
		}
	}
	// Without a head the file is an excerpt (--since/--until): it may
	// start after seq 1, and its end cannot be checked.
	v := audit.NewVerifier(audit.VerifyConfig{TrustedKeys: keys, Checkpoints: cps, Head: head, Excerpt: head == nil, AllowPending: len(pinned) == 0})
	err = readExport(path, func(l audit.Line) error {
		if l.Record != nil && v.Add(l.Record) != nil {
			return errStop
		}
		return nil
	})
	if err != nil && !errors.Is(err, errStop) {
		return audit.Summary{}, err
	}
	return v.Finish()
}

// readExport hands every line of an export to fn: JSON lines, or one JSON
// array of them (-o json).
func readExport(path string, fn func(audit.Line) error) error {
	f, err := os.Open(path)
	if err != nil {
		return usagef("--file: %v", err)
	}
	defer f.Close()
	br := bufio.NewReaderSize(f, 64<<10)
	if b, err := peekNonSpace(br); err == nil && b == '[' {
		dec := json.NewDecoder(br)
		if _, err := dec.Token(); err != nil {
			return fmt.Errorf("--file %s: %w", path, err)
		}
		for i := 1; dec.More(); i++ {
			var raw json.RawMessage
			if err := dec.Decode(&raw); err != nil {
				return fmt.Errorf("--file %s: element %d: %w", path, i, err)
			}
			if err := decodeLine(raw, fn); err != nil {
				return fmt.Errorf("--file %s: element %d: %w", path, i, err)
			}
		}
		return nil
	}
	sc := bufio.NewScanner(br)
	sc.Buffer(make([]byte, 0, 64<<10), maxLineBytes)
	for n := 1; sc.Scan(); n++ {
		if len(bytes.TrimSpace(sc.Bytes())) == 0 {
			continue
		}
		if err := decodeLine(sc.Bytes(), fn); err != nil {
			if errors.Is(err, errStop) {
				return err
			}
			return fmt.Errorf("--file %s: line %d: %w", path, n, err)
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("--file %s: %w", path, err)
	}
	return nil
}

func decodeLine(b []byte, fn func(audit.Line) error) error {
	l, err := audit.UnmarshalLine(b)
	if err != nil {
		return err
	}
	return fn(l)
}

// peekNonSpace returns the first byte that is not white space, leaving it
// unread.
func peekNonSpace(br *bufio.Reader) (byte, error) {
	for {
		b, err := br.Peek(1)
		if err != nil {
			return 0, err
		}
		switch b[0] {
		case ' ', '\t', '\r', '\n':
			_, _ = br.Discard(1)
		default:
			return b[0], nil
		}
	}
}

// printVerify prints what was verified, and where it broke.
func printVerify(p *printer, sum audit.Summary, f *audit.Failure) error {
	if p.isJSON() {
		out := map[string]any{"verified": f == nil, "summary": sum}
		if f != nil {
			out["failure"] = map[string]any{"seq": f.Seq, "checkpoint": f.Checkpoint, "key_id": f.KeyID, "message": f.Error()}
		}
		b, err := json.MarshalIndent(out, "", "  ")
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(p.w, "%s\n", b)
		return err
	}
	status := "verified"
	if f != nil {
		status = "NOT VERIFIED: " + f.Error()
	}
	span := "no records"
	if sum.Records > 0 {
		span = fmt.Sprintf("%d records (seq %d to %d)", sum.Records, sum.FirstSeq, sum.LastSeq)
	}
	fields := []field{
		{"Result", status},
		{"Records", span},
		{"Checkpoints", "none by a trusted key"},
	}
	if sum.Checkpoints > 0 {
		fields[2].value = fmt.Sprintf("%d verified, signing up to seq %d", sum.Checkpoints, sum.CoveredSeq)
	}
	if sum.Excerpt || sum.Unchecked > 0 {
		fields = append(fields, field{"Excerpt", fmt.Sprintf("records before seq %d not checked; %d checkpoints outside the excerpt", sum.FirstSeq, sum.Unchecked)})
	}
	if sum.Pending > 0 {
		fields = append(fields, field{"Pending", fmt.Sprintf("%d checkpoints by keys no trusted checkpoint vouches for yet (a server that started since)", sum.Pending)})
	}
	switch {
	case f != nil:
	case sum.Records > 0 && sum.CoveredSeq == 0:
		fields = append(fields, field{"WARNING", "no record is signed by a trusted checkpoint yet: the chain is intact, but nothing anchors it " +
			"(verify again after the server's checkpoint interval, or pin keys with --trusted-key)"})
	case sum.LastSeq > sum.CoveredSeq:
		fields = append(fields, field{"Not yet signed", seqSpan(max(sum.CoveredSeq+1, sum.FirstSeq), sum.LastSeq) +
			" chained but no trusted checkpoint signs them yet"})
	}
	if err := p.record(fields); err != nil {
		return err
	}
	if len(sum.Keys) == 0 {
		return nil
	}
	if _, err := io.WriteString(p.w, "\n"); err != nil {
		return err
	}
	rows := make([][]string, 0, len(sum.Keys))
	for _, k := range sum.Keys {
		at := "-"
		if k.AnnouncedAt > 0 {
			at = strconv.FormatUint(k.AnnouncedAt, 10)
		}
		rows = append(rows, []string{k.KeyID, k.Trust, at, strconv.Itoa(k.Checkpoints), k.Server})
	}
	return p.table([]string{"KEY ID", "TRUST", "ANNOUNCED AT SEQ", "CHECKPOINTS", "SERVER"}, rows)
}

// seqSpan names records a to b.
func seqSpan(a, b uint64) string {
	if a == b {
		return fmt.Sprintf("record %d is", a)
	}
	return fmt.Sprintf("records %d to %d are", a, b)
}
