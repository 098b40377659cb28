package all

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/nhid/nhid/attestors/container"
	"github.com/nhid/nhid/attestors/sigstore"
	"github.com/nhid/nhid/attestors/sigstore/sigstoretest"
	"github.com/nhid/nhid/attestors/unix"
)

func TestWorkloadAttestors_ContainerAndSigstoreWhenConfigured(t *testing.T) {
	key := sigstoretest.NewKey(t)
	ctr := &container.Config{ContainerdSocket: "/run/nhid-test/containerd.sock"}
	sig := &sigstore.Config{PublicKeys: []sigstore.PublicKey{{Name: "release", PEM: key.PEM}}}
	tests := []struct {
		name string
		cfg  WorkloadConfig
		want []string
	}{
		{"neither", WorkloadConfig{}, []string{unix.Type}},
		{"container alone", WorkloadConfig{Container: ctr}, []string{unix.Type, container.Type}},
		{"container and sigstore", WorkloadConfig{Container: ctr, Sigstore: sig}, []string{unix.Type, container.Type, sigstore.Type}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			as, err := WorkloadAttestors(tt.cfg)
			if err != nil {
				t.Fatalf("WorkloadAttestors: %v", err)
			}
			t.Cleanup(func() {
				for _, a := range as {
					if c, ok := a.(*container.Attestor); ok {
						_ = c.Close()
					}
				}
			})
			if diff := cmp.Diff(tt.want, types(as)); diff != "" {
				t.Errorf("types (-want +got):\n%s", diff)
			}
		})
	}
}

func TestWorkloadAttestors_SigstoreNeedsContainer(t *testing.T) {
	key := sigstoretest.NewKey(t)
	_, err := WorkloadAttestors(WorkloadConfig{Sigstore: &sigstore.Config{PublicKeys: []sigstore.PublicKey{{Name: "k", PEM: key.PEM}}}})
	if err == nil || !strings.Contains(err.Error(), "needs the container attestor") {
		t.Errorf("err = %v, want one saying sigstore needs the container attestor", err)
	}
}

func TestWorkloadAttestors_ReportsBadSigstoreConfig(t *testing.T) {
	_, err := WorkloadAttestors(WorkloadConfig{Container: &container.Config{}, Sigstore: &sigstore.Config{}})
	if err == nil || !strings.Contains(err.Error(), "workload attestor sigstore") {
		t.Errorf("err = %v, want one naming the sigstore attestor", err)
	}
}
