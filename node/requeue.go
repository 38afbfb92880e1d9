package node

import (
	"context"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/durable-run/durable"
	"github.com/durable-run/durable/alarmstore"
)

// Owner reports whether this node owns partition p, or else the address
// of the node that does ("" while it moves).
func (n *Node) Owner(p int) (local bool, addr string) {
	r := n.route(p)
	return r.local, r.addr
}

// PartitionOf returns the partition of an object ID.
func (n *Node) PartitionOf(id durable.ID) int { return n.partitionOf(id) }

// RequeueDeadLetter sets the alarm of an object whose alarm was abandoned
// after its last retry again, due now (retry count 0), and deletes its
// dead letter, in one commit. It runs as an event of the object on this
// node, which must own the object's partition (ErrOwnershipLost
// otherwise): the schedule, the pipeline and fencing treat it as they
// treat a SetAlarm. scheduled names the dead letter (zero: the object's
// latest). An object with an alarm pending is refused
// (FailedPrecondition): delete it first, or let it run.
func (n *Node) RequeueDeadLetter(ctx context.Context, className string, ref Ref, scheduled time.Time) error {
	class, id, err := n.Resolve(className, ref)
	if err != nil {
		return err
	}
	if !class.HasAlarm {
		return fmt.Errorf("%w: %q", durable.ErrNoAlarmHandler, class.Name)
	}
	p := n.partitionOf(id)
	if local, _ := n.Owner(p); !local {
		return fmt.Errorf("%w: partition %d is not owned here", durable.ErrOwnershipLost, p)
	}
	deadKey := func(ctx context.Context) (string, error) {
		if !scheduled.IsZero() {
			return n.keys.Dead(p, class.Name, id.String(), scheduled), nil
		}
		prefix := n.keys.DeadPrefix(p) + class.Name + "/" + id.String() + "/"
		resp, err := n.env.kv.Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithKeysOnly(),
			clientv3.WithSort(clientv3.SortByKey, clientv3.SortDescend), clientv3.WithLimit(1))
		if err != nil {
			return "", fmt.Errorf("%w: %w", durable.ErrUnavailable, err)
		}
		if len(resp.Kvs) == 0 {
			return "", durable.Invalidf("%s %s has no dead letter", class.Name, truncate(id.String()))
		}
		return string(resp.Kvs[0].Key), nil
	}
	op := func(ctx context.Context, o *object, tx *eventTx) ([]clientv3.Op, error) {
		key, err := deadKey(ctx)
		if err != nil {
			return nil, err
		}
		// The dead letter must still be there (a requeue runs once), and
		// the object must have no alarm of its own meanwhile.
		kvs, err := n.env.reads.Get(ctx, key)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", durable.ErrUnavailable, err)
		}
		if kvs[0] == nil {
			return nil, durable.Invalidf("%s %s has no dead letter scheduled at %s", class.Name, truncate(id.String()), scheduled.UTC().Format(time.RFC3339Nano))
		}
		pl := &o.pl
		if cur, err := pl.loadAlarm(ctx); err != nil {
			return nil, err
		} else if cur != nil {
			return nil, fmt.Errorf("%w: %s %s (due %s); delete it or let it run first",
				durable.ErrAlarmPending, class.Name, truncate(id.String()), cur.Due.UTC().Format(time.RFC3339Nano))
		}
		pl.mu.Lock()
		tx.alarmTouched, tx.alarmDue = true, alarmstore.CeilMillis(n.cfg.Clock.Now())
		pl.mu.Unlock()
		return []clientv3.Op{clientv3.OpDelete(key)}, nil
	}
	if err := n.adm.enter(); err != nil {
		return err
	}
	admitted := time.Now()
	c := &call{ctx: ctx, method: "(requeue a dead letter)", name: ref.Name, reply: make(chan callResult, 1), op: op,
		release: func() { n.adm.leave(time.Since(admitted)) }}
	if err := n.tab.enqueue(n.env, class, id, p, c); err != nil {
		c.release()
		return err
	}
	select {
	case r := <-c.reply:
		return r.err
	case <-ctx.Done():
		return ctx.Err()
	}
}
