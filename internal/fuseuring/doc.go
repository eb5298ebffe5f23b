// Package fuseuring is a prototype FUSE server that can take its requests
// through FUSE over io_uring (Linux 6.14+) instead of read(2)/writev(2) on
// /dev/fuse, to measure what the ring saves per request. It serves a fixed,
// read-only, in-memory directory of files and nothing else; it is not used
// by cryptfs. `make bench-uring` compares the two transports and go-fuse.
//
// Measured on the project's 2-core VM (2026-11-30): a stat round trip took
// 5.3–5.7 µs over the ring against 7.5–9.6 µs over the classic loop
// (medians; 1.3–1.8×, and 1.6–1.7× per thread with two threads), with a far
// tighter p99; 128 KiB reads gained nothing (the copy dominates). go-fuse's
// own layer adds 5–9 µs per request on top of a classic loop, more than the
// ring saves, so cryptfs keeps go-fuse's classic transport.
//
// Carrying it into go-fuse (a maintained fork under third_party/ with a
// replace directive) would take: FUSE_OVER_IO_URING in INIT's flags2 when
// the kernel offers it, then per-CPU queue goroutines started after INIT;
// each completed ring entry fed to the request handler beside the /dev/fuse
// reader (the parser wants header, op struct and payload contiguous); replies
// written into the entry and committed with COMMIT_AND_FETCH, read replies
// filling the payload buffer directly; slow handlers run off the queue's
// thread with their commit handed back to it; FORGET, INTERRUPT and
// notifications staying on /dev/fuse; the classic loop as the fallback when
// INIT does not offer the ring or REGISTER fails. enable_uring is the
// administrator's setting, not the daemon's.
package fuseuring
