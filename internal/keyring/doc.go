// Package keyring reads, edits and atomically rewrites the gossip key files: one or more base64 AES keys, primary first.
package keyring
