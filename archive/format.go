package archive

import (
	"time"

	"github.com/restic/chunker"

	"github.com/securevol/securevol/crypto"
)

// The archive format (docs/FORMAT.md, "Volume archives"). Changing any of
// these makes a new format version.
const (
	// FormatVersion is the config's "format".
	FormatVersion = 1

	// ArtifactType is the manifest's artifactType.
	ArtifactType = "application/vnd.securevol.volume.v1"
	// ConfigMediaType is the config blob's media type.
	ConfigMediaType = "application/vnd.securevol.volume.config.v1+json"
	// ChunkMediaType is each chunk's media type: a piece of the stream.
	ChunkMediaType = "application/vnd.securevol.volume.chunk.v1"
	// HandoverMediaType is the optional handover blob's (see WriteOptions).
	HandoverMediaType = "application/vnd.securevol.handover.v1+age"

	// Polynomial is the chunker's Rabin polynomial, irreducible of degree
	// 53, the same for every archive: a random one per archive (restic's
	// choice, against guessing file sizes from chunk sizes in a plaintext
	// backup) would make every snapshot's chunks differ. Here the stream
	// is ciphertext whose sizes a folder's holder sees anyway.
	Polynomial chunker.Pol = 0x2264e09711c2ad
	// MinChunk, MaxChunk and AverageBits bound the chunks: a cut is made
	// where the fingerprint's low AverageBits bits are zero, not before
	// MinChunk bytes and at MaxChunk at the latest, so chunks average
	// about MinChunk + 2^AverageBits = 2 MiB (some 500 for 1 GiB). The
	// bytes before MinChunk are not fingerprinted at all, which is where
	// most of the chunker's speed comes from.
	MinChunk    = 1 << 20
	MaxChunk    = 8 << 20
	AverageBits = 20
)

// Limits on what a reader accepts, so that a hostile archive cannot make
// it allocate or write without bound.
const (
	maxLayoutFile = 1 << 10  // oci-layout
	maxIndex      = 64 << 10 // index.json: one descriptor
	maxConfig     = 1 << 20  // the header's name and labels are at most 64 KiB
	maxHandover   = 1 << 20  // an age file: a header per recipient and a key
	// MaxManifestSize is the largest manifest, which lists every chunk
	// (about 150 bytes each): Docker's registry refuses larger ones. It
	// allows some 27,000 chunks, volumes of about 50 GiB.
	MaxManifestSize = 4 << 20
	maxChunks       = MaxManifestSize / 150
	// MaxDepth bounds the tree's depth: a reader holds a descriptor per
	// level. cryptfs makes any plaintext path of PATH_MAX bytes, which is
	// at most 2048 levels.
	MaxDepth = 4096
	// MaxBlob is the largest blob of any kind.
	MaxBlob = max(MaxManifestSize, maxConfig, maxHandover, MaxChunk)
)

// Sizes of the bookkeeping files, as package backing reads them.
const (
	maxSidecar    = 4096 // backing.ReadLongName
	maxLongTarget = crypto.MaxSymlinkLen + crypto.NonceSize + crypto.TagSize
	maxXattrValue = 64 << 10 // Linux's XATTR_SIZE_MAX
	maxXattrName  = 255      // Linux's XATTR_NAME_MAX
)

// Meta is what the archive says about the volume in the clear (not secret: a backing-folder
// holder learns as much from the header).
type Meta struct {
	Name      string            `json:"name"` // the volume's name at the source
	CreatedAt time.Time         `json:"createdAt"`
	Labels    map[string]string `json:"labels,omitempty"` // the volume's options as header labels
}

// config is the config blob.
type config struct {
	Format  int           `json:"format"`
	Chunker chunkerConfig `json:"chunker"`
	Stream  streamInfo    `json:"stream"`
	Volume  Meta          `json:"volume"`
}

type chunkerConfig struct {
	Polynomial  string `json:"polynomial"` // hexadecimal, 0x...
	MinSize     int    `json:"minSize"`
	MaxSize     int    `json:"maxSize"`
	AverageBits int    `json:"averageBits"`
}

// streamInfo describes the tar stream the chunks make up. Its bytes are
// pinned by the chunks' digests in the manifest, so it carries no digest
// of its own.
type streamInfo struct {
	Size    int64 `json:"size"`
	Entries int   `json:"entries"`
}

func thisChunker() chunkerConfig {
	return chunkerConfig{Polynomial: Polynomial.String(), MinSize: MinChunk, MaxSize: MaxChunk, AverageBits: AverageBits}
}
