package ca

import (
	"context"
	"crypto/x509"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/google/go-cmp/cmp"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"go.uber.org/goleak"

	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

// Schedule of a CA created at t0 with the default 24h TTL: it is valid from
// t0-10s (backdated) to t0+24h, so its successor is prepared at t0+12h-5s
// and activated at t0+20h-2s; the JWT key (not backdated) at t0+12h and
// t0+20h.
const (
	beforeHalf = 12*time.Hour - time.Minute
	atHalf     = 12 * time.Hour
	beforeSwap = 20*time.Hour - time.Minute
	afterSwap  = 20*time.Hour + time.Minute
	afterEnd   = 24*time.Hour + time.Minute
)

func keyFiles(t *testing.T, dir, prefix string) int {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, prefix+"-*.key"))
	if err != nil {
		t.Fatal(err)
	}
	return len(m)
}

func otherThan(certs []*x509.Certificate, c *x509.Certificate) *x509.Certificate {
	for _, x := range certs {
		if !x.Equal(c) {
			return x
		}
	}
	return nil
}

func TestRotate_X509CAWalksThroughPrepareActivateRemove(t *testing.T) {
	e := newEnv(t, testStart)
	c := e.start(t)
	at := func(d time.Duration) {
		t.Helper()
		e.clock.Set(testStart.Add(d))
		e.rotate(t, c)
	}
	oldCA := c.X509Authorities()[0]

	at(beforeHalf)
	if got := len(e.bundle(t).GetX509Authorities()); got != 1 {
		t.Fatalf("before half-life: bundle has %d X.509 authorities, want 1", got)
	}

	at(atHalf)
	published := c.X509Authorities()
	if diff := cmp.Diff(ders(published), bundleX509DERs(e.bundle(t))); diff != "" || len(published) != 2 {
		t.Fatalf("at half-life: want the old and the next CA published (-CA +bundle):\n%s", diff)
	}
	newCA := otherThan(published, oldCA)
	if leaf := signX509(t, c, time.Hour)[0]; string(leaf.AuthorityKeyId) != string(oldCA.SubjectKeyId) {
		t.Fatal("at half-life: the next CA signs already; it must wait until 5/6")
	}

	at(beforeSwap)
	early := signX509(t, c, 2*time.Hour)
	if string(early[0].AuthorityKeyId) != string(oldCA.SubjectKeyId) {
		t.Fatal("before 5/6: want the old CA to sign")
	}

	at(afterSwap)
	late := signX509(t, c, time.Hour)
	if string(late[0].AuthorityKeyId) != string(newCA.SubjectKeyId) {
		t.Fatal("after 5/6: want the new CA to sign")
	}
	b := e.x509Bundle(t)
	if err := verifyX509(late, b, e.clock.Now()); err != nil {
		t.Errorf("after 5/6: new SVID does not verify against the bundle: %v", err)
	}
	if err := verifyX509(early, b, e.clock.Now()); err != nil {
		t.Errorf("after 5/6: SVID of the old CA no longer verifies during the overlap: %v", err)
	}
	if got := keyFiles(t, e.dir, "x509"); got != 1 {
		t.Errorf("after 5/6: %d X.509 key files, want 1 (the retired CA's key is deleted)", got)
	}

	at(afterEnd)
	after := e.bundle(t)
	if bundleHas(after, oldCA) || !bundleHas(after, newCA) || len(after.GetX509Authorities()) != 2 {
		t.Errorf("after the old CA expired: want it gone, the active CA and its freshly prepared successor published; got %d authorities, old present %v, active present %v",
			len(after.GetX509Authorities()), bundleHas(after, oldCA), bundleHas(after, newCA))
	}
	if err := verifyX509(signX509(t, c, time.Hour), e.x509Bundle(t), e.clock.Now()); err != nil {
		t.Errorf("after the old CA expired: SVID does not verify: %v", err)
	}
}

func bundleHas(b *typesv1.Bundle, cert *x509.Certificate) bool {
	for _, der := range bundleX509DERs(b) {
		if der == string(cert.Raw) {
			return true
		}
	}
	return false
}

// TestRotate_JWTKeyWalksThroughPrepareActivateRemove places the walk so
// that the overlap falls on the wall clock, which jwtsvid validates with.
func TestRotate_JWTKeyWalksThroughPrepareActivateRemove(t *testing.T) {
	t0 := time.Now().Add(-20*time.Hour - 2*time.Minute).Truncate(time.Second)
	e := newEnv(t, t0)
	c := e.start(t)
	at := func(d time.Duration) {
		t.Helper()
		e.clock.Set(t0.Add(d))
		e.rotate(t, c)
	}
	sign := func() (string, string) {
		t.Helper()
		tok, _, _, err := c.SignJWTSVID(context.Background(), JWTParams{ID: testID, Audience: []string{"db"}, TTL: time.Hour})
		if err != nil {
			t.Fatalf("SignJWTSVID: %v", err)
		}
		return tok, tokenKID(t, tok)
	}
	oldKID := sortedKeys(c.JWTAuthorities())[0]

	at(beforeHalf)
	if got := bundleKIDs(e.bundle(t)); len(got) != 1 {
		t.Fatalf("before half-life: bundle key ids %v, want one", got)
	}
	at(atHalf)
	kids := sortedKeys(c.JWTAuthorities())
	if diff := cmp.Diff(kids, sortedStrings(bundleKIDs(e.bundle(t)))); diff != "" || len(kids) != 2 {
		t.Fatalf("at half-life: want both keys published (-CA +bundle):\n%s", diff)
	}
	if _, kid := sign(); kid != oldKID {
		t.Fatalf("at half-life: token signed with %s, want the old key %s", kid, oldKID)
	}

	at(beforeSwap)
	early, _ := sign()

	at(afterSwap)
	late, newKID := sign()
	if newKID == oldKID {
		t.Fatal("after 5/6: the old key still signs")
	}
	b := e.jwtBundle(t)
	for name, tok := range map[string]string{"token of the old key": early, "token of the new key": late} {
		if _, err := jwtsvid.ParseAndValidate(tok, b, []string{"db"}); err != nil {
			t.Errorf("after 5/6: %s does not validate against the JWKS: %v", name, err)
		}
	}

	at(afterEnd)
	if kids := bundleKIDs(e.bundle(t)); contains(kids, oldKID) || !contains(kids, newKID) {
		t.Fatalf("after the old key expired: bundle key ids %v, want %s gone and %s present", kids, oldKID, newKID)
	}
	_, err := jwtsvid.ParseAndValidate(early, e.jwtBundle(t), []string{"db"})
	if err == nil || !strings.Contains(err.Error(), "no JWT authority") {
		t.Errorf("token of the removed key: error = %v, want no JWT authority", err)
	}
	if got := keyFiles(t, e.dir, "jwt"); got != 2 {
		t.Errorf("after the old key expired: %d JWT key files, want 2 (active and next)", got)
	}
}

func sortedStrings(s []string) []string {
	m := make(map[string]bool, len(s))
	for _, x := range s {
		m[x] = true
	}
	return sortedKeys(m)
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func TestRotate_LongOutageStartsAFreshCA(t *testing.T) {
	e := newEnv(t, testStart)
	c := e.start(t)
	oldCA := c.X509Authorities()[0]
	oldKID := sortedKeys(c.JWTAuthorities())[0]

	e.clock.Set(testStart.Add(72 * time.Hour))
	e.rotate(t, c)

	b := e.bundle(t)
	if len(b.GetX509Authorities()) != 1 || bundleHas(b, oldCA) {
		t.Errorf("after an outage longer than the CA's life: want one new X.509 authority, got %d (old present %v)", len(b.GetX509Authorities()), bundleHas(b, oldCA))
	}
	if kids := bundleKIDs(b); len(kids) != 1 || kids[0] == oldKID {
		t.Errorf("after the outage: JWT key ids %v, want one new key", kids)
	}
	if err := verifyX509(signX509(t, c, time.Hour), e.x509Bundle(t), e.clock.Now()); err != nil {
		t.Errorf("after the outage: SVID does not verify: %v", err)
	}
}

// TestRotate_OutageBetweenHalfAndFiveSixthsStillPublishesBeforeActivating
// covers a server that was down when the next CA was due: the next CA must
// be published for a while before it signs.
func TestRotate_OutageBetweenHalfAndFiveSixthsStillPublishesBeforeActivating(t *testing.T) {
	e := newEnv(t, testStart)
	c := e.start(t)
	oldCA := c.X509Authorities()[0]

	e.clock.Set(testStart.Add(21 * time.Hour))
	e.rotate(t, c)
	if len(c.X509Authorities()) != 2 {
		t.Fatalf("want the next CA published, got %d authorities", len(c.X509Authorities()))
	}
	if leaf := signX509(t, c, time.Hour)[0]; string(leaf.AuthorityKeyId) != string(oldCA.SubjectKeyId) {
		t.Fatal("a CA prepared after an outage signed at once; it must be published first")
	}
	// 1/12 of the old CA's life later it takes over.
	e.clock.Set(testStart.Add(23*time.Hour + time.Minute))
	e.rotate(t, c)
	if leaf := signX509(t, c, time.Hour)[0]; string(leaf.AuthorityKeyId) == string(oldCA.SubjectKeyId) {
		t.Fatal("the next CA did not take over 1/12 of a life after its publication")
	}
}

// TestRotate_StoreOutageNeverLetsAnUnpublishedKeySign: if the bundle cannot
// be updated, the next CA is kept on disk but not activated, and the old CA
// goes on signing until the bundle holds the new anchor.
func TestRotate_StoreOutageNeverLetsAnUnpublishedKeySign(t *testing.T) {
	e := newEnv(t, testStart)
	flaky := &flakyBundles{BundleStore: e.store}
	c := e.start(t, func(cfg *Config) { cfg.Bundles = flaky })
	oldCA := c.X509Authorities()[0]

	flaky.fail.Store(true)
	for _, d := range []time.Duration{atHalf, afterSwap} {
		e.clock.Set(testStart.Add(d))
		if err := c.Rotate(context.Background()); !errors.Is(err, errStoreDown) {
			t.Fatalf("Rotate at +%s with the store down: error = %v, want %v", d, err, errStoreDown)
		}
		if leaf := signX509(t, c, time.Hour)[0]; string(leaf.AuthorityKeyId) != string(oldCA.SubjectKeyId) {
			t.Fatalf("at +%s with the store down: an unpublished CA signs", d)
		}
	}
	if got := keyFiles(t, e.dir, "x509"); got != 2 {
		t.Errorf("with the store down: %d X.509 key files, want 2 (the next CA is kept)", got)
	}

	flaky.fail.Store(false)
	e.rotate(t, c)
	late := signX509(t, c, time.Hour)
	if string(late[0].AuthorityKeyId) == string(oldCA.SubjectKeyId) {
		t.Fatal("store back: the next CA did not take over")
	}
	if err := verifyX509(late, e.x509Bundle(t), e.clock.Now()); err != nil {
		t.Errorf("store back: SVID of the new CA does not verify: %v", err)
	}
}

func TestNew_StoreDownIsAnError(t *testing.T) {
	e := newEnv(t, testStart)
	flaky := &flakyBundles{BundleStore: e.store}
	flaky.fail.Store(true)
	cfg := e.config()
	cfg.Bundles = flaky
	if _, err := New(context.Background(), cfg); !errors.Is(err, errStoreDown) {
		t.Fatalf("New error = %v, want %v", err, errStoreDown)
	}
}

// TestRotate_LeavesOtherServersAuthoritiesAlone: several servers share one
// bundle; each adds and removes only its own authorities.
func TestRotate_LeavesOtherServersAuthoritiesAlone(t *testing.T) {
	e := newEnv(t, testStart)
	other := e.start(t, func(cfg *Config) { cfg.Dir = filepath.Join(t.TempDir(), "other") })
	c := e.start(t)
	foreignCA := other.X509Authorities()[0]
	foreignKID := sortedKeys(other.JWTAuthorities())[0]

	for _, d := range []time.Duration{atHalf, afterSwap, afterEnd} {
		e.clock.Set(testStart.Add(d))
		e.rotate(t, c)
		b := e.bundle(t)
		if !bundleHas(b, foreignCA) || !contains(bundleKIDs(b), foreignKID) {
			t.Fatalf("at +%s: the other server's authorities were removed", d)
		}
	}
}

func TestRun_RotatesWhenDueAndStopsWithTheContext(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	e := newEnv(t, testStart)
	c := e.start(t)
	c.tick = 10 * time.Millisecond

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()

	e.clock.Set(testStart.Add(atHalf))
	waitFor(t, "Run to prepare the next CA at half-life", func() bool {
		return len(e.bundle(t).GetX509Authorities()) == 2
	})
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run returned %v after cancel, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return within 10s of cancel")
	}
}

func TestRun_RetriesAFailedStep(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	e := newEnv(t, testStart)
	flaky := &flakyBundles{BundleStore: e.store}
	c := e.start(t, func(cfg *Config) { cfg.Bundles = flaky })
	c.tick = 10 * time.Millisecond
	flaky.fail.Store(true)
	e.clock.Set(testStart.Add(atHalf))

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	waitFor(t, "two failed steps", func() bool { return flaky.failures.Load() >= 2 })
	flaky.fail.Store(false)

	waitFor(t, "the next CA published after the store came back", func() bool {
		return len(e.bundle(t).GetX509Authorities()) == 2
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run returned %v, want nil", err)
	}
}

// TestSign_ConcurrentWithRotation is meant for -race: signing goes on
// while rotation swaps the keys.
func TestSign_ConcurrentWithRotation(t *testing.T) {
	e := newEnv(t, testStart)
	c := e.start(t)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			pub := mustKey(t, "ec-p256").Public()
			for ctx.Err() == nil {
				if _, err := c.SignX509SVID(ctx, X509Params{ID: testID, PublicKey: pub, TTL: time.Hour}); err != nil && ctx.Err() == nil {
					errs <- err
					return
				}
				if _, _, _, err := c.SignJWTSVID(ctx, JWTParams{ID: testID, Audience: []string{"a"}, TTL: time.Minute}); err != nil && ctx.Err() == nil {
					errs <- err
					return
				}
				_ = c.X509Authorities()
				_ = c.JWTAuthorities()
			}
		}()
	}
	// Steps stay within each active key's life, as Run keeps them.
	for _, d := range []time.Duration{atHalf, afterSwap, afterEnd, 32*time.Hour + time.Minute, 36*time.Hour + time.Minute} {
		e.clock.Set(testStart.Add(d))
		e.rotate(t, c)
	}
	cancel()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("signing during rotation: %v", err)
	}
}

func tokenKID(t *testing.T, tok string) string {
	t.Helper()
	parsed, err := jwt.ParseSigned(tok, []jose.SignatureAlgorithm{jose.ES256, jose.ES384, jose.RS256})
	if err != nil {
		t.Fatalf("parse token: %v", err)
	}
	return parsed.Headers[0].KeyID
}

// waitFor polls cond for up to 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after 10s waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
