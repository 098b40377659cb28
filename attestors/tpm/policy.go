package tpm

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// NumPCRs is the number of PCRs of a PC-client TPM; indexes run from 0 to
// NumPCRs-1.
const NumPCRs = 24

// DefaultPCRSelection is the PCRs quoted when none are configured: the
// firmware, option ROM, boot loader and Secure Boot measurements of the
// PC-client profile.
var DefaultPCRSelection = []int{0, 1, 2, 3, 4, 5, 6, 7}

// PCRPolicy is a named golden set: for some PCRs, the SHA-256 values they
// may hold. A quote matches it when every listed PCR holds one of its
// values; PCRs the set does not list may hold anything.
type PCRPolicy struct {
	// Name appears in the tpm:pcr_policy:<name> selector.
	Name string
	// PCRs maps a PCR index to its allowed values (64 hex digits each).
	PCRs map[int][]string
}

var policyNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)

// CheckPolicyName checks a golden set's name: 1 to 63 lowercase letters,
// digits, dots, dashes and underscores, starting with a letter or digit.
func CheckPolicyName(name string) error {
	if !policyNameRE.MatchString(name) {
		return fmt.Errorf("%q: must be 1 to 63 of a-z, 0-9, '.', '_', '-', starting with a letter or digit", name)
	}
	return nil
}

// CheckPCRIndex checks a PCR index is between 0 and NumPCRs-1.
func CheckPCRIndex(i int) error {
	if i < 0 || i >= NumPCRs {
		return fmt.Errorf("PCR %d: must be from 0 to %d", i, NumPCRs-1)
	}
	return nil
}

// ParseDigest reads a SHA-256 value written as 64 hex digits (either case).
func ParseDigest(s string) ([]byte, error) {
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != 32 {
		return nil, fmt.Errorf("%q: must be a SHA-256 value of 64 hex digits", s)
	}
	return b, nil
}

// pcrValues are PCR values by index.
type pcrValues map[int][]byte

// golden is a checked PCRPolicy.
type golden struct {
	name    string
	allowed map[int][][]byte
}

// policy is the checked PCR configuration: what is quoted, and the golden
// sets the values are held to.
type policy struct {
	selection []int // sorted, distinct
	golden    []golden
}

func newPolicy(selection []int, sets []PCRPolicy) (policy, error) {
	if len(selection) == 0 {
		selection = DefaultPCRSelection
	}
	sel := slices.Sorted(slices.Values(selection))
	var errs []error
	for i, idx := range sel {
		if err := CheckPCRIndex(idx); err != nil {
			errs = append(errs, fmt.Errorf("PCRSelection: %w", err))
		}
		if i > 0 && sel[i-1] == idx {
			errs = append(errs, fmt.Errorf("PCRSelection: PCR %d listed twice", idx))
		}
	}
	p := policy{selection: sel}
	names := make(map[string]bool)
	for _, set := range sets {
		g, err := newGolden(set, sel)
		if err == nil && names[set.Name] {
			err = fmt.Errorf("PCRPolicies[%s]: name used twice", set.Name)
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		names[set.Name] = true
		p.golden = append(p.golden, g)
	}
	return p, errors.Join(errs...)
}

func newGolden(set PCRPolicy, selection []int) (golden, error) {
	field := "PCRPolicies[" + set.Name + "]"
	if err := CheckPolicyName(set.Name); err != nil {
		return golden{}, fmt.Errorf("%s: name %w", field, err)
	}
	if len(set.PCRs) == 0 {
		return golden{}, fmt.Errorf("%s: lists no PCRs", field)
	}
	g := golden{name: set.Name, allowed: make(map[int][][]byte, len(set.PCRs))}
	var errs []error
	for _, idx := range slices.Sorted(maps.Keys(set.PCRs)) {
		at := fmt.Sprintf("%s.PCRs[%d]", field, idx)
		if !slices.Contains(selection, idx) {
			errs = append(errs, fmt.Errorf("%s: PCR %d is not in PCRSelection %v, so it is never quoted", at, idx, selection))
			continue
		}
		if len(set.PCRs[idx]) == 0 {
			errs = append(errs, fmt.Errorf("%s: no allowed values", at))
		}
		for j, v := range set.PCRs[idx] {
			d, err := ParseDigest(v)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s[%d]: %w", at, j, err))
				continue
			}
			g.allowed[idx] = append(g.allowed[idx], d)
		}
	}
	return g, errors.Join(errs...)
}

// matches reports whether values satisfy the golden set.
func (g golden) matches(values pcrValues) bool {
	for idx, allowed := range g.allowed {
		v, ok := values[idx]
		if !ok || !slices.ContainsFunc(allowed, func(a []byte) bool { return bytes.Equal(a, v) }) {
			return false
		}
	}
	return true
}

// evaluate holds quoted values to the policy and returns the names of the
// golden sets they match. With golden sets configured, at least one must
// match. Without any, pinned (the values the node attested with, nil at
// attestation) must be matched exactly: a node is held to the measured
// state it was admitted in.
func (p policy) evaluate(values, pinned pcrValues) ([]string, error) {
	if len(p.golden) == 0 {
		if pinned == nil {
			return nil, nil
		}
		for _, idx := range p.selection {
			if !bytes.Equal(values[idx], pinned[idx]) {
				return nil, fmt.Errorf("PCR %d changed since the node attested (no pcr_policies are configured, so the node is held to the values it attested with)", idx)
			}
		}
		return nil, nil
	}
	var matched []string
	for _, g := range p.golden {
		if g.matches(values) {
			matched = append(matched, g.name)
		}
	}
	if len(matched) == 0 {
		return nil, fmt.Errorf("PCR values %s match no pcr_policy (%s)", values, strings.Join(p.names(), ", "))
	}
	sort.Strings(matched)
	return matched, nil
}

func (p policy) names() []string {
	out := make([]string, len(p.golden))
	for i, g := range p.golden {
		out[i] = g.name
	}
	return out
}

// String lists the values in index order, for refusal reasons.
func (v pcrValues) String() string {
	var b strings.Builder
	for i, idx := range slices.Sorted(maps.Keys(v)) {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(strconv.Itoa(idx) + "=" + hex.EncodeToString(v[idx]))
	}
	return b.String()
}
