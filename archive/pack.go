package archive

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// A packed archive (docs/FORMAT.md, "Archive files") is a tar file of the
// layout's files, each a regular file in USTAR format with fixed mode,
// owner and time: oci-layout, index.json, then the blobs (manifest,
// config, chunks in stream order, handover), each once.

// Pack writes the layout at dir as one tar file (the `export -o FILE` format). It checks the
// layout's manifest and config and every blob's size; digests are Unpack's to check. Blobs go
// from their files to w without passing through memory when w is a file (copy_file_range).
func Pack(dir string, w io.Writer) error {
	l, err := openLayout(dir)
	if err != nil {
		return err
	}
	for _, name := range []string{layoutFile, indexFile} {
		max := int64(maxLayoutFile)
		if name == indexFile {
			max = maxIndex
		}
		b, err := readFile(filepath.Join(dir, name), make([]byte, max+1))
		if err != nil {
			return err
		}
		if int64(len(b)) > max {
			return damaged("%s: larger than %d bytes", name, max)
		}
		if err := packEntry(w, name, int64(len(b)), bytes.NewReader(b)); err != nil {
			return err
		}
	}
	seen := map[v1.Hash]bool{}
	for _, d := range l.blobs() {
		if seen[d.Digest] {
			continue
		}
		seen[d.Digest] = true
		if err := packBlob(w, dir, d); err != nil {
			return err
		}
	}
	_, err = w.Write(make([]byte, 2*blockSize)) // the end of the archive, as tar.Writer.Close writes it
	return err
}

// blobs lists l's blobs in the order Pack writes them.
func (l *layout) blobs() []v1.Descriptor {
	md := v1.Descriptor{Digest: l.digest, Size: int64(len(l.manifest))}
	out := append([]v1.Descriptor{md, l.config}, l.chunks...)
	if l.handover != nil {
		out = append(out, *l.handover)
	}
	return out
}

// packBlob writes the blob d of the layout at dir to w, checking its size.
func packBlob(w io.Writer, dir string, d v1.Descriptor) error {
	f, err := openRegular(BlobPath(dir, d.Digest))
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if fi.Size() != d.Size {
		return damaged("blob %s: %d bytes, not %d", d.Digest, fi.Size(), d.Size)
	}
	// A plain *os.File (not wrapped in a LimitedReader) lets w's ReadFrom use copy_file_range.
	return packEntry(w, blobsDir+"/"+d.Digest.Hex, d.Size, f)
}

// blockSize is tar's block: each entry's header is one, its contents are
// padded to whole ones.
const blockSize = 512

// packEntry writes a tar entry name of size bytes read from r to w: a
// ustar header with fixed mode, owner and time (encoded by tar.Writer, so
// the bytes are what it would write), the contents and their padding.
// Fewer than size bytes in r is damage (the file shrank).
func packEntry(w io.Writer, name string, size int64, r io.Reader) error {
	var hdr bytes.Buffer
	h := &tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: size, ModTime: time.Unix(0, 0), Format: tar.FormatUSTAR}
	if err := tar.NewWriter(&hdr).WriteHeader(h); err != nil {
		return err
	}
	if _, err := w.Write(hdr.Bytes()); err != nil {
		return err
	}
	n, err := io.Copy(w, r)
	if err != nil {
		return err
	}
	if n != size {
		return damaged("%s: %d bytes, not %d", name, n, size)
	}
	_, err = w.Write(make([]byte, -size&(blockSize-1)))
	return err
}

// Unpack reads a packed archive strictly into a new layout dir (which must not exist or be
// empty): only oci-layout, index.json and blobs/sha256/<hex>, regular files of bounded sizes, each
// blob matching its name, each name once. Then it checks the layout as Open does. On error
// nothing is left in dir.
func Unpack(r io.Reader, dir string) (*Summary, error) {
	created, err := makeEmptyDir(dir)
	if err != nil {
		return nil, err
	}
	s, err := unpack(r, dir)
	if err != nil {
		removeLayout(dir, created)
		return nil, err
	}
	return s, nil
}

func unpack(r io.Reader, dir string) (*Summary, error) {
	if err := os.MkdirAll(filepath.Join(dir, blobsDir), 0o755); err != nil {
		return nil, err
	}
	if err := unpackFiles(r, dir); err != nil {
		return nil, err
	}
	l, err := openLayout(dir)
	if err != nil {
		return nil, err
	}
	l.hashed = true // each blob was checked against its name as it was stored
	return l.check()
}

// unpackFiles stores the files of the archive file r in dir. Reading is
// sequential; checking and storing each blob run beside it.
func unpackFiles(r io.Reader, dir string) error {
	workers := runtime.GOMAXPROCS(0)
	free := make(chan []byte, workers+1) // bounds memory
	for range cap(free) {
		free <- make([]byte, MaxBlob)
	}
	type job struct {
		name string
		b    []byte
	}
	jobs := make(chan job)
	var (
		wg   sync.WaitGroup
		once sync.Once
		werr error
		stop = make(chan struct{})
	)
	fail := func(err error) { once.Do(func() { werr = err; close(stop) }) }
	for range workers {
		wg.Go(func() {
			for j := range jobs {
				if err := unpackFile(dir, j.name, j.b); err != nil {
					fail(err)
				}
				free <- j.b[:cap(j.b)]
			}
		})
	}
	err := readFiles(r, func(h *tar.Header, tr io.Reader) error {
		b := <-free
		if _, err := io.ReadFull(tr, b[:h.Size]); err != nil {
			free <- b
			return readErr(err)
		}
		select {
		case jobs <- job{h.Name, b[:h.Size]}:
			return nil
		case <-stop:
			free <- b
			return errStopped
		}
	})
	close(jobs)
	wg.Wait()
	if werr != nil {
		return werr
	}
	return err
}

// readFiles calls fn for each entry of the archive file r, checked.
func readFiles(r io.Reader, fn func(h *tar.Header, contents io.Reader) error) error {
	tr := tar.NewReader(r)
	seen := map[string]bool{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return readErr(err)
		}
		max, err := unpackLimit(h.Name)
		if err != nil {
			return err
		}
		if h.Typeflag != tar.TypeReg || h.Size > max || seen[h.Name] || len(seen) >= maxChunks+5 {
			return damaged("archive file: entry %q", h.Name)
		}
		seen[h.Name] = true // at most the chunks and 5 files: the layout's 2, manifest, config, handover
		if err := fn(h, tr); err != nil {
			return err
		}
	}
}

// readErr: an archive file that ends early or is not tar is damaged.
func readErr(err error) error {
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, tar.ErrHeader) {
		return damaged("archive file: %v", err)
	}
	return fmt.Errorf("read the archive file: %w", err)
}

// unpackFile checks a blob against its name and stores the file name.
func unpackFile(dir, name string, b []byte) error {
	if hexName, ok := strings.CutPrefix(name, blobsDir+"/"); ok {
		if sum := sha256.Sum256(b); hex.EncodeToString(sum[:]) != hexName {
			return damaged("blob %s does not match its digest", hexName)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
		return fmt.Errorf("unpack %s: %w", name, err)
	}
	return nil
}

// unpackLimit is the largest size of the layout file name, or ErrDamaged
// for a name that is none.
func unpackLimit(name string) (int64, error) {
	switch name {
	case layoutFile:
		return maxLayoutFile, nil
	case indexFile:
		return maxIndex, nil
	}
	rest, ok := strings.CutPrefix(name, blobsDir+"/")
	if _, err := v1.NewHash("sha256:" + rest); !ok || err != nil {
		return 0, damaged("archive file: entry %q", name)
	}
	return MaxBlob, nil
}
