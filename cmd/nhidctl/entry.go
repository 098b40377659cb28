package main

import (
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"google.golang.org/protobuf/proto"

	adminv1 "github.com/nhid/nhid/proto/nhid/admin/v1"
	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

// listPageSize is the page size entry and node listings ask for.
const listPageSize = 500

func newEntryCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "entry",
		Short: "Manage registration entries: which workloads get which SPIFFE ID",
	}
	cmd.AddCommand(newEntryCreateCmd(g), newEntryUpdateCmd(g), newEntryDeleteCmd(g),
		newEntryShowCmd(g), newEntryListCmd(g))
	return cmd
}

// entryFlags are the entry fields settable from the command line.
type entryFlags struct {
	spiffeID, parentID string
	selectors          []string
	purpose, owner     string
	scopes             []string
	x509TTL, jwtTTL    time.Duration
	dnsNames           []string
	federatesWith      []string
	hint               string
	admin              bool
	expiresAt          string
}

// entryFieldFlags are the names of entryFlags, for "was any given".
var entryFieldFlags = []string{"spiffe-id", "parent-id", "selector", "purpose", "owner", "scope",
	"x509-ttl", "jwt-ttl", "dns-name", "federates-with", "hint", "admin", "expires-at"}

func (f *entryFlags) register(fs *pflag.FlagSet) {
	fs.StringVar(&f.spiffeID, "spiffe-id", "", "SPIFFE ID the workloads get")
	fs.StringVar(&f.parentID, "parent-id", "", "SPIFFE ID of the node (agent) or node-alias entry the workloads run under")
	// StringArray, not StringSlice: selector values may hold commas.
	fs.StringArrayVar(&f.selectors, "selector", nil, "workload selector TYPE:VALUE; repeat for several (all must match)")
	fs.StringVar(&f.purpose, "purpose", "", "one line saying what the workload is for")
	fs.StringVar(&f.owner, "owner", "", "accountable human (e-mail address or user id)")
	fs.StringArrayVar(&f.scopes, "scope", nil, "scope a grant may carry at most; repeat for several")
	fs.DurationVar(&f.x509TTL, "x509-ttl", 0, "X.509-SVID lifetime, e.g. 1h (0 = server default)")
	fs.DurationVar(&f.jwtTTL, "jwt-ttl", 0, "JWT-SVID lifetime, e.g. 5m (0 = server default)")
	fs.StringArrayVar(&f.dnsNames, "dns-name", nil, "DNS name for the X.509-SVID; repeat for several")
	fs.StringArrayVar(&f.federatesWith, "federates-with", nil,
		"trust domain (e.g. partner.test) whose bundle the workloads receive, to verify its SVIDs; repeat for several")
	fs.StringVar(&f.hint, "hint", "", "hint passed to workloads to tell identities apart")
	fs.BoolVar(&f.admin, "admin", false, "allow this identity to call the admin API over mTLS")
	fs.StringVar(&f.expiresAt, "expires-at", "", `RFC 3339 time after which the entry is ignored ("never" to clear)`)
}

// given reports how many entry field flags were set.
func given(fs *pflag.FlagSet) int {
	n := 0
	for _, name := range entryFieldFlags {
		if fs.Changed(name) {
			n++
		}
	}
	return n
}

// apply copies the given flags onto e. For list flags, a single empty
// value clears the list.
func (f *entryFlags) apply(fs *pflag.FlagSet, e *typesv1.Entry) error {
	set := func(name string, fn func()) {
		if fs.Changed(name) {
			fn()
		}
	}
	set("spiffe-id", func() { e.SpiffeId = f.spiffeID })
	set("parent-id", func() { e.ParentId = f.parentID })
	set("selector", func() { e.Selectors = listValue(f.selectors) })
	set("purpose", func() { e.Purpose = f.purpose })
	set("owner", func() { e.Owner = f.owner })
	set("scope", func() { e.ScopeCeiling = listValue(f.scopes) })
	set("dns-name", func() { e.DnsNames = listValue(f.dnsNames) })
	set("federates-with", func() { e.FederatesWith = listValue(f.federatesWith) })
	set("hint", func() { e.Hint = f.hint })
	set("admin", func() { e.Admin = f.admin })
	var err error
	set("x509-ttl", func() { e.X509Ttl, err = ttlSeconds("--x509-ttl", f.x509TTL) })
	if err != nil {
		return err
	}
	set("jwt-ttl", func() { e.JwtTtl, err = ttlSeconds("--jwt-ttl", f.jwtTTL) })
	if err != nil {
		return err
	}
	set("expires-at", func() { e.ExpiresAt, err = expiry(f.expiresAt) })
	return err
}

func listValue(vals []string) []string {
	if len(vals) == 1 && vals[0] == "" {
		return nil
	}
	return vals
}

// ttlSeconds converts a duration flag to the whole seconds entries store.
func ttlSeconds(flag string, d time.Duration) (int32, error) {
	switch {
	case d < 0:
		return 0, usagef("%s %v is negative; use 0 for the server default", flag, d)
	case d%time.Second != 0:
		return 0, usagef("%s %v is not a whole number of seconds", flag, d)
	case d/time.Second > math.MaxInt32:
		return 0, usagef("%s %v is too long", flag, d)
	}
	return int32(d / time.Second), nil
}

func expiry(s string) (int64, error) {
	if s == "" || s == "never" {
		return 0, nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return 0, usagef("--expires-at %q is not an RFC 3339 time such as 2030-01-31T18:00:00Z", s)
	}
	return t.Unix(), nil
}

func newEntryCreateCmd(g *globals) *cobra.Command {
	var f entryFlags
	var file string
	cmd := &cobra.Command{
		Use:   "create --spiffe-id ID --parent-id ID --selector TYPE:VALUE... | -f FILE",
		Short: "Create an entry from flags, or entries from a file shaped like 'entry list -o json'",
		Args:  exactArgs(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if file != "" {
				if given(cmd.Flags()) > 0 {
					return usagef("give either -f or entry flags, not both")
				}
				return createFromFile(cmd, g, file)
			}
			var missing []string
			for _, name := range []string{"spiffe-id", "parent-id", "selector"} {
				if !cmd.Flags().Changed(name) {
					missing = append(missing, "--"+name)
				}
			}
			if len(missing) > 0 {
				return usagef("missing %s (or give -f FILE)", strings.Join(missing, ", "))
			}
			e := &typesv1.Entry{}
			if err := f.apply(cmd.Flags(), e); err != nil {
				return err
			}
			return withAdmin(cmd, g, func(a *admin) error {
				resp, err := call(cmd, a, adminv1.NewEntryServiceClient(a.conn).CreateEntry, &adminv1.CreateEntryRequest{Entry: e})
				if err != nil {
					return err
				}
				return printEntry(g.printer(cmd), resp, resp.GetEntry())
			})
		},
	}
	f.register(cmd.Flags())
	cmd.Flags().StringVarP(&file, "file", "f", "", `JSON or YAML file {"entries":[...]} to create in batches ("-" for stdin)`)
	return cmd
}

func newEntryUpdateCmd(g *globals) *cobra.Command {
	var f entryFlags
	cmd := &cobra.Command{
		Use:   "update ID [flags]",
		Short: "Change the given fields of an entry; others keep their values",
		Args:  exactArgs("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if given(cmd.Flags()) == 0 {
				return usagef("nothing to update: give at least one of --%s", strings.Join(entryFieldFlags, ", --"))
			}
			return withAdmin(cmd, g, func(a *admin) error {
				client := adminv1.NewEntryServiceClient(a.conn)
				got, err := call(cmd, a, client.GetEntry, &adminv1.GetEntryRequest{Id: args[0]})
				if err != nil {
					return err
				}
				// The read revision makes the server refuse the update if
				// someone else changed the entry in between.
				e := got.GetEntry()
				if err := f.apply(cmd.Flags(), e); err != nil {
					return err
				}
				resp, err := call(cmd, a, client.UpdateEntry, &adminv1.UpdateEntryRequest{Entry: e})
				if err != nil {
					return err
				}
				return printEntry(g.printer(cmd), resp, resp.GetEntry())
			})
		},
	}
	f.register(cmd.Flags())
	return cmd
}

func newEntryDeleteCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "delete ID",
		Short: "Delete an entry",
		Args:  exactArgs("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withAdmin(cmd, g, func(a *admin) error {
				resp, err := call(cmd, a, adminv1.NewEntryServiceClient(a.conn).DeleteEntry, &adminv1.DeleteEntryRequest{Id: args[0]})
				if err != nil {
					return err
				}
				p := g.printer(cmd)
				if p.isJSON() {
					return p.message(resp)
				}
				return p.line("deleted entry %s (%s)", resp.GetEntry().GetId(), resp.GetEntry().GetSpiffeId())
			})
		},
	}
}

func newEntryShowCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "show ID",
		Short: "Show one entry",
		Args:  exactArgs("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withAdmin(cmd, g, func(a *admin) error {
				resp, err := call(cmd, a, adminv1.NewEntryServiceClient(a.conn).GetEntry, &adminv1.GetEntryRequest{Id: args[0]})
				if err != nil {
					return err
				}
				return printEntry(g.printer(cmd), resp, resp.GetEntry())
			})
		},
	}
}

// withAdmin runs fn with a connection to the admin socket.
func withAdmin(cmd *cobra.Command, g *globals, fn func(a *admin) error) error {
	a, err := g.dial(cmd)
	if err != nil {
		return err
	}
	defer a.Close()
	return fn(a)
}

// printEntry prints resp as JSON or e as a record.
func printEntry(p *printer, resp proto.Message, e *typesv1.Entry) error {
	if p.isJSON() {
		return p.message(resp)
	}
	return p.record([]field{
		{"ID", e.GetId()},
		{"SPIFFE ID", e.GetSpiffeId()},
		{"Parent ID", e.GetParentId()},
		{"Selectors", joinOrDash(e.GetSelectors())},
		{"Purpose", e.GetPurpose()},
		{"Owner", e.GetOwner()},
		{"Scope ceiling", joinOrDash(e.GetScopeCeiling())},
		{"X.509-SVID TTL", seconds(e.GetX509Ttl())},
		{"JWT-SVID TTL", seconds(e.GetJwtTtl())},
		{"DNS names", joinOrDash(e.GetDnsNames())},
		{"Federates with", joinOrDash(e.GetFederatesWith())},
		{"Hint", e.GetHint()},
		{"Admin", strconv.FormatBool(e.GetAdmin())},
		{"Expires", unixTime(e.GetExpiresAt(), "never")},
		{"Revision", strconv.FormatInt(e.GetRevision(), 10)},
		{"Created", unixTime(e.GetCreatedAt(), "-")},
	})
}
