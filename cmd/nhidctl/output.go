package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// printer writes results as tables for people or JSON for programs.
type printer struct {
	w      io.Writer
	format string
}

func (g *globals) printer(cmd *cobra.Command) *printer {
	return &printer{w: cmd.OutOrStdout(), format: g.output}
}

func (p *printer) isJSON() bool { return p.format == formatJSON }

// jsonOptions print the proto field names (snake_case), the form "entry
// create -f" reads back.
var jsonOptions = protojson.MarshalOptions{UseProtoNames: true}

// message prints m as indented JSON. protojson varies its whitespace on
// purpose; re-indenting makes the output stable for diffs and scripts.
func (p *printer) message(m proto.Message) error {
	b, err := jsonOptions.Marshal(m)
	if err != nil {
		return fmt.Errorf("encode %s as JSON: %w", m.ProtoReflect().Descriptor().Name(), err)
	}
	var out bytes.Buffer
	if err := json.Indent(&out, b, "", "  "); err != nil {
		return fmt.Errorf("indent JSON: %w", err)
	}
	out.WriteByte('\n')
	_, err = p.w.Write(out.Bytes())
	return err
}

// emptyList prints {"<key>": []}: protojson leaves an empty list out, and
// scripts iterating over it would fail on a missing key.
func (p *printer) emptyList(key string) error {
	_, err := fmt.Fprintf(p.w, "{\n  %q: []\n}\n", key)
	return err
}

// table prints rows under a header, aligned.
func (p *printer) table(header []string, rows [][]string) error {
	tw := tabwriter.NewWriter(p.w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	for _, row := range rows {
		cells := make([]string, len(row))
		for i, c := range row {
			cells[i] = cell(c)
		}
		fmt.Fprintln(tw, strings.Join(cells, "\t"))
	}
	return tw.Flush()
}

// field is one "Name: value" line of a record.
type field struct{ name, value string }

// record prints one record as aligned name/value lines.
func (p *printer) record(fields []field) error {
	tw := tabwriter.NewWriter(p.w, 0, 4, 2, ' ', 0)
	for _, f := range fields {
		fmt.Fprintf(tw, "%s:\t%s\n", f.name, cell(f.value))
	}
	return tw.Flush()
}

// line prints a plain message for people.
func (p *printer) line(format string, args ...any) error {
	_, err := fmt.Fprintf(p.w, format+"\n", args...)
	return err
}

// cell makes server-provided text safe for a terminal table: a control
// character could break the columns or send escape sequences.
func cell(s string) string {
	if s == "" {
		return "-"
	}
	return strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return '?'
		}
		return r
	}, s)
}

// unixTime formats a unix time in seconds; 0 becomes zero.
func unixTime(sec int64, zero string) string {
	if sec == 0 {
		return zero
	}
	return time.Unix(sec, 0).UTC().Format(time.RFC3339)
}

// seconds formats a TTL in seconds; 0 becomes "default".
func seconds(s int32) string {
	if s == 0 {
		return "default"
	}
	return (time.Duration(s) * time.Second).String()
}

func joinOrDash(s []string) string {
	return strings.Join(s, ",")
}
