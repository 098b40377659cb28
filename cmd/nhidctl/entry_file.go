package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"
	"go.yaml.in/yaml/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	adminv1 "github.com/nhid/nhid/proto/nhid/admin/v1"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

// Batch bounds for "entry create -f": the server takes at most 1000
// entries per call and, by default, messages of at most 4 MiB.
const (
	batchMaxEntries = 1000
	batchMaxBytes   = 3 << 20
)

// maxFileSize bounds what "entry create -f" reads into memory.
const maxFileSize = 256 << 20

// createFromFile creates the entries of a file in batches, reports each
// entry that failed on stderr, and fails if any did.
func createFromFile(cmd *cobra.Command, g *globals, path string) error {
	entries, err := readEntriesFile(path, cmd.InOrStdin())
	if err != nil {
		return err
	}
	if len(entries) == 0 {
		return fmt.Errorf("%s holds no entries: expected {\"entries\": [...]} as printed by 'nhidctl entry list -o json'", path)
	}
	return withAdmin(cmd, g, func(a *admin) error {
		created, failed, err := batchCreate(cmd, a, entries)
		if err != nil {
			return fmt.Errorf("%w (%d of %d entries were created before this)", err, len(created), len(entries))
		}
		p := g.printer(cmd)
		switch {
		case p.isJSON() && len(created) == 0:
			err = p.emptyList("entries")
		case p.isJSON():
			err = p.message(&adminv1.ListEntriesResponse{Entries: created})
		default:
			err = p.line("created %d of %d entries", len(created), len(entries))
		}
		if err != nil {
			return err
		}
		if failed > 0 {
			return fmt.Errorf("%d of %d entries were not created; see the messages above", failed, len(entries))
		}
		return nil
	})
}

// batchCreate sends entries in chunks and reports failures per entry,
// numbered by their position in the file.
func batchCreate(cmd *cobra.Command, a *admin, entries []*typesv1.Entry) ([]*typesv1.Entry, int, error) {
	client := adminv1.NewEntryServiceClient(a.conn)
	var created []*typesv1.Entry
	failed, offset := 0, 0
	for _, chunk := range chunkEntries(entries) {
		resp, err := call(cmd, a, client.BatchCreateEntries, &adminv1.BatchCreateEntriesRequest{Entries: chunk})
		if err != nil {
			return created, failed, err
		}
		for i, r := range resp.GetResults() {
			if code := codes.Code(r.GetStatus().GetCode()); code != codes.OK {
				failed++
				fmt.Fprintf(cmd.ErrOrStderr(), "entries[%d] %s: %s\n", offset+i, chunk[i].GetSpiffeId(),
					strings.ReplaceAll(r.GetStatus().GetMessage(), "\n", "; "))
				continue
			}
			created = append(created, r.GetEntry())
		}
		offset += len(chunk)
	}
	return created, failed, nil
}

// chunkEntries splits entries into batches the server accepts, by count
// and by encoded size.
func chunkEntries(entries []*typesv1.Entry) [][]*typesv1.Entry {
	var chunks [][]*typesv1.Entry
	start, size := 0, 0
	for i, e := range entries {
		n := proto.Size(e) + 8 // field tag and length prefix
		if i > start && (i-start == batchMaxEntries || size+n > batchMaxBytes) {
			chunks = append(chunks, entries[start:i])
			start, size = i, 0
		}
		size += n
	}
	if start < len(entries) {
		chunks = append(chunks, entries[start:])
	}
	return chunks
}

// readEntriesFile reads {"entries":[...]} as JSON or YAML from path, or
// from stdin for "-".
func readEntriesFile(path string, stdin io.Reader) ([]*typesv1.Entry, error) {
	var r io.Reader = stdin
	if path != "-" {
		f, err := os.Open(path)
		if err != nil {
			return nil, fmt.Errorf("read entries: %w", err)
		}
		defer f.Close()
		r = f
	}
	data, err := io.ReadAll(io.LimitReader(r, maxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("read entries from %s: %w", path, err)
	}
	if len(data) > maxFileSize {
		return nil, fmt.Errorf("%s is larger than %d MiB; split it", path, maxFileSize>>20)
	}
	entries, err := parseEntries(data, path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return entries, nil
}

// parseEntries decodes the listing format strictly: unknown fields are
// errors, so a typo is not silently dropped.
func parseEntries(data []byte, name string) ([]*typesv1.Entry, error) {
	jsonData := data
	if !looksLikeJSON(data, name) {
		var doc any
		if err := yaml.Unmarshal(data, &doc); err != nil {
			return nil, fmt.Errorf("not valid YAML: %w", err)
		}
		if doc == nil {
			return nil, nil
		}
		var err error
		if jsonData, err = json.Marshal(doc); err != nil {
			return nil, fmt.Errorf("YAML does not map to JSON (keys must be strings): %w", err)
		}
	}
	var list adminv1.ListEntriesResponse
	if err := protojson.Unmarshal(jsonData, &list); err != nil {
		return nil, fmt.Errorf("not in the shape of 'entry list -o json': %w", err)
	}
	return list.GetEntries(), nil
}

func looksLikeJSON(data []byte, name string) bool {
	switch strings.ToLower(filepath.Ext(name)) {
	case ".json":
		return true
	case ".yaml", ".yml":
		return false
	}
	return bytes.HasPrefix(bytes.TrimSpace(data), []byte("{"))
}
