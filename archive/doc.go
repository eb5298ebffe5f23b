// Package archive turns a backing folder into a volume archive and back,
// ciphertext only: nothing here holds a key or decrypts a byte.
//
// An archive is an OCI image layout (docs/FORMAT.md, "Volume archives")
// holding one artifact manifest: a config blob that describes the volume
// and a deterministic tar stream of the backing folder, cut into chunks by
// content (restic/chunker with one fixed polynomial), so that unchanged data
// gives the same chunks in every snapshot and a registry stores them once.
//
// Writing reads the folder only through package backing. Reading treats
// the archive as hostile: every blob is checked against its digest before
// use, every limit comes from the verified manifest and config, and
// Restore creates each entry through package backing, one name at a time
// relative to an open directory, refusing any entry that leaves the
// destination, goes through a link, or has a type or size securevol would
// never have written there.
package archive
