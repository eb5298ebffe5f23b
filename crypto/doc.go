// Package crypto holds securevol's key hierarchy and the glue around vetted
// primitives (AES-256-GCM, EME, HKDF-SHA256, HMAC-SHA256, Argon2id). It
// invents no constructions: each function here either generates a key,
// derives one with HKDF, or calls a standard AEAD, MAC or wide-block cipher
// with documented inputs. It is pure: it encodes and decodes bytes and
// never touches a file (package backing reads and writes the format, and
// package keyfile reads key files).
//
// The hierarchy (see docs/FORMAT.md):
//
//	master key (key file, or Argon2id(passphrase))
//	  └─ wraps, per encrypted directory: volume key (random, 256 bit)
//	       ├─ HKDF "securevol v2 header"  → HMAC-SHA256 key authenticating the header
//	       ├─ HKDF "securevol v1 content" → content key
//	       │     └─ HKDF(salt=file ID) "securevol v1 file" → per-file AES-256-GCM key
//	       ├─ HKDF "securevol v1 names"   → EME-AES-256 key for names
//	       ├─ HKDF "securevol v1 xattr"   → EME-AES-256 key for xattr names
//	       └─ HKDF "securevol v1 meta"    → AES-256-GCM key for xattr values, symlink targets
package crypto
