package workloadapi

import (
	"crypto"
	"crypto/x509"
	"reflect"
	"runtime"
	"sync"
	"weak"
)

// keyCache remembers the PKCS#8 encoding of each SVID's private key for as
// long as the SVID's leaf certificate is alive. Encoding is the costliest
// step of building an X.509-SVID message (encoding/asn1 runs on reflection),
// and every stream for the same selectors, every reconnecting workload and
// every rotation fan-out would otherwise repeat it for the same key.
//
// Entries are keyed by a weak pointer to the leaf, so the cache never keeps
// a rotated-out certificate alive; a cleanup drops the entry once the
// certificate is collected.
type keyCache struct {
	mu      sync.Mutex
	entries map[weak.Pointer[x509.Certificate]]keyCacheEntry
}

type keyCacheEntry struct {
	signer crypto.Signer // the key the encoding was made from
	pkcs8  []byte        // shared: callers must not modify it
}

func newKeyCache() *keyCache {
	return &keyCache{entries: make(map[weak.Pointer[x509.Certificate]]keyCacheEntry)}
}

// pkcs8 returns the PKCS#8 DER of key, the private key of leaf.
func (c *keyCache) pkcs8(leaf *x509.Certificate, key crypto.Signer) ([]byte, error) {
	// Only pointer keys (*ecdsa.PrivateKey, *rsa.PrivateKey) are cached:
	// comparing an ed25519.PrivateKey, a slice, as an interface panics.
	cacheable := reflect.TypeOf(key).Kind() == reflect.Pointer
	wp := weak.Make(leaf)
	if cacheable {
		c.mu.Lock()
		e, ok := c.entries[wp]
		c.mu.Unlock()
		if ok && e.signer == key {
			return e.pkcs8, nil
		}
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil || !cacheable {
		return der, err
	}
	c.mu.Lock()
	_, existed := c.entries[wp]
	c.entries[wp] = keyCacheEntry{signer: key, pkcs8: der}
	c.mu.Unlock()
	if !existed {
		runtime.AddCleanup(leaf, c.forget, wp)
	}
	return der, nil
}

func (c *keyCache) forget(wp weak.Pointer[x509.Certificate]) {
	c.mu.Lock()
	delete(c.entries, wp)
	c.mu.Unlock()
}

func (c *keyCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.entries)
}
