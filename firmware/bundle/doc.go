// Package bundle is the CampusEdge firmware bundle: one file holding a
// signed manifest (product, target, version, the minimum version it may
// replace, every file with its size, mode and SHA-256) followed by the files.
//
// The layout is deliberately simple so it can be verified while streaming,
// without buffering a file or trusting anything before the signature:
//
//	"CEFWBND1"              8-byte magic (format 1)
//	uint32 big-endian       manifest length, 1..MaxManifestBytes
//	manifest                canonical JSON (see Manifest); these exact bytes are signed
//	uint16 big-endian       signature block length: 0 (unsigned) or 72
//	key id (8) | sig (64)   ed25519 signature by a release key over SignedMessage(manifest)
//	file bytes              each file in manifest order, exactly Size bytes, no padding
//	EOF                     anything after the last file is an error
//
// A reader checks the signature against a Keyring of trusted release keys
// (several, so a key can be rotated) and the install Policy (product,
// target, minimum version, anti-rollback floor) before it yields a single
// byte of a file; each file's bytes are hashed as they stream and a
// mismatch or a short file is an error naming the file. Release keys are
// separate from an edge's own identity key: they live with whoever builds
// releases, and the edge holds only their public halves.
package bundle
