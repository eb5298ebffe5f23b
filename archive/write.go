package archive

import (
	"bufio"
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
	"github.com/restic/chunker"

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
	pr, pw := io.Pipe()
	type walked struct {
		entries int
		err     error
	}
	done := make(chan walked, 1)
	go func() {
		bw := bufio.NewWriterSize(pw, 1<<20)
		n, err := walk(root, bw, opts.Header)
		if err == nil {
			err = bw.Flush()
		}
		pw.CloseWithError(err)
		done <- walked{n, err}
	}()
	chunks, size, err := writeChunks(pr, dir)
	pr.CloseWithError(errStopped) // unblocks the walk if chunking failed
	w := <-done
	switch {
	case w.err != nil && !errors.Is(w.err, errStopped):
		return nil, fmt.Errorf("archive the folder: %w", w.err)
	case err != nil:
		return nil, err
	}
	cfg := config{Format: FormatVersion, Chunker: thisChunker(), Stream: streamInfo{Size: size, Entries: w.entries}, Volume: opts.Meta}
	digest, err := writeManifest(dir, &cfg, chunks, opts.Handover)
	if err != nil {
		return nil, err
	}
	return &Summary{Manifest: digest, Files: w.entries, Bytes: size, Chunks: len(chunks), Meta: opts.Meta, Handover: opts.Handover}, nil
}

// writeChunks cuts the stream r into chunks, stores each as a blob of the
// layout at dir and returns their descriptors in order and the stream's
// size. Chunking is sequential; hashing and storing run beside it.
func writeChunks(r io.Reader, dir string) ([]v1.Descriptor, int64, error) {
	workers := max(runtime.GOMAXPROCS(0)-1, 1)
	free := make(chan []byte, workers+2) // the chunk buffers: bounds memory
	for range cap(free) {
		free <- make([]byte, 0, MaxChunk)
	}
	type job struct {
		data []byte
		desc *v1.Descriptor
	}
	jobs := make(chan job)
	var (
		wg      sync.WaitGroup
		seen    sync.Map
		errOnce sync.Once
		werr    error
	)
	for range workers {
		wg.Go(func() {
			for j := range jobs {
				d, err := storeBlob(dir, j.data, &seen)
				if err != nil {
					errOnce.Do(func() { werr = err })
				}
				*j.desc = v1.Descriptor{MediaType: ChunkMediaType, Size: int64(len(j.data)), Digest: d}
				free <- j.data[:0]
			}
		})
	}
	c := chunker.NewWithBoundaries(r, Polynomial, MinChunk, MaxChunk)
	c.SetAverageBits(AverageBits)
	var (
		descs []*v1.Descriptor
		size  int64
		err   error
	)
	for {
		var ch chunker.Chunk
		if ch, err = c.Next(<-free); err != nil {
			break
		}
		d := new(v1.Descriptor)
		descs = append(descs, d)
		size += int64(len(ch.Data))
		jobs <- job{ch.Data, d}
	}
	close(jobs)
	wg.Wait()
	if err != io.EOF {
		return nil, 0, err
	}
	if werr != nil {
		return nil, 0, werr
	}
	if len(descs) > maxChunks {
		return nil, 0, fmt.Errorf("the folder makes %d chunks, more than the %d a manifest can list", len(descs), maxChunks)
	}
	out := make([]v1.Descriptor, len(descs))
	for i, d := range descs {
		out[i] = *d
	}
	return out, size, nil
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

// errStopped ends the walk when chunking failed.
var errStopped = errors.New("chunking stopped")
