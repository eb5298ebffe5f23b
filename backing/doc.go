// Package backing is the only code that touches a backing folder.
//
// A backing folder is hostile: whoever holds it (a restored backup, shared
// storage, another tenant) may plant symlinks, FIFOs, device nodes, huge
// files, or swap entries while a volume is mounted. So every access here is
// relative to an open directory descriptor and names exactly one path
// component; the last component is never followed (O_NOFOLLOW,
// AT_SYMLINK_NOFOLLOW, or an O_PATH descriptor checked with fstat); opens
// never block (O_NONBLOCK, so a planted FIFO cannot hang a request) and are
// type-checked, so a device node is never opened and a FIFO never read.
// Directory descriptors are walked one component at a time by the caller,
// which is why neither depth nor PATH_MAX limits a tree.
//
// Violations surface as the sentinel errors in errors.go, all of which are
// also EIO.
package backing
