package node

import (
	"github.com/durable-run/durable"
	"github.com/durable-run/durable/alarmstore"
)

// Test-only access to the node's internals, for the external tests of this
// package (which run on the shared nodetest harness).

// Token returns the fencing token p is served under, 0 if it is not.
func (n *Node) Token(p int) int64 { return n.tab.token(p) }

// Schedule returns the node's alarm schedule.
func (n *Node) Schedule() *alarmstore.Schedule { return n.sched }

// Mailbox reports whether an object is active here, how many calls wait in
// its mailbox and whether an alarm waits for it.
func (n *Node) Mailbox(class string, id durable.ID) (active bool, calls int, alarm bool) {
	n.tab.mu.Lock()
	defer n.tab.mu.Unlock()
	o := n.tab.objects.get(class, id)
	if o == nil {
		return false, 0, false
	}
	return true, o.queuedCalls(), o.sig.has(sigAlarm)
}

// Sweep looks for idle objects now, as the node's sweeper does on its
// ticker: a test that asserts an object stayed resident cannot wait for
// the sweeper's goroutine to have looked.
func (n *Node) Sweep() { n.tab.sweep(n.now(), true) }
