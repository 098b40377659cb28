// Package store defines what nhid-server persists and the contract every
// backend (bbolt in store/bolt, etcd in store/etcd) must honour. The
// conformance suite in store/storetest is that contract in executable form.
//
// Records are the nhid.types.v1 protobuf messages. Backends own their copies:
// what a caller passes in or gets back is never aliased by the store.
package store

import (
	"context"
	"errors"
	"time"

	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

// Sentinel errors callers branch on. Backends wrap them with context.
var (
	// ErrNotFound: no record with that key.
	ErrNotFound = errors.New("not found")
	// ErrAlreadyExists: a record with that id exists, or an entry with the
	// same spiffe_id, parent_id and selector set.
	ErrAlreadyExists = errors.New("already exists")
	// ErrConflict: an optimistic-concurrency check failed (stale revision).
	ErrConflict = errors.New("revision conflict")
	// ErrCompacted: the changes since the asked revision are no longer kept;
	// the caller must take a full snapshot.
	ErrCompacted = errors.New("revision compacted")
	// ErrTokenUsed: the join token was used already.
	ErrTokenUsed = errors.New("join token already used")
	// ErrTokenExpired: the join token has expired.
	ErrTokenExpired = errors.New("join token expired")
	// ErrTokenInvalid: the join token's secret does not match.
	ErrTokenInvalid = errors.New("join token invalid")
	// ErrClosed: the store was closed.
	ErrClosed = errors.New("store closed")
	// ErrInvalidArgument: a malformed argument such as a bad page token, a
	// negative page size or revision; the message names it.
	ErrInvalidArgument = errors.New("invalid argument")
	// ErrUnavailable: a distributed backend cannot serve the call now (no
	// quorum, no reachable member); the caller may retry later. A write
	// that fails this way may or may not have been applied.
	ErrUnavailable = errors.New("store unavailable")
)

// Store is everything nhid-server persists. Consumers should depend on the
// narrow interfaces (EntryStore, NodeStore, ...) they use.
type Store interface {
	EntryStore
	NodeStore
	TokenStore
	BundleStore
	LedgerStore
	AuditStore
	GrantStore
	ReputationStore
	Watcher
	// Revision is the current global revision.
	Revision(ctx context.Context) (int64, error)
	// Close releases the backend; pending writes are finished first.
	Close() error
}

// ListEntriesRequest filters and pages ListEntries. Empty filters match all.
type ListEntriesRequest struct {
	SpiffeID string
	ParentID string
	// Selectors: only entries having every one of these selectors.
	Selectors []string
	// PageSize 0 means no limit.
	PageSize int
	// PageToken is the NextPageToken of the previous page.
	PageToken string
}

// EntryStore persists registration entries. Every write bumps the global
// revision and sets the entry's Revision to it.
type EntryStore interface {
	// CreateEntries stores entries in one transaction. Each entry gets an id
	// (a new UUID (v7: random and time-ordered) unless set), CreatedAt (if
	// zero) and a revision of its own: each created entry takes the next
	// revision, in input order. errs[i] is nil or wraps ErrAlreadyExists for
	// entries[i]; entries that fail are skipped and the rest are committed.
	// The returned slice holds the stored copies (nil where errs[i] != nil).
	// A non-nil final error means nothing was written. Validation is the
	// caller's job.
	CreateEntries(ctx context.Context, entries []*typesv1.Entry) (created []*typesv1.Entry, errs []error, err error)
	// UpdateEntry replaces the entry with the same id. If e.Revision is not
	// zero it must equal the stored revision (else ErrConflict). The stored
	// CreatedAt is kept, whatever e holds. The duplicate rule of
	// CreateEntries applies.
	UpdateEntry(ctx context.Context, e *typesv1.Entry) (*typesv1.Entry, error)
	// DeleteEntry removes an entry, leaving a tombstone for EntryChangesSince.
	DeleteEntry(ctx context.Context, id string) (*typesv1.Entry, error)
	GetEntry(ctx context.Context, id string) (*typesv1.Entry, error)
	// ListEntries pages through entries ordered by id.
	ListEntries(ctx context.Context, req ListEntriesRequest) (entries []*typesv1.Entry, nextPageToken string, err error)
	// ListEntriesByParent returns every entry whose parent_id is one of
	// parentIDs, ordered by id, with the revision they were read at.
	ListEntriesByParent(ctx context.Context, parentIDs []string) (entries []*typesv1.Entry, revision int64, err error)
	// EntryChangesSince returns entries changed after rev (current state,
	// any parent) and ids deleted after rev, with the revision they were read
	// at. An id deleted and then re-created after rev is reported only in
	// changed. ErrCompacted if tombstones after rev were pruned.
	EntryChangesSince(ctx context.Context, rev int64) (changed []*typesv1.Entry, deleted []string, revision int64, err error)
	// CountEntries is the number of entries.
	CountEntries(ctx context.Context) (int, error)
	// PruneTombstones drops tombstones older than the given revision.
	PruneTombstones(ctx context.Context, beforeRevision int64) error
}

// NodeStore persists attested nodes, keyed by SPIFFE ID.
type NodeStore interface {
	// CreateNode stores a new node; ErrAlreadyExists if it exists.
	CreateNode(ctx context.Context, n *typesv1.Node) (*typesv1.Node, error)
	// UpdateNode applies fn to the stored node in one transaction (fn may be
	// called more than once on backends that retry). If fn returns an error,
	// nothing changes and that error is returned. ErrNotFound if absent.
	UpdateNode(ctx context.Context, spiffeID string, fn func(*typesv1.Node) error) (*typesv1.Node, error)
	GetNode(ctx context.Context, spiffeID string) (*typesv1.Node, error)
	// ListNodes pages through nodes ordered by SPIFFE ID; PageSize 0 = all.
	ListNodes(ctx context.Context, pageSize int, pageToken string) (nodes []*typesv1.Node, nextPageToken string, err error)
	DeleteNode(ctx context.Context, spiffeID string) error
	CountNodes(ctx context.Context) (int, error)
}

// TokenStore persists join tokens.
type TokenStore interface {
	// CreateJoinToken stores a token; ErrAlreadyExists if the id is taken.
	CreateJoinToken(ctx context.Context, t *typesv1.JoinToken) error
	// UseJoinToken atomically checks and marks a token used: ErrNotFound if
	// unknown, ErrTokenInvalid if secretHash differs (the token is left
	// unused), ErrTokenUsed if used before, ErrTokenExpired if now is past
	// its expiry. On success the token is marked used by usedBy at now and
	// returned; it can never be used again.
	UseJoinToken(ctx context.Context, id string, secretHash []byte, usedBy string, now time.Time) (*typesv1.JoinToken, error)
	// GetJoinToken returns the token (ErrNotFound if absent).
	GetJoinToken(ctx context.Context, id string) (*typesv1.JoinToken, error)
	ListJoinTokens(ctx context.Context) ([]*typesv1.JoinToken, error)
	// DeleteJoinToken revokes a token; ErrNotFound if absent.
	DeleteJoinToken(ctx context.Context, id string) error
	// PruneJoinTokens drops tokens that expired before the given time.
	PruneJoinTokens(ctx context.Context, expiredBefore time.Time) (int, error)
}

// BundleStore persists trust bundles, keyed by trust domain name: the
// server's own and the federated trust domains'.
type BundleStore interface {
	GetBundle(ctx context.Context, trustDomain string) (*typesv1.Bundle, error)
	// UpdateBundle applies fn to the stored bundle (an empty bundle with the
	// trust domain set if none is stored) in one transaction, bumping
	// SequenceNumber. fn returning an error aborts with that error.
	UpdateBundle(ctx context.Context, trustDomain string, fn func(*typesv1.Bundle) error) (*typesv1.Bundle, error)
	// ListBundles returns every stored bundle, by trust domain name.
	ListBundles(ctx context.Context) ([]*typesv1.Bundle, error)
	// DeleteBundle removes a trust domain's bundle (ErrNotFound if none is
	// stored); watchers get an EventBundle with Bundle nil and PrevBundle
	// the deleted one.
	DeleteBundle(ctx context.Context, trustDomain string) error
}

// LedgerStore persists the SVID ledger: what each SVID was issued for.
type LedgerStore interface {
	// RecordIssued appends ledger rows in one transaction.
	RecordIssued(ctx context.Context, rows []*typesv1.IssuedSVID) error
	// GetIssued looks a row up by serial (hex) or jti.
	GetIssued(ctx context.Context, id string) (*typesv1.IssuedSVID, error)
	// PruneIssued drops rows that expired before the given time.
	PruneIssued(ctx context.Context, expiredBefore time.Time) (int, error)
}

// EventKind says which record an Event is about.
type EventKind int

// Event kinds.
const (
	EventEntry EventKind = iota + 1
	EventNode
	EventBundle
	// EventGrant is delivered only by GrantStore.WatchGrants, never by Watch.
	EventGrant
)

// Event is one committed change. For entries, Entry is the new state (nil on
// delete) and PrevEntry the old one (nil on create). For nodes, Node is the
// new state (nil on delete) and PrevNode the old one. For bundles, Bundle
// is the new state (nil on delete) and PrevBundle the deleted one (set on
// delete only). For grants, Grant is
// the new state and PrevGrant the old one (nil on create); their Revision is
// the grant's own revision (see GrantStore).
type Event struct {
	Revision   int64
	Kind       EventKind
	Entry      *typesv1.Entry
	PrevEntry  *typesv1.Entry
	Node       *typesv1.Node
	PrevNode   *typesv1.Node
	Bundle     *typesv1.Bundle
	PrevBundle *typesv1.Bundle
	Grant      *typesv1.Grant
	PrevGrant  *typesv1.Grant
}

// Watcher streams committed changes.
type Watcher interface {
	// Watch delivers, in revision order, every entry, node and bundle change
	// committed after Watch returns. The channel is closed when ctx ends or
	// when the watcher falls too far behind; a closed channel with ctx still
	// live means events were lost and the caller must re-read the state.
	// Records in events are shared between watchers: do not modify them.
	Watch(ctx context.Context) (<-chan Event, error)
}
