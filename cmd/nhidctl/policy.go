package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"
	_ "time/tzdata" // --timezone works on hosts without a zone database

	"github.com/spf13/cobra"

	"github.com/nhid/nhid/pkg/policy"
)

// maxPolicyInput bounds what "policy test --input @FILE" reads.
const maxPolicyInput = 1 << 20

func newPolicyCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "policy",
		Short: "Check grant policies and try them on a request, locally (no server needed)",
	}
	cmd.AddCommand(newPolicyCheckCmd(g), newPolicyTestCmd(g))
	return cmd
}

func newPolicyCheckCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "check FILE|DIR",
		Short: "Compile a policy file or directory and report every problem as file:line:column",
		Long: `check compiles a policy as nhid-server would: a file, or the *.yaml files of a
directory in lexical order. It prints "ok: N rules" (-o json: {"rules": [...]}),
or every problem on stderr, one per line as FILE:LINE:COLUMN: PATH: PROBLEM,
and exits 1.`,
		Args: exactArgs("FILE|DIR"),
		RunE: func(cmd *cobra.Command, args []string) error {
			set, err := loadPolicy(cmd, args[0])
			if err != nil {
				return err
			}
			p := g.printer(cmd)
			if p.isJSON() {
				return writeJSON(p.w, struct {
					Rules []string `json:"rules"`
				}{set.Rules()})
			}
			return p.line("ok: %d rules", len(set.Rules()))
		},
	}
}

// loadPolicy compiles the policy at path; compile problems are printed on
// stderr one per line, so editors and CI can jump to them.
func loadPolicy(cmd *cobra.Command, path string) (*policy.Set, error) {
	set, err := policy.Load(path)
	var ce *policy.CompileError
	if errors.As(err, &ce) {
		for _, p := range ce.Problems {
			fmt.Fprintln(cmd.ErrOrStderr(), p.String())
		}
		return nil, fmt.Errorf("policy %s has %d problem(s)", path, len(ce.Problems))
	}
	return set, err
}

func newPolicyTestCmd(g *globals) *cobra.Command {
	var input, zone string
	cmd := &cobra.Command{
		Use:   "test FILE|DIR --input JSON|@FILE [--timezone TZ]",
		Short: "Decide one grant request with a policy, as the server would",
		Long: `test compiles the policy and decides the request described by --input, a JSON
document (or @FILE, @- for stdin) of the form

  {"subject": {"spiffe_id": "...", "entry_id": "...", "purpose": "...", "owner": "...",
               "selectors": ["unix:uid:1000"], "node_selectors": [], "reputation": 500},
   "request": {"scopes": ["deploy:web"], "resource": "...", "action": "...", "reason": "...",
               "ttl": "15m", "authorization_details": [{"type": "..."}]},
   "time": "2026-12-04T10:00:00Z",
   "usage": {"last_minute": 0, "last_hour": 3, "last_day": 12, "active": 1}}

Fields left out are empty or zero; "time" defaults to now. --timezone is the
zone of time.hour, time.weekday and friends (default UTC), as nhid-server's
server.policy.timezone setting. The scopes printed are policy's
narrowing only: the server also intersects them with the entry's
scope_ceiling. A rule that fails
to evaluate denies, and test exits 1.`,
		Args: exactArgs("FILE|DIR"),
		RunE: func(cmd *cobra.Command, args []string) error {
			loc, err := time.LoadLocation(zone)
			if err != nil {
				return usagef("--timezone %q: %v", zone, err)
			}
			in, err := readPolicyInput(cmd, input)
			if err != nil {
				return err
			}
			set, err := loadPolicy(cmd, args[0])
			if err != nil {
				return err
			}
			d, evalErr := set.Decide(in, loc)
			if err := printDecision(g.printer(cmd), d); err != nil {
				return err
			}
			return evalErr
		},
	}
	cmd.Flags().StringVar(&input, "input", "", "the request as JSON, or @FILE (@- for stdin)")
	cmd.Flags().StringVar(&zone, "timezone", "UTC", "IANA time zone of time.hour, time.weekday, time.date")
	_ = cmd.MarkFlagRequired("input")
	return cmd
}

// decisionJSON is the -o json form of a decision. max_ttl is left out when
// policy sets no cap, scopes when they stand as requested.
type decisionJSON struct {
	Effect   string   `json:"effect"`
	Rule     string   `json:"rule"`
	Reason   string   `json:"reason"`
	MaxTTL   string   `json:"max_ttl,omitempty"`
	Scopes   []string `json:"scopes,omitempty"`
	Critical bool     `json:"critical,omitempty"`
	// RateLimited: a `rate_limit: true` deny rule decided, which costs the
	// subject reputation.
	RateLimited bool `json:"rate_limited,omitempty"`
}

func printDecision(p *printer, d policy.Decision) error {
	if p.isJSON() {
		out := decisionJSON{Effect: d.Effect.String(), Rule: d.Rule, Reason: d.Reason, Scopes: d.Scopes, Critical: d.Critical, RateLimited: d.RateLimited}
		if d.MaxTTL > 0 {
			out.MaxTTL = d.MaxTTL.String()
		}
		return writeJSON(p.w, out)
	}
	maxTTL, scopes := "no cap", "as requested"
	if d.MaxTTL > 0 {
		maxTTL = d.MaxTTL.String()
	}
	if d.Scopes != nil {
		scopes = strings.Join(d.Scopes, " ")
	}
	fields := []field{{"Effect", d.Effect.String()}, {"Rule", d.Rule}, {"Reason", d.Reason}}
	switch d.Effect {
	case policy.Allow:
		fields = append(fields, field{"Max TTL", maxTTL}, field{"Scopes", scopes})
	case policy.RequireApproval:
		fields = append(fields, field{"Critical", fmt.Sprint(d.Critical)})
	case policy.Deny:
		fields = append(fields, field{"Rate limited", fmt.Sprint(d.RateLimited)})
	}
	return p.record(fields)
}

func writeJSON(w io.Writer, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("encode JSON: %w", err)
	}
	_, err = w.Write(append(b, '\n'))
	return err
}

// policyInput is the JSON form of policy.Input that --input takes.
type policyInput struct {
	Subject struct {
		SPIFFEID      string   `json:"spiffe_id"`
		EntryID       string   `json:"entry_id"`
		Purpose       string   `json:"purpose"`
		Owner         string   `json:"owner"`
		Selectors     []string `json:"selectors"`
		NodeSelectors []string `json:"node_selectors"`
		Reputation    int      `json:"reputation"`
	} `json:"subject"`
	Request struct {
		Scopes               []string        `json:"scopes"`
		Resource             string          `json:"resource"`
		Action               string          `json:"action"`
		Reason               string          `json:"reason"`
		TTL                  string          `json:"ttl"`
		AuthorizationDetails json.RawMessage `json:"authorization_details"`
	} `json:"request"`
	Time  string `json:"time"`
	Usage struct {
		LastMinute int `json:"last_minute"`
		LastHour   int `json:"last_hour"`
		LastDay    int `json:"last_day"`
		Active     int `json:"active"`
	} `json:"usage"`
}

// readPolicyInput parses --input strictly: unknown fields and values of
// the wrong type are errors naming the field.
func readPolicyInput(cmd *cobra.Command, arg string) (policy.Input, error) {
	data, err := inputBytes(cmd, arg)
	if err != nil {
		return policy.Input{}, err
	}
	var raw policyInput
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&raw); err != nil {
		return policy.Input{}, jsonInputError(err)
	}
	if dec.More() {
		return policy.Input{}, usagef("--input: more than one JSON value")
	}
	return raw.toInput(time.Now())
}

func inputBytes(cmd *cobra.Command, arg string) ([]byte, error) {
	name, ok := strings.CutPrefix(arg, "@")
	if !ok {
		return []byte(arg), nil
	}
	var r io.Reader = cmd.InOrStdin()
	if name != "-" {
		f, err := os.Open(name)
		if err != nil {
			return nil, fmt.Errorf("--input: %w", err)
		}
		defer f.Close()
		r = f
	}
	data, err := io.ReadAll(io.LimitReader(r, maxPolicyInput+1))
	if err != nil {
		return nil, fmt.Errorf("--input: read %s: %w", name, err)
	}
	if len(data) > maxPolicyInput {
		return nil, usagef("--input: %s is larger than %d bytes", name, maxPolicyInput)
	}
	return data, nil
}

func jsonInputError(err error) error {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return usagef("--input: %s: must be %s, got a JSON %s", te.Field, jsonKind(te.Type.Kind().String()), te.Value)
	}
	return usagef("--input: %v", strings.TrimPrefix(err.Error(), "json: "))
}

func jsonKind(goKind string) string {
	switch goKind {
	case "int":
		return "an integer"
	case "slice":
		return "a list"
	case "struct":
		return "an object"
	}
	return "a " + goKind
}

// toInput converts and checks the fields that need it; now is the default
// decision time.
func (raw *policyInput) toInput(now time.Time) (policy.Input, error) {
	s, r, u := raw.Subject, raw.Request, raw.Usage
	in := policy.Input{
		Subject: policy.Subject{SPIFFEID: s.SPIFFEID, EntryID: s.EntryID, Purpose: s.Purpose, Owner: s.Owner,
			Selectors: s.Selectors, NodeSelectors: s.NodeSelectors, Reputation: s.Reputation},
		Request: policy.Request{Scopes: r.Scopes, Resource: r.Resource, Action: r.Action, Reason: r.Reason},
		Usage:   policy.Usage{LastMinute: u.LastMinute, LastHour: u.LastHour, LastDay: u.LastDay, Active: u.Active},
		Now:     now,
	}
	if r.TTL != "" {
		ttl, err := time.ParseDuration(r.TTL)
		if err != nil || ttl < 0 {
			return policy.Input{}, usagef("--input: request.ttl: %q is not a duration (use a number with a unit: 90s, 15m, 1h)", r.TTL)
		}
		in.Request.TTL = ttl
	}
	if raw.Time != "" {
		t, err := time.Parse(time.RFC3339, raw.Time)
		if err != nil {
			return policy.Input{}, usagef("--input: time: %q is not an RFC 3339 time such as 2026-12-04T10:00:00Z", raw.Time)
		}
		in.Now = t
	}
	if len(r.AuthorizationDetails) > 0 && string(r.AuthorizationDetails) != "null" {
		// Decoded as the server decodes the grant request's field.
		if err := json.Unmarshal(r.AuthorizationDetails, &in.Request.AuthorizationDetails); err != nil {
			return policy.Input{}, usagef("--input: request.authorization_details: must be a JSON array of objects")
		}
	}
	return in, nil
}
