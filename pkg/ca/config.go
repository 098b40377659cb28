package ca

import (
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"

	"github.com/nhid/nhid/pkg/clock"
	"github.com/nhid/nhid/pkg/svid"
)

// setDefaults fills zero values and reports every invalid field at once,
// each error naming its field.
func (cfg *Config) setDefaults() error {
	var errs []error
	fail := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("ca config: %s: %s", field, fmt.Sprintf(format, args...)))
	}
	if cfg.TrustDomain.IsZero() {
		fail("TrustDomain", "required")
	}
	if cfg.Dir == "" {
		fail("Dir", "required")
	} else if abs, err := filepath.Abs(cfg.Dir); err != nil {
		fail("Dir", "%v", err)
	} else {
		cfg.Dir = abs
	}
	var err error
	if cfg.KeyType, err = keyTypeOrDefault(cfg.KeyType); err != nil {
		fail("KeyType", "%v", err)
	}
	if cfg.JWTKeyType, err = keyTypeOrDefault(cfg.JWTKeyType); err != nil {
		fail("JWTKeyType", "%v", err)
	}
	switch {
	case cfg.TTL == 0:
		cfg.TTL = DefaultTTL
	case cfg.TTL < MinTTL:
		fail("TTL", "%s is shorter than the minimum %s", cfg.TTL, MinTTL)
	}
	if len(cfg.Subject.ToRDNSequence()) == 0 {
		cfg.Subject = defaultSubject()
	}
	switch {
	case cfg.UpstreamCertFile != "" && cfg.UpstreamKeyFile == "":
		fail("UpstreamKeyFile", "required when UpstreamCertFile is set")
	case cfg.UpstreamCertFile == "" && cfg.UpstreamKeyFile != "":
		fail("UpstreamCertFile", "required when UpstreamKeyFile is set")
	}
	if cfg.Bundles == nil {
		fail("Bundles", "required")
	}
	cfg.Clock = clock.OrReal(cfg.Clock)
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	return errors.Join(errs...)
}

func keyTypeOrDefault(kt svid.KeyType) (svid.KeyType, error) {
	if kt == "" {
		return svid.DefaultKeyType, nil
	}
	return svid.ParseKeyType(string(kt))
}
