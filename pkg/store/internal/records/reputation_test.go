package records

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"

	typesv1 "github.com/nhid/nhid/proto/nhid/types/v1"
)

func TestUnmarshalWithout_LeavesOutOnlyThatField(t *testing.T) {
	in := &typesv1.Reputation{SpiffeId: "spiffe://example.org/a", Score: 123.5, UpdatedAt: 42, Owner: "ana", Alerted: true, Restricted: true,
		Events: []*typesv1.ReputationEvent{{Kind: "grant_denied", Delta: -20}, {Kind: "reset"}}}
	b, err := proto.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	got := &typesv1.Reputation{}
	if err := UnmarshalWithout(b, got, 5); err != nil {
		t.Fatal(err)
	}
	want := proto.Clone(in).(*typesv1.Reputation)
	want.Events = nil
	if diff := cmp.Diff(want, got, protocmp.Transform()); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	if err := UnmarshalWithout(b[:len(b)-3], &typesv1.Reputation{}, 5); err == nil {
		t.Error("a truncated record decoded")
	}
}
