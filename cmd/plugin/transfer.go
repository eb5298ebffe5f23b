package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"filippo.io/age"
	"github.com/docker/go-units"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/securevol/securevol/archive"
	"github.com/securevol/securevol/daemon"
	"github.com/securevol/securevol/handover"
	"github.com/securevol/securevol/keyfile"
	"github.com/securevol/securevol/registry"
)

// Export, import, clone, push and pull. The daemon snapshots and restores
// (it holds the keys and the volumes); this side moves the archive between
// the state dir and a file or a registry, since a managed plugin has no
// network. Neither side decrypts file contents, except the daemon's check
// of every block on import.

// sealFlags say to whom an export's key is sealed.
type sealFlags struct {
	recipients     []string
	recipientFiles []string
	passFile       string
}

func (f *sealFlags) register(cmd *cobra.Command) {
	fs := cmd.Flags()
	fs.StringArrayVar(&f.recipients, "recipient", nil, "seal the volume's key to this age public key (age1...; repeatable): only its identity opens the archive, on any host")
	fs.StringArrayVar(&f.recipientFiles, "recipients-file", nil, "seal it to every age public key in this file (one per line, # comments; repeatable)")
	fs.StringVar(&f.passFile, "passphrase-file", "", "seal it to the export passphrase in this file (age scrypt), instead of public keys")
}

// request is the export request the flags make for the volume name.
func (f *sealFlags) request(name string) (daemon.ExportRequest, error) {
	req := daemon.ExportRequest{Name: name}
	if f.passFile != "" && len(f.recipients)+len(f.recipientFiles) > 0 {
		return req, usageError{errors.New("give recipients or --passphrase-file, not both (age seals to a passphrase alone)")}
	}
	lines := append([]string(nil), f.recipients...)
	for _, p := range f.recipientFiles {
		b, err := readSmallFile(p)
		if err != nil {
			return req, err
		}
		lines = append(lines, string(b))
	}
	req.Recipients = strings.Join(lines, "\n")
	if f.passFile != "" {
		pass, err := keyfile.ReadPassphraseFile(f.passFile)
		if err != nil {
			return req, err
		}
		req.Passphrase = pass
	}
	return req, nil
}

// openFlags say what opens an archive's handover.
type openFlags struct {
	identities []string
	passFile   string
}

func (f *openFlags) register(cmd *cobra.Command) {
	fs := cmd.Flags()
	fs.StringArrayVar(&f.identities, "identity", nil, "age identity file (AGE-SECRET-KEY-..., mode 0600) of a recipient the archive was sealed to (repeatable)")
	fs.StringVar(&f.passFile, "passphrase-file", "", "the export passphrase the archive was sealed to, in this file")
}

// request is the import request the flags make for the volume name.
func (f *openFlags) request(name string) (daemon.ImportRequest, error) {
	req := daemon.ImportRequest{Name: name}
	var ids []string
	for _, p := range f.identities {
		b, err := keyfile.ReadSecretFile(p)
		if err != nil {
			return req, err
		}
		ids = append(ids, string(b))
		clear(b)
	}
	req.Identities = strings.Join(ids, "\n")
	if f.passFile != "" {
		pass, err := keyfile.ReadPassphraseFile(f.passFile)
		if err != nil {
			return req, err
		}
		req.Passphrase = pass
	}
	return req, nil
}

// checkOpens tells at once, before the daemon restores anything, whether
// req opens the handover of the archive sum describes. The daemon checks
// again.
func checkOpens(sum *archive.Summary, req daemon.ImportRequest) error {
	given := req.Identities != "" || len(req.Passphrase) > 0
	switch {
	case sum.Handover == nil && given:
		return fmt.Errorf("the archive has no handover: it opens only with the master key it was exported under: %w", daemon.ErrNoHandover)
	case sum.Handover == nil:
		return nil
	case !given:
		return fmt.Errorf("the archive's key is sealed to age recipients or a passphrase: %w", daemon.ErrNeedIdentity)
	}
	var ids []age.Identity
	if req.Identities != "" {
		parsed, err := age.ParseIdentities(strings.NewReader(req.Identities))
		if err != nil {
			return usageError{errors.New("an --identity file holds no valid age identity")}
		}
		ids = parsed
	}
	if len(req.Passphrase) > 0 {
		id, err := age.NewScryptIdentity(string(req.Passphrase))
		if err != nil {
			return err
		}
		ids = append(ids, id)
	}
	_, err := handover.Open(sum.Handover, ids)
	return err
}

func newVolumeExportCmd(s streams, stateDir *string) *cobra.Command {
	var out string
	var seal sealFlags
	cmd := &cobra.Command{
		Use:   "export NAME",
		Short: "Write a snapshot of a volume's ciphertext to an archive file",
		Long: `Write a point-in-time snapshot of a volume to an archive file (a tar of an
OCI image layout: the encrypted backing folder and its header, chunked and
hashed; docs/FORMAT.md). The volume may be in use: its writes are held while
the daemon copies it, as a crash at that moment would leave it. Nothing is
decrypted.

Without recipients the archive opens only where the daemon's master key is
(this host, or hosts that share the key). With --recipient/--recipients-file
(age public keys) or --passphrase-file, the volume's key is sealed to them
instead, and the archive can be imported on any host that has a matching
identity or the passphrase; the master key never leaves this host.

With -o - (or no -o, if the output is not a terminal) the archive goes to
standard output.`,
		Args: exactArgs("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			req, err := seal.request(args[0])
			if err != nil {
				return err
			}
			defer clear(req.Passphrase)
			w, done, err := archiveOutput(s, out)
			if err != nil {
				return err
			}
			var res *daemon.ExportResult
			err = withDaemon(*stateDir, func(c *daemon.Client) (err error) {
				res, err = exportTo(cmd.Context(), c, *stateDir, req, func(dir string) error { return archive.Pack(dir, w) })
				return err
			})
			if derr := done(err == nil); derr != nil {
				return derr
			}
			if err != nil {
				return err
			}
			msg := s.out
			if out == "" || out == "-" {
				msg = s.err
			}
			fmt.Fprintf(msg, "exported %s: %d entries, %s in %d chunks, manifest %s; %s\n", args[0], res.Files,
				units.BytesSize(float64(res.Bytes)), res.Chunks, res.Manifest, sealedTo(res.Handover))
			return nil
		},
	}
	cmd.Flags().StringVarP(&out, "output", "o", "", "the archive file to write (- for standard output); written whole or not at all")
	seal.register(cmd)
	return cmd
}

func sealedTo(h bool) string {
	if h {
		return "its key is sealed to the recipients or the passphrase"
	}
	return "its key is wrapped under this daemon's master key (import it where that key is)"
}

// exportTo has the daemon export req, runs use on the archive layout and
// deletes it.
func exportTo(ctx context.Context, c *daemon.Client, stateDir string, req daemon.ExportRequest, use func(dir string) error) (*daemon.ExportResult, error) {
	res, err := c.Export(ctx, req)
	if err != nil {
		return nil, err
	}
	dir, err := daemon.TransferPath(stateDir, daemon.ExportsDir, res.Dir)
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	if err := use(dir); err != nil {
		return nil, err
	}
	return res, nil
}

// archiveOutput is where an export goes: standard output (not a
// terminal), or a temporary file next to out that done(true) renames
// into place and done(false) deletes (its error is then nil).
func archiveOutput(s streams, out string) (io.Writer, func(ok bool) error, error) {
	if out == "" || out == "-" {
		if f, ok := s.out.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
			return nil, nil, usageError{errors.New("refusing to write an archive to a terminal: give -o FILE, or redirect the output")}
		}
		return s.out, func(bool) error { return nil }, nil
	}
	f, err := os.CreateTemp(filepath.Dir(out), "."+filepath.Base(out)+".*")
	if err != nil {
		return nil, nil, err
	}
	done := func(ok bool) error {
		err := f.Sync()
		if err2 := f.Close(); err == nil {
			err = err2
		}
		if ok && err == nil {
			err = os.Rename(f.Name(), out)
		}
		if !ok || err != nil {
			os.Remove(f.Name())
		}
		if !ok {
			return nil
		}
		return err
	}
	return f, done, nil
}

func newVolumeImportCmd(s streams, stateDir *string) *cobra.Command {
	var open openFlags
	cmd := &cobra.Command{
		Use:   "import NAME FILE",
		Short: "Make a new volume from an archive file (export's)",
		Long: `Make the new volume NAME from an archive file that 'securevol volume export'
wrote (- reads standard input), on this host or another. The daemon checks
every blob, name and block of it before the volume exists, and re-wraps its
key under its own master key: a damaged, truncated or tampered archive is
refused and nothing is left behind. Nothing is decrypted but for that check.

An archive sealed to age recipients opens with --identity (a recipient's
identity file); one sealed to a passphrase with --passphrase-file. An
archive without either opens only where the master key it was exported
under is.`,
		Args: exactArgs("NAME", "FILE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			req, err := open.request(args[0])
			if err != nil {
				return err
			}
			defer clear(req.Passphrase)
			in, err := archiveInput(s, args[1])
			if err != nil {
				return err
			}
			defer in.Close()
			return withDaemon(*stateDir, func(c *daemon.Client) error {
				res, err := importFrom(cmd.Context(), c, *stateDir, req, func(dir string) (*archive.Summary, error) { return archive.Unpack(in, dir) })
				if err != nil {
					return err
				}
				fmt.Fprintf(s.out, "imported %s (exported as %s): %d entries, every block authenticated\n", args[0], res.Source, res.Files)
				return nil
			})
		},
	}
	open.register(cmd)
	return cmd
}

// archiveInput opens the archive file path, or standard input for -.
func archiveInput(s streams, path string) (io.ReadCloser, error) {
	if path == "-" {
		return io.NopCloser(s.in), nil
	}
	return os.Open(path)
}

// importFrom has fetch write an archive layout into a new imports folder,
// checks that req opens its handover, has the daemon import it, and
// deletes the folder.
func importFrom(ctx context.Context, c *daemon.Client, stateDir string, req daemon.ImportRequest, fetch func(dir string) (*archive.Summary, error)) (*daemon.ImportResult, error) {
	dir, rel, err := daemon.NewTransferDir(stateDir, daemon.ImportsDir)
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	sum, err := fetch(dir)
	if err != nil {
		return nil, err
	}
	if err := checkOpens(sum, req); err != nil {
		return nil, err
	}
	req.Dir = rel
	return c.Import(ctx, req)
}

func newVolumeCloneCmd(s streams, stateDir *string) *cobra.Command {
	return &cobra.Command{
		Use:   "clone SOURCE NAME",
		Short: "Make a new volume with the contents of another",
		Long: `Make the new volume NAME with the contents of SOURCE, which may be in use
(its writes are held while it is copied, as for export). The copy is a volume
of its own: same options, its own name and directory ID in its header; it
shares the source's volume key, so the two are encrypted alike.`,
		Args: exactArgs("SRC", "DST"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withDaemon(*stateDir, func(c *daemon.Client) error {
				res, err := c.Clone(cmd.Context(), args[0], args[1])
				if err != nil {
					return err
				}
				fmt.Fprintf(s.out, "cloned %s to %s: %d entries, %s\n", args[0], args[1], res.Files, units.BytesSize(float64(res.Bytes)))
				return nil
			})
		},
	}
}

func newVolumePushCmd(s streams, stateDir *string) *cobra.Command {
	var seal sealFlags
	var insecure bool
	cmd := &cobra.Command{
		Use:   "push NAME REF",
		Short: "Store a snapshot of a volume in an OCI registry",
		Long: `Store a snapshot of the volume NAME (as export takes it) in an OCI registry
as an artifact, e.g. registry.example.com/backups/db:2026-11-29, with the
engine's credentials (docker login; ~/.docker/config.json and its credential
helpers). Its chunks are cut by content, so a second push of a volume that
changed a little uploads little. The registry holds ciphertext only; the
recipient flags are export's.`,
		Args: exactArgs("NAME", "REF"),
		RunE: func(cmd *cobra.Command, args []string) error {
			req, err := seal.request(args[0])
			if err != nil {
				return err
			}
			defer clear(req.Passphrase)
			return withDaemon(*stateDir, func(c *daemon.Client) error {
				var rep *registry.PushReport
				res, err := exportTo(cmd.Context(), c, *stateDir, req, func(dir string) (err error) {
					rep, err = registry.Push(cmd.Context(), dir, args[1], registry.Options{Insecure: insecure})
					return err
				})
				if err != nil {
					return err
				}
				fmt.Fprintf(s.out, "pushed %s to %s@%s: uploaded %d of %d blobs (%s of %s); %s\n", args[0], args[1], rep.Digest,
					rep.Uploaded, rep.Uploaded+rep.Skipped, units.BytesSize(float64(rep.UploadedBytes)), units.BytesSize(float64(rep.TotalBytes)), sealedTo(res.Handover))
				return nil
			})
		},
	}
	seal.register(cmd)
	cmd.Flags().BoolVar(&insecure, "insecure", false, "allow plain HTTP and unverified TLS to the registry (loopback and private addresses use plain HTTP anyway)")
	return cmd
}

func newVolumePullCmd(s streams, stateDir *string) *cobra.Command {
	var open openFlags
	var insecure bool
	cmd := &cobra.Command{
		Use:   "pull REF NAME",
		Short: "Make a new volume from a snapshot in an OCI registry (push's)",
		Long: `Make the new volume NAME from an artifact that 'securevol volume push'
stored at REF, with the engine's credentials. Every blob is checked against
its digest as it arrives and the daemon authenticates every block before the
volume exists, as for import; the identity flags are import's.`,
		Args: exactArgs("REF", "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			req, err := open.request(args[1])
			if err != nil {
				return err
			}
			defer clear(req.Passphrase)
			return withDaemon(*stateDir, func(c *daemon.Client) error {
				res, err := importFrom(cmd.Context(), c, *stateDir, req, func(dir string) (*archive.Summary, error) {
					return registry.Pull(cmd.Context(), args[0], dir, registry.Options{Insecure: insecure})
				})
				if err != nil {
					return err
				}
				fmt.Fprintf(s.out, "pulled %s into %s (exported as %s): %d entries, every block authenticated\n", args[0], args[1], res.Source, res.Files)
				return nil
			})
		},
	}
	open.register(cmd)
	cmd.Flags().BoolVar(&insecure, "insecure", false, "allow plain HTTP and unverified TLS to the registry (loopback and private addresses use plain HTTP anyway)")
	return cmd
}

// maxRecipientsFile bounds a recipients file read (the daemon takes
// requests of at most 64 KiB).
const maxRecipientsFile = 64 << 10

// readSmallFile reads a file of public data (a recipients file), bounded.
func readSmallFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxRecipientsFile+1))
	if err == nil && len(b) > maxRecipientsFile {
		err = fmt.Errorf("%s: larger than %d bytes", path, maxRecipientsFile)
	}
	return b, err
}
