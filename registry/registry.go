// Package registry moves volume archives (package archive) to and from OCI
// registries, as artifacts whose blobs are the archive's own: the config,
// the chunks of the folder's ciphertext and the handover. A registry (or
// anyone who reads its storage) learns what the archive holds in the clear
// and nothing else (docs/FORMAT.md, "Volume archives").
//
// Credentials are the engine's: ~/.docker/config.json and its credential
// helpers. Chunks the registry has already (from an earlier push of the
// same volume) are not uploaded again; every blob pulled is checked
// against its digest before it is kept.
package registry

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/securevol/securevol/archive"
)

// Options tune a transfer.
type Options struct {
	// Insecure allows plain HTTP (and unverified TLS) to the registry.
	// Loopback and private addresses get plain HTTP without it.
	Insecure bool
}

// PushReport says what a push sent: blobs (config, chunks, handover; the
// manifest is not counted) uploaded or skipped because the registry had
// them, their bytes, and the manifest's digest.
type PushReport struct {
	Uploaded, Skipped         int
	UploadedBytes, TotalBytes int64
	Digest                    string
}

// transfers is how many blobs move at once.
const transfers = 4

func (o Options) remote(ctx context.Context) []remote.Option {
	return []remote.Option{remote.WithContext(ctx), remote.WithAuthFromKeychain(authn.DefaultKeychain), remote.WithJobs(transfers)}
}

func (o Options) parse(ref string) (name.Reference, error) {
	var opts []name.Option
	if o.Insecure {
		opts = append(opts, name.Insecure)
	}
	r, err := name.ParseReference(ref, opts...)
	if err != nil {
		return nil, fmt.Errorf("reference %q: %w", ref, err)
	}
	return r, nil
}

// Push uploads the archive layout at dir (checked first, as archive.Open does) to ref (e.g.
// 127.0.0.1:5000/backups/db:2026-11-29) with the engine's credentials. Blobs the registry has are
// not uploaded again.
func Push(ctx context.Context, dir, ref string, opts Options) (*PushReport, error) {
	r, err := opts.parse(ref)
	if err != nil {
		return nil, err
	}
	s, err := archive.Open(dir)
	if err != nil {
		return nil, err
	}
	mh, err := v1.NewHash(s.Manifest)
	if err != nil {
		return nil, err
	}
	raw, err := os.ReadFile(archive.BlobPath(dir, mh))
	if err != nil {
		return nil, err
	}
	m, err := v1.ParseManifest(bytes.NewReader(raw))
	if err != nil {
		return nil, err
	}
	ropts := opts.remote(ctx)
	pusher, err := remote.NewPusher(ropts...)
	if err != nil {
		return nil, err
	}
	puller, err := remote.NewPuller(ropts...)
	if err != nil {
		return nil, err
	}
	rep := &PushReport{Digest: s.Manifest}
	var mu sync.Mutex
	err = forEachBlob(m, func(d v1.Descriptor) error {
		uploaded, err := pushBlob(ctx, pusher, puller, r.Context(), dir, d)
		mu.Lock()
		defer mu.Unlock()
		rep.TotalBytes += d.Size
		if uploaded {
			rep.Uploaded++
			rep.UploadedBytes += d.Size
		} else {
			rep.Skipped++
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("push %s: %w", ref, err)
	}
	if err := pusher.Put(ctx, r, rawManifest(raw)); err != nil {
		return nil, fmt.Errorf("push %s: manifest: %w", ref, err)
	}
	return rep, nil
}

// rawManifest is a manifest to put as it is.
type rawManifest []byte

func (m rawManifest) RawManifest() ([]byte, error)        { return m, nil }
func (m rawManifest) MediaType() (types.MediaType, error) { return types.OCIManifestSchema1, nil }

// pushBlob uploads blob d of the layout at dir unless repo has it.
func pushBlob(ctx context.Context, pusher *remote.Pusher, puller *remote.Puller, repo name.Repository, dir string, d v1.Descriptor) (bool, error) {
	l, err := puller.Layer(ctx, repo.Digest(d.Digest.String()))
	if err != nil {
		return false, err
	}
	if ok, err := partial.Exists(l); err == nil && ok {
		return false, nil
	}
	b, err := os.ReadFile(archive.BlobPath(dir, d.Digest))
	if err != nil {
		return false, err
	}
	return true, pusher.Upload(ctx, repo, static.NewLayer(b, d.MediaType))
}

// forEachBlob calls fn for every blob of m once (not the manifest), a
// few at a time, and returns the first error.
func forEachBlob(m *v1.Manifest, fn func(v1.Descriptor) error) error {
	seen := map[v1.Hash]bool{}
	var (
		wg   sync.WaitGroup
		sem  = make(chan struct{}, transfers)
		once sync.Once
		ferr error
	)
	for _, d := range append([]v1.Descriptor{m.Config}, m.Layers...) {
		if seen[d.Digest] {
			continue
		}
		seen[d.Digest] = true
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			if err := fn(d); err != nil {
				once.Do(func() { ferr = err })
			}
		})
	}
	wg.Wait()
	return ferr
}

// Pull downloads ref into a new layout dir (which must not exist), checking every blob against
// its digest as it arrives, then checks the layout as archive.Open does and returns what that says.
// On error nothing is left in dir.
func Pull(ctx context.Context, ref, dir string, opts Options) (*archive.Summary, error) {
	if err := os.Mkdir(dir, 0o700); err != nil {
		return nil, err
	}
	s, err := pull(ctx, ref, dir, opts)
	if err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("pull %s: %w", ref, err)
	}
	return s, nil
}

func pull(ctx context.Context, ref, dir string, opts Options) (*archive.Summary, error) {
	r, err := opts.parse(ref)
	if err != nil {
		return nil, err
	}
	puller, err := remote.NewPuller(opts.remote(ctx)...)
	if err != nil {
		return nil, err
	}
	desc, err := puller.Get(ctx, r)
	if err != nil {
		return nil, err
	}
	if desc.MediaType != types.OCIManifestSchema1 || desc.ArtifactType != archive.ArtifactType || len(desc.Manifest) > archive.MaxManifestSize {
		return nil, fmt.Errorf("%w: not a securevol volume (%s, artifact type %q)", archive.ErrDamaged, desc.MediaType, desc.ArtifactType)
	}
	m, err := v1.ParseManifest(bytes.NewReader(desc.Manifest))
	if err != nil {
		return nil, fmt.Errorf("%w: manifest: %v", archive.ErrDamaged, err)
	}
	err = forEachBlob(m, func(d v1.Descriptor) error {
		return pullBlob(ctx, puller, r.Context(), dir, d)
	})
	if err != nil {
		return nil, err
	}
	if _, err := archive.WriteIndex(dir, desc.Manifest); err != nil {
		return nil, err
	}
	return archive.Open(dir)
}

// pullBlob downloads blob d of repo into the layout at dir. A blob that is
// not what its digest says is damage; a transfer that broke off is not.
func pullBlob(ctx context.Context, puller *remote.Puller, repo name.Repository, dir string, d v1.Descriptor) error {
	if d.Size < 0 || d.Size > archive.MaxBlob || d.Digest.Algorithm != "sha256" {
		return fmt.Errorf("%w: blob %s of %d bytes", archive.ErrDamaged, d.Digest, d.Size)
	}
	l, err := puller.Layer(ctx, repo.Digest(d.Digest.String()))
	if err != nil {
		return err
	}
	rc, err := l.Compressed()
	if err != nil {
		return err
	}
	defer rc.Close()
	var buf bytes.Buffer
	_, err = io.Copy(&buf, io.LimitReader(rc, d.Size+1))
	sum := sha256.Sum256(buf.Bytes())
	match := int64(buf.Len()) == d.Size && hex.EncodeToString(sum[:]) == d.Digest.Hex
	switch {
	case err != nil && (!match && !transient(err)):
		return fmt.Errorf("%w: blob %s: %v", archive.ErrDamaged, d.Digest, err)
	case err != nil:
		return fmt.Errorf("blob %s: %w", d.Digest, err)
	case !match:
		return fmt.Errorf("%w: blob %s does not match its digest", archive.ErrDamaged, d.Digest)
	}
	path := archive.BlobPath(dir, d.Digest)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, buf.Bytes(), 0o644)
}

// transient: the error is the network's or the caller's, not the blob's.
func transient(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}
