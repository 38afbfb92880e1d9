package bench

import (
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/schollz/progressbar/v3"
)

// Progress shows the run's phases: a progress bar per phase on a terminal,
// and one line per finished phase in every case. A nil or writer-less
// Progress shows nothing. It is safe for concurrent use, though phases are
// meant to run one at a time.
type Progress struct {
	w    io.Writer
	bars bool
	mu   sync.Mutex // serialises writes to w
}

// NewProgress writes to w (nil: nothing); bars draws progress bars, which
// only makes sense when w is a terminal.
func NewProgress(w io.Writer, bars bool) *Progress {
	return &Progress{w: w, bars: bars && w != nil}
}

// Bar is one phase on display. Its methods are safe for concurrent use; Done
// must be called once, and stops everything the bar started.
type Bar struct {
	p    *Progress
	name string
	pb   *progressbar.ProgressBar // nil without bars
	stop chan struct{}            // closed by Done: ends the ticker
	done chan struct{}            // closed when the ticker has ended
	once sync.Once
}

// Timed shows a phase that lasts about d; status, called a few times a
// second from the bar's own goroutine, describes where it is (e.g. the
// rate so far).
func (p *Progress) Timed(name string, d time.Duration, status func() string) *Bar {
	b := p.newBar(name, max(d.Milliseconds(), 1), false)
	if b.pb == nil {
		return b
	}
	b.stop, b.done = make(chan struct{}), make(chan struct{})
	start := time.Now()
	go func() {
		defer close(b.done)
		t := time.NewTicker(200 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-b.stop:
				return
			case <-t.C:
				b.pb.Describe(fmt.Sprintf("%-36s %s", name, status()))
				_ = b.pb.Set64(min(time.Since(start).Milliseconds(), b.pb.GetMax64()-1))
			}
		}
	}()
	return b
}

// Counted shows a phase of total steps; the caller reports them with Set.
func (p *Progress) Counted(name string, total int64) *Bar {
	return p.newBar(name, max(total, 1), true)
}

func (p *Progress) newBar(name string, total int64, count bool) *Bar {
	b := &Bar{p: p, name: name}
	if p == nil || !p.bars {
		return b
	}
	opts := []progressbar.Option{
		progressbar.OptionSetWriter(lockedWriter{p}),
		progressbar.OptionSetDescription(fmt.Sprintf("%-36s", name)),
		progressbar.OptionSetWidth(20),
		progressbar.OptionSetPredictTime(false),
		progressbar.OptionClearOnFinish(),
		progressbar.OptionSetRenderBlankState(true),
		progressbar.OptionThrottle(100 * time.Millisecond),
	}
	if count {
		opts = append(opts, progressbar.OptionShowCount())
	} else {
		opts = append(opts, progressbar.OptionSetElapsedTime(true))
	}
	b.pb = progressbar.NewOptions64(total, opts...)
	return b
}

// Set reports that n steps of a counted phase are done.
func (b *Bar) Set(n int64) {
	if b.pb != nil {
		_ = b.pb.Set64(min(n, b.pb.GetMax64()))
	}
}

// Done ends the phase: it stops the bar, clears it, and prints the phase's
// line with summary.
func (b *Bar) Done(summary string) {
	b.once.Do(func() {
		if b.stop != nil {
			close(b.stop)
			<-b.done
		}
		if b.pb != nil {
			_ = b.pb.Finish()
		}
		b.p.Linef("%-36s %s", b.name, summary)
	})
}

// Linef prints one line.
func (p *Progress) Linef(format string, args ...any) {
	if p == nil || p.w == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	fmt.Fprintf(p.w, format+"\n", args...)
}

// lockedWriter writes to the Progress's writer under its lock, so a bar
// never interleaves with a line.
type lockedWriter struct{ p *Progress }

func (l lockedWriter) Write(b []byte) (int, error) {
	l.p.mu.Lock()
	defer l.p.mu.Unlock()
	return l.p.w.Write(b)
}
