package archive

import (
	"archive/tar"
	"errors"
	"io"
	"sync"
)

// chunkStream reads the stream of a layout from its chunks, each checked
// against its digest before any of its bytes are passed on. Readers run
// ahead of the consumer, in parallel, each on every n-th chunk.
type chunkStream struct {
	outs []chan chunkResult // reader i delivers chunks i, i+n, ...
	next int                // the next chunk's index
	nchk int
	cur  []byte
	err  error
	read int64 // bytes passed on
	stop chan struct{}
	wg   sync.WaitGroup
}

type chunkResult struct {
	b   []byte
	err error
}

// streamReaders is how many goroutines read and hash chunks: hashing is
// the bulk of reading a stream, and the consumer has its own work.
const streamReaders = 2

func (l *layout) stream() *chunkStream {
	s := &chunkStream{nchk: len(l.chunks), stop: make(chan struct{})}
	for i := range streamReaders {
		out := make(chan chunkResult, 2)
		s.outs = append(s.outs, out)
		s.wg.Go(func() {
			for j := i; j < len(l.chunks); j += streamReaders {
				b, err := readBlob(l.dir, l.chunks[j], nil)
				select {
				case out <- chunkResult{b, err}:
				case <-s.stop:
					return
				}
				if err != nil {
					return
				}
			}
		})
	}
	return s
}

func (s *chunkStream) Read(p []byte) (int, error) {
	for len(s.cur) == 0 {
		if s.err != nil {
			return 0, s.err
		}
		if s.next == s.nchk {
			return 0, io.EOF
		}
		r := <-s.outs[s.next%streamReaders]
		s.next++
		s.cur, s.err = r.b, r.err
	}
	n := copy(p, s.cur)
	s.cur = s.cur[n:]
	s.read += int64(n)
	return n, nil
}

// Close stops the readers.
func (s *chunkStream) Close() {
	close(s.stop)
	s.wg.Wait()
}

// scan reads the stream of l and checks every entry, calling fn for each
// with a reader of its contents and how many directories the walk leaves
// before it. It returns the number of entries.
func (l *layout) scan(fn func(e *entry, leave int, contents io.Reader) error) (int, error) {
	cs := l.stream()
	defer cs.Close()
	tr := tar.NewReader(cs)
	var (
		o       order
		entries int
		header  bool
	)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			if cs.err != nil {
				return 0, cs.err
			}
			return 0, damaged("stream: %v", err) // tar's errors are about its input
		}
		e, err := checkHeader(h, l.cfg.Stream.Size-cs.read)
		if err != nil {
			return 0, err
		}
		leave, err := o.next(e)
		if err != nil {
			return 0, err
		}
		if entries++; entries > l.cfg.Stream.Entries {
			return 0, damaged("more entries than the config's %d", l.cfg.Stream.Entries)
		}
		header = header || e.class == classHeader
		if err := fn(e, leave, tr); err != nil {
			return 0, streamErr(cs, err)
		}
	}
	if n, err := cs.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		return 0, streamErr(cs, damaged("data after the end of the stream"))
	}
	if entries != l.cfg.Stream.Entries || !header {
		return 0, damaged("%d entries (the config says %d), header found: %v", entries, l.cfg.Stream.Entries, header)
	}
	return entries, nil
}

// streamErr prefers the chunks' own error (a damaged chunk, a read error)
// to what the tar reader or the consumer made of it; a stream that ends
// early is damage.
func streamErr(cs *chunkStream, err error) error {
	if cs.err != nil {
		return cs.err
	}
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return damaged("stream: %v", err)
	}
	return err
}
