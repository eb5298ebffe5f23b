package archive

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sync"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/securevol/securevol/backing"
)

// WriteOptions are what Write stores besides the folder.
type WriteOptions struct {
	Meta     Meta
	Header   []byte // if non-nil, stored instead of the folder's own header file (crypto.HeaderName)
	Handover []byte // if non-nil, stored as the handover blob
}

// Summary describes an archive.
type Summary struct {
	Manifest string // the manifest's digest, sha256:...
	Files    int    // entries in the stream
	Bytes    int64  // size of the stream
	Chunks   int
	Meta     Meta
	Handover []byte // nil if none
}

// Write snapshots the backing folder root into a new OCI image layout at dir (which must not
// exist or be empty). The caller guarantees nothing changes the folder meanwhile (a frozen mount).
// Two Writes of an unchanged folder with the same options give the same manifest digest. On
// error nothing is left in dir.
func Write(root *backing.Dir, dir string, opts WriteOptions) (*Summary, error) {
	if len(opts.Handover) > maxHandover {
		return nil, fmt.Errorf("handover of %d bytes: more than %d", len(opts.Handover), maxHandover)
	}
	created, err := makeEmptyDir(dir)
	if err != nil {
		return nil, err
	}
	s, err := write(root, dir, opts)
	if err != nil {
		removeLayout(dir, created)
		return nil, err
	}
	return s, nil
}

func write(root *backing.Dir, dir string, opts WriteOptions) (*Summary, error) {
	if err := os.MkdirAll(filepath.Join(dir, blobsDir), 0o755); err != nil {
		return nil, err
	}
	var entries int
	chunks, size, err := writeChunks(dir, func(w io.Writer) (err error) {
		if entries, err = walk(root, w, opts.Header); err != nil {
			return fmt.Errorf("archive the folder: %w", err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	cfg := config{Format: FormatVersion, Chunker: thisChunker(), Stream: streamInfo{Size: size, Entries: entries}, Volume: opts.Meta}
	digest, err := writeManifest(dir, &cfg, chunks, opts.Handover)
	if err != nil {
		return nil, err
	}
	return &Summary{Manifest: digest, Files: entries, Bytes: size, Chunks: len(chunks), Meta: opts.Meta, Handover: opts.Handover}, nil
}

// writeChunks cuts the stream fill writes into chunks, stores each as a
// blob of the layout at dir and returns their descriptors in order and the
// stream's size.
func writeChunks(dir string, fill func(io.Writer) error) ([]v1.Descriptor, int64, error) {
	st := newChunkStore(dir)
	c := &cutter{r: newRabin(), free: st.buffer, emit: st.add}
	err := fill(c)
	if err == nil {
		err = c.Close()
	}
	chunks, serr := st.wait()
	switch {
	case serr != nil:
		return nil, 0, serr // fill stopped on it
	case err != nil:
		return nil, 0, err
	}
	return chunks, c.size, nil
}

// chunkStore stores the chunks of a stream as blobs of the layout at dir,
// hashing and writing them beside the walk, and lists their descriptors
// in order.
type chunkStore struct {
	dir   string
	free  chan []byte // the chunk buffers: bounds memory
	jobs  chan chunkJob
	descs []*v1.Descriptor
	wg    sync.WaitGroup
	seen  sync.Map
	mu    sync.Mutex
	err   error // the first failure
}

type chunkJob struct {
	data []byte
	desc *v1.Descriptor
}

func newChunkStore(dir string) *chunkStore {
	// Storing a chunk waits on the file system as much as it hashes, so
	// there are more workers than spare processors.
	workers := runtime.GOMAXPROCS(0) + 1
	s := &chunkStore{dir: dir, free: make(chan []byte, workers+2), jobs: make(chan chunkJob)}
	for range cap(s.free) {
		s.free <- make([]byte, 0, MaxChunk)
	}
	for range workers {
		s.wg.Go(func() {
			for j := range s.jobs {
				d, err := storeBlob(dir, j.data, &s.seen)
				if err != nil {
					s.fail(err)
				}
				*j.desc = v1.Descriptor{MediaType: ChunkMediaType, Size: int64(len(j.data)), Digest: d}
				s.free <- j.data[:0]
			}
		})
	}
	return s
}

// buffer is an empty chunk buffer.
func (s *chunkStore) buffer() []byte { return <-s.free }

// add stores the next chunk; it fails once storing any chunk has.
func (s *chunkStore) add(b []byte) error {
	if err := s.failed(); err != nil {
		s.free <- b[:0]
		return err
	}
	d := new(v1.Descriptor)
	s.descs = append(s.descs, d)
	s.jobs <- chunkJob{b, d}
	return nil
}

func (s *chunkStore) fail(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err == nil {
		s.err = err
	}
}

func (s *chunkStore) failed() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// wait stores the last chunks and returns the descriptors of all.
func (s *chunkStore) wait() ([]v1.Descriptor, error) {
	close(s.jobs)
	s.wg.Wait()
	if s.err != nil {
		return nil, s.err
	}
	if len(s.descs) > maxChunks {
		return nil, fmt.Errorf("the folder makes %d chunks, more than the %d a manifest can list", len(s.descs), maxChunks)
	}
	out := make([]v1.Descriptor, len(s.descs))
	for i, d := range s.descs {
		out[i] = *d
	}
	return out, nil
}

// storeBlob writes b as a blob of the layout at dir unless seen has it.
func storeBlob(dir string, b []byte, seen *sync.Map) (v1.Hash, error) {
	h := hashOf(b)
	if _, dup := seen.LoadOrStore(h, true); dup {
		return h, nil
	}
	return h, os.WriteFile(BlobPath(dir, h), b, 0o644)
}

// writeManifest stores the config, the handover, the manifest and the
// layout's index, and returns the manifest's digest.
func writeManifest(dir string, cfg *config, chunks []v1.Descriptor, handover []byte) (string, error) {
	var seen sync.Map
	cb, err := json.Marshal(cfg)
	if err != nil {
		return "", err
	}
	ch, err := storeBlob(dir, cb, &seen)
	if err != nil {
		return "", err
	}
	m := v1.Manifest{
		SchemaVersion: 2,
		MediaType:     types.OCIManifestSchema1,
		ArtifactType:  ArtifactType,
		Config:        v1.Descriptor{MediaType: ConfigMediaType, Size: int64(len(cb)), Digest: ch},
		Layers:        chunks,
	}
	if handover != nil {
		hh, err := storeBlob(dir, handover, &seen)
		if err != nil {
			return "", err
		}
		m.Layers = append(m.Layers, v1.Descriptor{MediaType: HandoverMediaType, Size: int64(len(handover)), Digest: hh})
	}
	mb, err := json.Marshal(&m)
	if err != nil {
		return "", err
	}
	if len(mb) > MaxManifestSize {
		return "", fmt.Errorf("manifest of %d bytes: more than %d", len(mb), MaxManifestSize)
	}
	return WriteIndex(dir, mb)
}

// errStopped ends a producer (reading an archive file) whose consumer
// failed; the consumer's error is the one reported.
var errStopped = errors.New("stopped")
