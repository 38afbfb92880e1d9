package commit

import (
	"sync"
)

// batcher is the queue behind the committer and the reader: requests from
// many objects go out in batches, one etcd Txn each. It adds no delay: a
// request is sent at once when fewer than parallelism batches are in
// flight; otherwise it waits, and the next batch to go takes everything
// queued, up to the limits. A request larger than the limits alone is sent
// alone.
//
// mu guards the queue and the limits; send runs without it, on the
// goroutine that took the batch, and may submit or requeue requests.
type batcher[T any] struct {
	parallelism int
	// size is the operations and bytes a request adds to a batch.
	size func(T) (ops, bytes int)
	// send settles a batch.
	send func([]T)
	// refuse settles a request submitted after stop.
	refuse func(T)

	mu       sync.Mutex
	queue    []T
	running  int // goroutines draining the queue
	maxOps   int
	maxBytes int
	stopped  bool
	wg       sync.WaitGroup
}

// limits returns the current batch limits.
func (b *batcher[T]) limits() (ops, bytes int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.maxOps, b.maxBytes
}

// shrink lowers the limits (to at least 1) after etcd refused a batch of
// ops operations and bytes bytes as too large.
func (b *batcher[T]) shrink(tooManyOps bool, ops, bytes int) (int, int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if tooManyOps {
		b.maxOps = max(1, min(b.maxOps, ops/2))
	} else {
		b.maxBytes = max(1, min(b.maxBytes, bytes/2))
	}
	return b.maxOps, b.maxBytes
}

// submit queues x, starting a drain if a batch slot is free.
func (b *batcher[T]) submit(x T) {
	b.mu.Lock()
	if b.stopped {
		b.mu.Unlock()
		// Settled on the caller's goroutine: done callbacks never hold a
		// lock their submitter holds (see the package comment).
		b.refuse(x)
		return
	}
	b.queue = append(b.queue, x)
	start := b.running < b.parallelism
	if start {
		b.running++
		b.wg.Add(1)
	}
	b.mu.Unlock()
	if start {
		go b.drain()
	}
}

// requeue puts xs back at the front of the queue (their batch did not
// apply); the goroutine that calls it is draining, so they will be sent.
func (b *batcher[T]) requeue(xs []T) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.queue = append(xs[:len(xs):len(xs)], b.queue...)
}

// stop refuses what is still queued or submitted later and waits for the
// batches in flight.
func (b *batcher[T]) stop() {
	b.mu.Lock()
	b.stopped = true
	b.mu.Unlock()
	b.wg.Wait()
}

// queued returns the length of the queue.
func (b *batcher[T]) queued() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.queue)
}

// idle reports whether nothing is queued or in flight.
func (b *batcher[T]) idle() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.queue) == 0 && b.running == 0
}

// drain sends batches until the queue is empty.
func (b *batcher[T]) drain() {
	defer b.wg.Done()
	for {
		b.mu.Lock()
		batch := b.takeLocked()
		if len(batch) == 0 {
			b.running--
			b.mu.Unlock()
			return
		}
		stopped := b.stopped
		b.mu.Unlock()
		if stopped {
			for _, x := range batch {
				b.refuse(x)
			}
			continue
		}
		b.send(batch)
	}
}

// takeLocked removes the next batch from the queue: at least one request,
// then as many as fit the limits.
func (b *batcher[T]) takeLocked() []T {
	if len(b.queue) == 0 {
		return nil
	}
	ops, bytes, n := 0, 0, 0
	for _, x := range b.queue {
		o, by := b.size(x)
		if n > 0 && (ops+o > b.maxOps || bytes+by > b.maxBytes) {
			break
		}
		ops += o
		bytes += by
		n++
	}
	batch := make([]T, n)
	copy(batch, b.queue)
	clear(b.queue[:n])
	b.queue = b.queue[n:]
	if len(b.queue) == 0 {
		b.queue = nil // let the backing array go
	}
	return batch
}
