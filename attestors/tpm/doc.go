// Package tpm is the TPM 2.0 node attestor: it proves a node holds a TPM
// whose endorsement key (EK) a manufacturer certified, and that the host's
// measured boot state (its PCRs) is one the operator allows, at
// attestation and again every requote interval while the node keeps its
// identity (continuous attestation).
//
// The protocol follows Keylime's, with go-tpm's tpm2 package on both sides:
//
//  1. The agent (Evidence) reads the RSA EK of the TCG template and its
//     certificate from NV index 0x01C00002, creates an attestation key
//     (AK: a restricted signing key, ECC P-256 or RSA-2048, as a primary
//     key of the endorsement hierarchy, so the same AK comes back every
//     time) and sends the EK public area, the EK certificate and the AK
//     public area.
//  2. The server (Verifier) trusts the EK by its certificate, which must
//     chain to a configured manufacturer CA, or by an allow-list of EK
//     public-key hashes; checks the AK's attributes (restricted, sign,
//     fixedTPM, fixedParent, sensitiveDataOrigin) and computes its name;
//     and sends a credential made with MakeCredential to the EK, bound to
//     the AK's name, with a fresh nonce and the PCRs to quote.
//  3. The agent activates the credential (only the TPM holding the EK can,
//     and only for an AK loaded in that TPM) and returns the secret, a
//     quote of the PCRs with the nonce as qualifying data, and the values.
//  4. The server checks the secret, the quote's signature with the AK, its
//     magic and type, its extraData against the nonce, its PCR selection,
//     the PCR digest recomputed from the reported values, and the values
//     against the golden sets.
//
// The node becomes spiffe://<td>/nhid/agent/tpm/<hex SHA-256 of the EK's
// PKIX public key>, with the selectors of nodeSelectors. The server keeps
// the EK, its certificate and the AK (NodeResult.State) and quotes the node
// again every requote interval over the agent API's Reattest stream
// (Verifier.Reattest); values outside policy make the node untrusted.
//
// docs/attestors.md documents the configuration and every selector.
package tpm
