package fuseuring

import "unsafe"

// The FUSE wire format (include/uapi/linux/fuse.h), only the parts this
// prototype answers. Everything is native-endian and laid out as in C.

// Protocol version we speak: 7.42 is the first with FUSE_OVER_IO_URING.
const (
	kernelMajor = 7
	kernelMinor = 42
)

// Opcodes.
const (
	opLookup      = 1
	opForget      = 2
	opGetattr     = 3
	opOpen        = 14
	opRead        = 15
	opStatfs      = 17
	opRelease     = 18
	opFlush       = 25
	opInit        = 26
	opInterrupt   = 36
	opDestroy     = 38
	opBatchForget = 42
)

// INIT flags. FUSE_OVER_IO_URING lives in flags2, bit 41-32.
const (
	initAsyncRead  = 1 << 0
	initBigWrites  = 1 << 5
	initMaxPages   = 1 << 22
	initExt        = 1 << 30
	initOverURing2 = 1 << (41 - 32)
)

// fopenDirectIO makes every read(2) one READ request (no page cache).
const fopenDirectIO = 1 << 0

// maxPages bounds a request's payload (32 pages: 128 KiB, the default).
const (
	maxPages = 32
	maxWrite = maxPages * 4096
)

type inHeader struct {
	Len         uint32
	Opcode      uint32
	Unique      uint64
	Nodeid      uint64
	UID         uint32
	GID         uint32
	PID         uint32
	TotalExtlen uint16
	Padding     uint16
}

type outHeader struct {
	Len    uint32
	Error  int32
	Unique uint64
}

type initIn struct {
	Major        uint32
	Minor        uint32
	MaxReadahead uint32
	Flags        uint32
	Flags2       uint32
	Unused       [11]uint32
}

type initOut struct {
	Major               uint32
	Minor               uint32
	MaxReadahead        uint32
	Flags               uint32
	MaxBackground       uint16
	CongestionThreshold uint16
	MaxWrite            uint32
	TimeGran            uint32
	MaxPages            uint16
	MapAlignment        uint16
	Flags2              uint32
	MaxStackDepth       uint32
	RequestTimeout      uint16
	Unused              [11]uint16
}

type attr struct {
	Ino       uint64
	Size      uint64
	Blocks    uint64
	Atime     uint64
	Mtime     uint64
	Ctime     uint64
	Atimensec uint32
	Mtimensec uint32
	Ctimensec uint32
	Mode      uint32
	Nlink     uint32
	UID       uint32
	GID       uint32
	Rdev      uint32
	Blksize   uint32
	Flags     uint32
}

type entryOut struct {
	Nodeid         uint64
	Generation     uint64
	EntryValid     uint64
	AttrValid      uint64
	EntryValidNsec uint32
	AttrValidNsec  uint32
	Attr           attr
}

type attrOut struct {
	AttrValid     uint64
	AttrValidNsec uint32
	Dummy         uint32
	Attr          attr
}

type getattrIn struct {
	GetattrFlags uint32
	Dummy        uint32
	Fh           uint64
}

type openIn struct {
	Flags     uint32
	OpenFlags uint32
}

type openOut struct {
	Fh        uint64
	OpenFlags uint32
	BackingID int32
}

type readIn struct {
	Fh        uint64
	Offset    uint64
	Size      uint32
	ReadFlags uint32
	LockOwner uint64
	Flags     uint32
	Padding   uint32
}

type releaseIn struct {
	Fh           uint64
	Flags        uint32
	ReleaseFlags uint32
	LockOwner    uint64
}

type statfsOut struct {
	Blocks  uint64
	Bfree   uint64
	Bavail  uint64
	Files   uint64
	Ffree   uint64
	Bsize   uint32
	Namelen uint32
	Frsize  uint32
	Padding uint32
	Spare   [6]uint32
}

type forgetIn struct {
	Nlookup uint64
}

type batchForgetIn struct {
	Count uint32
	Dummy uint32
}

type forgetOne struct {
	Nodeid  uint64
	Nlookup uint64
}

const (
	inHeaderSize  = int(unsafe.Sizeof(inHeader{}))
	outHeaderSize = int(unsafe.Sizeof(outHeader{}))
)

// argSize is the size of an opcode's fixed argument struct, which the
// kernel puts in the ring header's op_in area (io_uring) or right after the
// in header (/dev/fuse); names and data follow it.
func argSize(opcode uint32) int {
	switch opcode {
	case opGetattr:
		return int(unsafe.Sizeof(getattrIn{}))
	case opOpen:
		return int(unsafe.Sizeof(openIn{}))
	case opRead:
		return int(unsafe.Sizeof(readIn{}))
	case opRelease, opFlush:
		return int(unsafe.Sizeof(releaseIn{}))
	case opForget:
		return int(unsafe.Sizeof(forgetIn{}))
	case opBatchForget:
		return int(unsafe.Sizeof(batchForgetIn{}))
	case opInit:
		return int(unsafe.Sizeof(initIn{}))
	default:
		return 0
	}
}

// view reinterprets the start of b as a *T; callers check the length.
func view[T any](b []byte) *T {
	return (*T)(unsafe.Pointer(unsafe.SliceData(b)))
}

// bytesOf is the memory of *v as a byte slice, for replies.
func bytesOf[T any](v *T) []byte {
	return unsafe.Slice((*byte)(unsafe.Pointer(v)), unsafe.Sizeof(*v))
}
