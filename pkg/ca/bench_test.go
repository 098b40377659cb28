package ca

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"math/big"
	"testing"
	"time"

	"github.com/nhid/nhid/pkg/svid"
)

// BenchmarkSignX509SVID compares signing through the CA ("ca") with a bare
// x509.CreateCertificate loop using the same P-256 CA key and an equivalent
// template without the purpose attribute ("raw"). Target: ca throughput
// >= 0.8 x raw.
//
//	go test -run '^$' -bench 'SignX509SVID|SignJWTSVID' -benchtime 2s ./pkg/ca/
func BenchmarkSignX509SVID(b *testing.B) {
	e := newEnv(b, time.Now())
	c := e.start(b)
	pub := mustKey(b, svid.KeyTypeECP256).Public()
	ctx := context.Background()
	// Every SVID the server mints carries its entry's purpose.
	p := X509Params{ID: testID, PublicKey: pub, TTL: time.Hour, Purpose: &svid.Purpose{
		EntryID: "0198f0b2-7c1e-7d3a-9b1c-2f4e5a6b7c8d", Purpose: "reconcile invoices", Owner: "ana@example.org",
	}}

	b.Run("ca", func(b *testing.B) {
		for b.Loop() {
			if _, err := c.SignX509SVID(ctx, p); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("raw", func(b *testing.B) {
		signer := c.view.Load().x509
		now := e.clock.Now()
		tmpl, err := svid.LeafTemplate(testID, pub, mustSerialB(b), now.Add(-backdate), now.Add(time.Hour), nil)
		if err != nil {
			b.Fatal(err)
		}
		for b.Loop() {
			if _, err := x509.CreateCertificate(rand.Reader, tmpl, signer.cert, pub, signer.key); err != nil {
				b.Fatal(err)
			}
		}
	})
	// interleaved alternates the two within one loop, so that load from
	// other processes hits both alike; it reports each one's ns/op and the
	// throughput ratio ca/raw (= raw ns / ca ns).
	b.Run("interleaved", func(b *testing.B) {
		signer := c.view.Load().x509
		now := e.clock.Now()
		tmpl, err := svid.LeafTemplate(testID, pub, mustSerialB(b), now.Add(-backdate), now.Add(time.Hour), nil)
		if err != nil {
			b.Fatal(err)
		}
		var caTime, rawTime time.Duration
		for b.Loop() {
			t0 := time.Now()
			if _, err := c.SignX509SVID(ctx, p); err != nil {
				b.Fatal(err)
			}
			t1 := time.Now()
			if _, err := x509.CreateCertificate(rand.Reader, tmpl, signer.cert, pub, signer.key); err != nil {
				b.Fatal(err)
			}
			caTime, rawTime = caTime+t1.Sub(t0), rawTime+time.Since(t1)
		}
		b.ReportMetric(float64(caTime.Nanoseconds())/float64(b.N), "ca-ns/op")
		b.ReportMetric(float64(rawTime.Nanoseconds())/float64(b.N), "raw-ns/op")
		b.ReportMetric(float64(rawTime)/float64(caTime), "ca/raw-throughput")
	})
	b.Run("ca-parallel", func(b *testing.B) {
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := c.SignX509SVID(ctx, p); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}

func BenchmarkSignJWTSVID(b *testing.B) {
	e := newEnv(b, time.Now())
	c := e.start(b)
	p := JWTParams{ID: testID, Audience: []string{"db"}, TTL: 5 * time.Minute,
		ExtraClaims: map[string]any{"purpose": "reconcile invoices", "owner": "ana@example.org"}}
	ctx := context.Background()
	for b.Loop() {
		if _, _, _, err := c.SignJWTSVID(ctx, p); err != nil {
			b.Fatal(err)
		}
	}
}

func mustSerialB(b *testing.B) *big.Int {
	b.Helper()
	s, err := svid.NewSerial()
	if err != nil {
		b.Fatal(err)
	}
	return s
}
