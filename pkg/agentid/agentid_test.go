package agentid

import (
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

func TestNew(t *testing.T) {
	td := spiffeid.RequireTrustDomainFromString("example.org")
	tests := []struct {
		attestor, node, want string
		wantErr              bool
	}{
		{"join_token", "abc", "spiffe://example.org/nhid/agent/join_token/abc", false},
		{"k8s_psat", "c1/uid", "spiffe://example.org/nhid/agent/k8s_psat/c1/uid", false},
		{"", "abc", "", true},
		{"a/b", "abc", "", true},
		{"tpm", "", "", true},
		{"tpm", "a//b", "", true},
	}
	for _, tt := range tests {
		t.Run(tt.attestor+"/"+tt.node, func(t *testing.T) {
			id, err := New(td, tt.attestor, tt.node)
			if (err != nil) != tt.wantErr {
				t.Fatalf("New error = %v, wantErr %v", err, tt.wantErr)
			}
			if err == nil && (id.String() != tt.want || !IsAgent(id) || !IsReserved(id)) {
				t.Fatalf("New = %s, want %s in the agent namespace", id, tt.want)
			}
		})
	}
	if got := Server(td).String(); got != "spiffe://example.org/nhid/server" {
		t.Fatalf("Server = %s", got)
	}
	if IsReserved(spiffeid.RequireFromString("spiffe://example.org/nhidden")) {
		t.Fatal("/nhidden is not reserved")
	}
}
