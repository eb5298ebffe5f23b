package main

import (
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/sirupsen/logrus"
	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/securevol/securevol/backing"
	"github.com/securevol/securevol/cryptfs"
	"github.com/securevol/securevol/crypto"
	"github.com/securevol/securevol/fsck"
	"github.com/securevol/securevol/internal/logging"
	"github.com/securevol/securevol/keysource"
)

// The tools work on one encrypted directory, without the daemon: init,
// mount and fsck. Each takes the master key from the key flags or, with
// none given on a terminal, from a typed passphrase.

const keyToolsNote = `
The master key comes from --key-file, --passphrase-file or --key-command;
with none of them, on a terminal, a passphrase is asked for.`

// keyedCmd makes a tool command: its key flags, and run getting the key
// source they name.
func keyedCmd(s streams, cmd *cobra.Command, confirm bool, run func(ks crypto.KeySource, args []string) error) *cobra.Command {
	var keys keyFlags
	keys.register(cmd.Flags(), "", "")
	cmd.Long = cmd.Short + "." + keyToolsNote
	cmd.RunE = func(c *cobra.Command, args []string) error {
		spec, err := keys.spec(c.Flags(), keysource.Terminal(s.in, s.err))
		if err != nil {
			return err
		}
		spec.Confirm = confirm
		secret, err := spec.Load()
		if err != nil {
			return err
		}
		defer secret.Clear()
		ks, err := secret.KeySource()
		if err != nil {
			return err
		}
		return run(ks, args)
	}
	return cmd
}

func newInitCmd(s streams) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "init DIR",
		Short: "Make DIR an encrypted directory",
		Args:  exactArgs("DIR"),
	}
	return keyedCmd(s, cmd, true, func(ks crypto.KeySource, args []string) error {
		dir := args[0]
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return err
		}
		var h *crypto.Header
		err := backing.WithRoot(dir, func(root *backing.Dir) (err error) {
			h, _, err = backing.InitVolume(root, ks, "", nil)
			return err
		})
		if err != nil {
			return fmt.Errorf("init %s: %w", dir, err)
		}
		fmt.Fprintf(s.err, "initialised encrypted directory %s (id %s, format %d)\n", dir, h.ID, h.Format)
		return nil
	})
}

func newFsckCmd(s streams) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "fsck DIR",
		Short: "Authenticate every name and block of the encrypted directory DIR",
		Args:  exactArgs("DIR"),
	}
	return keyedCmd(s, cmd, false, func(ks crypto.KeySource, args []string) error {
		keys, err := openVolume(args[0], ks)
		if err != nil {
			return err
		}
		rep, err := fsck.Check(args[0], keys, func(p fsck.Problem) { fmt.Fprintln(s.out, p) })
		if err != nil {
			return err
		}
		fmt.Fprintf(s.err, "%d directories, %d files, %d symlinks, %d special files, %d blocks checked; %d problems\n",
			rep.Dirs, rep.Files, rep.Symlinks, rep.Specials, rep.Blocks, rep.Problems)
		if rep.Problems > 0 {
			return errors.New("the directory has damaged or tampered entries (listed above)")
		}
		return nil
	})
}

// mountFlags are `securevol mount`'s own flags.
type mountFlags struct {
	debug, allowOther bool
	maxWrite          int
}

func newMountCmd(s streams) *cobra.Command {
	var f mountFlags
	cmd := &cobra.Command{
		Use:   "mount DIR MOUNTPOINT",
		Short: "Mount the encrypted directory DIR on MOUNTPOINT, in the foreground (SIGINT or SIGTERM unmounts)",
		Args:  exactArgs("DIR", "MOUNTPOINT"),
	}
	fs := cmd.Flags()
	fs.BoolVar(&f.debug, "debug", false, "log every FUSE request")
	fs.BoolVar(&f.allowOther, "allow-other", true, "let other users in (with default_permissions)")
	fs.IntVar(&f.maxWrite, "max-write", 0, "largest FUSE read/write request in bytes, 64 KiB to 1 MiB in steps of 4 KiB (default 1 MiB)")
	cmd.PreRunE = func(*cobra.Command, []string) error { return f.check() }
	return keyedCmd(s, cmd, false, func(ks crypto.KeySource, args []string) error {
		return f.mount(s, ks, args[0], args[1])
	})
}

// check refuses bad flags before a passphrase is asked for.
func (f *mountFlags) check() error {
	if f.maxWrite != 0 && (f.maxWrite < 64<<10 || f.maxWrite > 1<<20 || f.maxWrite%4096 != 0) {
		return usageError{errors.New("--max-write must be a multiple of 4096 from 65536 to 1048576")}
	}
	return nil
}

func (f *mountFlags) mount(s streams, ks crypto.KeySource, dir, mnt string) error {
	level := "info"
	if f.debug {
		level = "debug"
	}
	log, err := logging.New(logging.Options{Level: level, Out: s.out, Err: s.err})
	if err != nil {
		return err
	}
	log = log.WithField("dir", dir)
	keys, err := openVolume(dir, ks)
	if err != nil {
		return err
	}
	srv, err := cryptfs.Mount(dir, mnt, keys, cryptfs.Options{
		Log: log, AllowOther: f.allowOther, FsName: dir, Debug: f.debug, MaxWrite: f.maxWrite,
	})
	if err != nil {
		return fmt.Errorf("mount %s on %s: %w", dir, mnt, err)
	}
	log.Infof("mounted on %s; SIGINT or SIGTERM unmounts", mnt)
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	go unmountOnSignal(sigs, srv, mnt, log)
	srv.Wait()
	return nil
}

// unmountOnSignal unmounts mnt at each signal; a busy mount (a shell sits
// in it) is detached, and the kernel finishes when the last user leaves.
func unmountOnSignal(sigs <-chan os.Signal, srv interface{ Unmount() error }, mnt string, log *logrus.Entry) {
	for sig := range sigs {
		log.Infof("%v: unmounting %s", sig, mnt)
		if err := srv.Unmount(); err != nil {
			log.Warnf("unmount %s: %v; detaching lazily", mnt, err)
			if err := unix.Unmount(mnt, unix.MNT_DETACH); err != nil {
				log.Errorf("lazy unmount %s: %v", mnt, err)
			}
		}
	}
}

// openVolume unwraps the keys of the backing folder dir.
func openVolume(dir string, ks crypto.KeySource) (*crypto.VolumeKeys, error) {
	var keys *crypto.VolumeKeys
	err := backing.WithRoot(dir, func(root *backing.Dir) (err error) {
		_, keys, err = backing.OpenVolume(root, ks)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", dir, err)
	}
	return keys, nil
}
