// Package benchwork defines the database-like workloads that both make
// bench (bench/fsbench, on the host) and make bench-docker (e2e, in a
// container) run, so that their rows measure the same thing: fio's random
// 8 KiB writes with fdatasync, and a TPC-B-like SQLite load. It builds
// arguments and scripts and reads results; running them is the caller's.
package benchwork
