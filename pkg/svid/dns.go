package svid

import (
	"fmt"
	"strings"
)

// maxDNSNames bounds the SAN list; far more than any service needs, small
// enough that a bad entry cannot bloat every certificate.
const maxDNSNames = 100

// checkDNSNames validates the DNS SANs of a leaf: each a host name of at
// most 253 characters, made of labels of 1-63 letters, digits and inner
// hyphens, optionally starting with a "*." wildcard label; no duplicates.
func checkDNSNames(names []string) error {
	if len(names) > maxDNSNames {
		return fmt.Errorf("dns names: %d given, at most %d allowed", len(names), maxDNSNames)
	}
	seen := make(map[string]bool, len(names))
	for i, name := range names {
		if err := checkDNSName(name); err != nil {
			return fmt.Errorf("dns names[%d] %q: %w", i, name, err)
		}
		lower := strings.ToLower(name)
		if seen[lower] {
			return fmt.Errorf("dns names[%d] %q: duplicate", i, name)
		}
		seen[lower] = true
	}
	return nil
}

func checkDNSName(name string) error {
	if name == "" {
		return fmt.Errorf("empty")
	}
	if len(name) > 253 {
		return fmt.Errorf("%d characters, at most 253 allowed", len(name))
	}
	rest := name
	if strings.HasPrefix(rest, "*.") {
		rest = rest[2:]
		if !strings.Contains(rest, ".") {
			return fmt.Errorf("a wildcard needs at least two labels after it")
		}
	}
	for i, label := range strings.Split(rest, ".") {
		if err := checkLabel(label); err != nil {
			return fmt.Errorf("label %d: %w", i+1, err)
		}
	}
	return nil
}

func checkLabel(label string) error {
	if label == "" {
		return fmt.Errorf("empty label")
	}
	if len(label) > 63 {
		return fmt.Errorf("label of %d characters, at most 63 allowed", len(label))
	}
	if label[0] == '-' || label[len(label)-1] == '-' {
		return fmt.Errorf("label %q starts or ends with a hyphen", label)
	}
	for _, r := range label {
		ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-'
		if !ok {
			return fmt.Errorf("label %q has character %q; only letters, digits and hyphens are allowed", label, r)
		}
	}
	return nil
}
