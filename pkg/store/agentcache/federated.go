package agentcache

import (
	"errors"
	"fmt"

	bbolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
	"google.golang.org/protobuf/proto"

	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

// validateFederated checks the federated bundles of ch: each names its
// trust domain, once. The cache does not parse the authorities; the sync
// client checked them before persisting.
func validateFederated(ch Change) error {
	if !ch.FederatedBundlesSet {
		return nil
	}
	seen := make(map[string]int, len(ch.FederatedBundles))
	for i, b := range ch.FederatedBundles {
		td := b.GetTrustDomain()
		switch {
		case b == nil:
			return fmt.Errorf("federated_bundles[%d]: must not be nil", i)
		case td == "":
			return fmt.Errorf("federated_bundles[%d].trust_domain: must not be empty", i)
		}
		if j, dup := seen[td]; dup {
			return fmt.Errorf("federated_bundles[%d].trust_domain: %q repeats federated_bundles[%d]", i, td, j)
		}
		seen[td] = i
	}
	return nil
}

// writeFederated replaces the stored federated bundles with bundles.
func writeFederated(tx *bbolt.Tx, bundles []*typesv1.Bundle) error {
	if err := tx.DeleteBucket(bucketFederated); err != nil && !errors.Is(err, berrors.ErrBucketNotFound) {
		return fmt.Errorf("drop federated bundles: %w", err)
	}
	b, err := tx.CreateBucket(bucketFederated)
	if err != nil {
		return fmt.Errorf("create federated bundles: %w", err)
	}
	for _, fb := range bundles {
		v, err := proto.MarshalOptions{Deterministic: true}.Marshal(fb)
		if err != nil {
			return fmt.Errorf("encode federated bundle %q: %w", fb.GetTrustDomain(), err)
		}
		if err := b.Put([]byte(fb.GetTrustDomain()), v); err != nil {
			return fmt.Errorf("store federated bundle %q: %w", fb.GetTrustDomain(), err)
		}
	}
	return nil
}

// readFederated reads the federated bundles in key (trust domain) order.
func readFederated(b *bbolt.Bucket) ([]*typesv1.Bundle, error) {
	var out []*typesv1.Bundle
	err := b.ForEach(func(k, v []byte) error {
		fb := &typesv1.Bundle{}
		if err := proto.Unmarshal(v, fb); err != nil {
			return corrupt("federated", k, err)
		}
		if fb.GetTrustDomain() != string(k) {
			return corrupt("federated", k, fmt.Errorf("record holds the bundle of %q", fb.GetTrustDomain()))
		}
		out = append(out, fb)
		return nil
	})
	return out, err
}
