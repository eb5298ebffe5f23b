package archive

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"golang.org/x/sys/unix"
)

// The OCI image layout's files.
const (
	layoutFile = "oci-layout"
	indexFile  = "index.json"
	blobsDir   = "blobs/sha256"
	layoutJSON = `{"imageLayoutVersion":"1.0.0"}`
)

// BlobPath is where the layout at dir keeps the blob with digest h.
func BlobPath(dir string, h v1.Hash) string { return filepath.Join(dir, blobsDir, h.Hex) }

// makeEmptyDir makes dir, or accepts an empty one; created says which.
func makeEmptyDir(dir string) (created bool, err error) {
	err = os.Mkdir(dir, 0o700)
	if err == nil {
		return true, nil
	}
	if !errors.Is(err, fs.ErrExist) {
		return false, err
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return false, err
	}
	if len(entries) > 0 {
		return false, fmt.Errorf("%s: %w", dir, ErrNotEmpty)
	}
	return false, nil
}

// removeLayout removes what a failed Write or Unpack left in dir.
func removeLayout(dir string, created bool) {
	if created {
		os.RemoveAll(dir)
		return
	}
	for _, name := range []string{"blobs", indexFile, layoutFile} {
		os.RemoveAll(filepath.Join(dir, name))
	}
}

// WriteIndex stores manifest as a blob of the layout at dir and makes it
// the layout's one manifest (index.json, oci-layout), the last step of
// making a layout whose other blobs are in place: Write's, and a registry
// pull's. It returns the manifest's digest.
func WriteIndex(dir string, manifest []byte) (string, error) {
	h, size, err := v1.SHA256(bytes.NewReader(manifest))
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(filepath.Join(dir, blobsDir), 0o755); err != nil {
		return "", err
	}
	if err := os.WriteFile(BlobPath(dir, h), manifest, 0o644); err != nil {
		return "", err
	}
	idx, err := json.Marshal(&v1.IndexManifest{
		SchemaVersion: 2,
		MediaType:     types.OCIImageIndex,
		Manifests:     []v1.Descriptor{{MediaType: types.OCIManifestSchema1, Size: size, Digest: h, ArtifactType: ArtifactType}},
	})
	if err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(dir, indexFile), idx, 0o644); err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(dir, layoutFile), []byte(layoutJSON), 0o644); err != nil {
		return "", err
	}
	return h.String(), nil
}

// layout is an archive whose manifest and config have been checked; its
// chunks are checked as they are read.
type layout struct {
	dir      string
	digest   v1.Hash // the manifest's
	manifest []byte
	config   v1.Descriptor
	chunks   []v1.Descriptor
	handover *v1.Descriptor
	cfg      config
	// hashed: the chunks' and handover's digests were checked as they were
	// written (Unpack), so reading them again checks only their sizes.
	hashed bool
}

// openLayout reads and checks the layout at dir down to the config.
func openLayout(dir string) (*layout, error) {
	var lv struct {
		Version string `json:"imageLayoutVersion"`
	}
	if err := readJSON(filepath.Join(dir, layoutFile), maxLayoutFile, &lv); err != nil {
		return nil, err
	}
	if lv.Version != "1.0.0" {
		return nil, damaged("%s: version %q", layoutFile, lv.Version)
	}
	var idx v1.IndexManifest
	if err := readJSON(filepath.Join(dir, indexFile), maxIndex, &idx); err != nil {
		return nil, err
	}
	if idx.SchemaVersion != 2 || len(idx.Manifests) != 1 || idx.Subject != nil {
		return nil, damaged("%s: not one manifest", indexFile)
	}
	md := idx.Manifests[0]
	if md.MediaType != types.OCIManifestSchema1 || md.ArtifactType != ArtifactType || md.Size > MaxManifestSize || !plain(&md) {
		return nil, damaged("%s: not a securevol volume manifest", indexFile)
	}
	l := &layout{dir: dir, digest: md.Digest}
	var err error
	if l.manifest, err = readBlob(dir, md, nil); err != nil {
		return nil, err
	}
	if err := l.parseManifest(); err != nil {
		return nil, err
	}
	cb, err := readBlob(dir, l.config, nil)
	if err != nil {
		return nil, err
	}
	if err := l.parseConfig(cb); err != nil {
		return nil, err
	}
	return l, nil
}

// plain: a descriptor with nothing but media type, size and digest (and
// artifact type), sha256 only.
func plain(d *v1.Descriptor) bool {
	return d.Digest.Algorithm == "sha256" && d.Size >= 0 && d.Data == nil && d.URLs == nil && d.Annotations == nil && d.Platform == nil
}

func (l *layout) parseManifest() error {
	var m v1.Manifest
	if err := decodeStrict(l.manifest, &m); err != nil {
		return damaged("manifest: %v", err)
	}
	if m.SchemaVersion != 2 || m.MediaType != types.OCIManifestSchema1 || m.ArtifactType != ArtifactType ||
		m.Subject != nil || m.Annotations != nil {
		return damaged("manifest: not a securevol volume")
	}
	l.config = m.Config
	if l.config.MediaType != ConfigMediaType || l.config.Size > maxConfig || !plain(&l.config) || l.config.ArtifactType != "" {
		return damaged("manifest: config descriptor")
	}
	layers := m.Layers
	if n := len(layers); n > 0 && layers[n-1].MediaType == HandoverMediaType {
		l.handover = &layers[n-1]
		layers = layers[:n-1]
		if l.handover.Size > maxHandover || !plain(l.handover) || l.handover.ArtifactType != "" {
			return damaged("manifest: handover descriptor")
		}
	}
	if len(layers) == 0 || len(layers) > maxChunks {
		return damaged("manifest: %d chunks", len(layers))
	}
	for i := range layers {
		d := &layers[i]
		if d.MediaType != ChunkMediaType || d.Size < 1 || d.Size > MaxChunk || !plain(d) || d.ArtifactType != "" {
			return damaged("manifest: chunk %d", i)
		}
	}
	l.chunks = layers
	return nil
}

func (l *layout) parseConfig(b []byte) error {
	if err := decodeStrict(b, &l.cfg); err != nil {
		return damaged("config: %v", err)
	}
	var size int64
	for _, d := range l.chunks {
		size += d.Size
	}
	c := &l.cfg
	if c.Format != FormatVersion || c.Chunker != thisChunker() || c.Stream.Size != size || c.Stream.Entries < 1 {
		return damaged("config: format %d, chunker %+v, stream %+v for %d bytes of chunks", c.Format, c.Chunker, c.Stream, size)
	}
	return nil
}

// readJSON reads the layout file path (at most max bytes) into v, strictly.
func readJSON(path string, max int64, v any) error {
	b, err := readFile(path, make([]byte, max+1))
	if err != nil {
		return err
	}
	if int64(len(b)) > max {
		return damaged("%s: larger than %d bytes", filepath.Base(path), max)
	}
	if err := decodeStrict(b, v); err != nil {
		return damaged("%s: %v", filepath.Base(path), err)
	}
	return nil
}

// decodeStrict decodes exactly one JSON value with no unknown fields.
func decodeStrict(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("data after the value")
	}
	return nil
}

// blob reads blob d of l and checks it.
func (l *layout) blob(d v1.Descriptor) ([]byte, error) {
	if !l.hashed {
		return readBlob(l.dir, d, nil)
	}
	b, err := readFile(BlobPath(l.dir, d.Digest), make([]byte, d.Size+1))
	if err == nil && int64(len(b)) != d.Size {
		err = damaged("blob %s: %d bytes, not %d", d.Digest, len(b), d.Size)
	}
	return b, err
}

// readBlob reads the blob d of the layout at dir (into buf if it is large
// enough) and checks its size and digest.
func readBlob(dir string, d v1.Descriptor, buf []byte) ([]byte, error) {
	if int64(cap(buf)) < d.Size+1 {
		buf = make([]byte, d.Size+1)
	}
	b, err := readFile(BlobPath(dir, d.Digest), buf[:d.Size+1])
	if err != nil {
		return nil, err
	}
	if int64(len(b)) != d.Size {
		return nil, damaged("blob %s: %d bytes, not %d", d.Digest, len(b), d.Size)
	}
	if hashOf(b) != d.Digest {
		return nil, damaged("blob %s does not match its digest", d.Digest)
	}
	return b, nil
}

func hashOf(b []byte) v1.Hash {
	sum := sha256.Sum256(b)
	return v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(sum[:])}
}

// readFile reads the file path into buf, up to its length. The layout is
// not trusted: a symlink, FIFO or device there is refused, not followed,
// opened or waited on; a missing file is damage.
func readFile(path string, buf []byte) ([]byte, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC|unix.O_NOCTTY, 0)
	switch {
	case err == unix.ENOENT:
		return nil, damaged("%s is missing", filepath.Base(path))
	case err == unix.ELOOP:
		return nil, damaged("%s is a symlink", filepath.Base(path))
	case err != nil:
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	f := os.NewFile(uintptr(fd), path)
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, damaged("%s is not a regular file", filepath.Base(path))
	}
	n, err := io.ReadFull(f, buf)
	if err != nil && err != io.ErrUnexpectedEOF && err != io.EOF {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return buf[:n], nil
}
