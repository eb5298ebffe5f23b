package archive

import (
	"archive/tar"
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
// layout's manifest and config and every blob's size; digests are Unpack's to check.
func Pack(dir string, w io.Writer) error {
	l, err := openLayout(dir)
	if err != nil {
		return err
	}
	tw := tar.NewWriter(w)
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
		if err := packFile(tw, name, b); err != nil {
			return err
		}
	}
	buf := make([]byte, MaxBlob)
	seen := map[v1.Hash]bool{}
	for _, d := range l.blobs() {
		if seen[d.Digest] {
			continue
		}
		seen[d.Digest] = true
		b, err := readFile(BlobPath(dir, d.Digest), buf[:d.Size+1])
		if err != nil {
			return err
		}
		if int64(len(b)) != d.Size {
			return damaged("blob %s: %d bytes, not %d", d.Digest, len(b), d.Size)
		}
		if err := packFile(tw, blobsDir+"/"+d.Digest.Hex, b); err != nil {
			return err
		}
	}
	return tw.Close()
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

func packFile(tw *tar.Writer, name string, b []byte) error {
	h := &tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: int64(len(b)), ModTime: time.Unix(0, 0), Format: tar.FormatUSTAR}
	if err := tw.WriteHeader(h); err != nil {
		return err
	}
	_, err := tw.Write(b)
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
