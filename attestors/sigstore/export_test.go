package sigstore

// PurgeCache drops every cached verification result, for benchmarks of
// the cold path.
func PurgeCache(v *Verifier) { v.cache.Purge() }
