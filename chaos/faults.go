package chaos

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/durable-run/durable/client"
)

// Target is what faults act on: real processes (Procs) or containers.
type Target interface {
	// ClientTarget is the nodes' addresses as a client dials them, with
	// the options it needs (the credentials of a secured cluster).
	ClientTarget() string
	ClientOptions() client.Options
	Nodes() int
	DC(i int) string
	ID(i int) string // node i's id, as its events report it
	Kill(i int)      // abrupt: SIGKILL
	Restart(i int)   // start node i again and wait until it is healthy
	Pause(i int)     // SIGSTOP
	Resume(i int)    // SIGCONT
	Leader(dc string) int
	EtcdMembers() int
	StopEtcd(i int)
	StartEtcd(i int)
	// Disconnect cuts node i off the network; Reconnect heals it. A target
	// that cannot do it returns ErrUnsupported.
	Disconnect(i int) error
	Reconnect(i int) error
}

// overloadCallers is the overload fault's concurrency: every caller calls
// again as soon as its call ends, refusals included.
const overloadCallers = 2048

// ErrUnsupported means a target cannot inject a fault.
var ErrUnsupported = errors.New("chaos: fault not supported by this target")

// Timing is the cluster's timing, from which faults size their holds.
type Timing struct {
	LeaseTTL, DCGrace, Stabilise time.Duration
}

// FaultFunc injects one fault, holds it, heals it and says what it did.
type FaultFunc func(t Target, rng *rand.Rand, tm Timing) (Fault, error)

// Faults are the named injectable faults.
var Faults = map[string]FaultFunc{
	"kill-node": func(t Target, rng *rand.Rand, tm Timing) (Fault, error) {
		return killAndRestart(t, "kill-node", rng.IntN(t.Nodes()), tm.LeaseTTL+time.Second), nil
	},
	"kill-leader": func(t Target, rng *rand.Rand, tm Timing) (Fault, error) {
		dc := t.DC(rng.IntN(t.Nodes()))
		// Right after another fault the data center may be electing.
		i := t.Leader(dc)
		for deadline := time.Now().Add(4*tm.LeaseTTL + 10*time.Second); i < 0 && time.Now().Before(deadline); i = t.Leader(dc) {
			time.Sleep(200 * time.Millisecond)
		}
		if i < 0 {
			return Fault{}, fmt.Errorf("chaos: no leader in %s", dc)
		}
		return killAndRestart(t, "kill-leader", i, tm.LeaseTTL+time.Second), nil
	},
	"pause-node": func(t Target, rng *rand.Rand, tm Timing) (Fault, error) {
		i := rng.IntN(t.Nodes())
		// Beyond the lease: a zombie when it wakes.
		var thawed time.Time
		f := hold("pause-node", i, 2*tm.LeaseTTL, func() { t.Pause(i) }, func() { thawed = time.Now(); t.Resume(i) })
		f.Frozen, f.Thawed = t.ID(i), thawed
		return f, nil
	},
	"kill-dc": func(t Target, rng *rand.Rand, tm Timing) (Fault, error) {
		dc := t.DC(rng.IntN(t.Nodes()))
		var victims []int
		for i := 0; i < t.Nodes(); i++ {
			if t.DC(i) == dc {
				victims = append(victims, i)
				t.Kill(i)
			}
		}
		f := Fault{Name: "kill-dc", Target: dc, Start: time.Now()}
		time.Sleep(tm.LeaseTTL + tm.DCGrace + 2*time.Second) // long enough to be adopted
		for _, i := range victims {
			t.Restart(i)
		}
		f.Heal = time.Now()
		return f, nil
	},
	"kill-etcd": func(t Target, rng *rand.Rand, tm Timing) (Fault, error) {
		i := rng.IntN(t.EtcdMembers())
		return hold("kill-etcd", i, tm.LeaseTTL+time.Second, func() { t.StopEtcd(i) }, func() { t.StartEtcd(i) }), nil
	},
	"overload": func(t Target, rng *rand.Rand, tm Timing) (Fault, error) {
		// A burst of calls to new objects, far beyond what the cluster
		// can do, for two TTLs: the nodes must shed it without losing
		// their leases (the checker then finds no lost or early alarm and
		// no overlap among the workload's objects).
		// Unthrottled: the nodes must shed the load, not this client.
		opts := t.ClientOptions()
		opts.NoThrottle = true
		cl, err := client.Dial(t.ClientTarget(), opts)
		if err != nil {
			return Fault{}, err
		}
		defer cl.Close()
		burst := rng.Uint64()
		f := Fault{Name: "overload", Target: "cluster", Start: time.Now()}
		ctx, cancel := context.WithTimeout(context.Background(), 2*tm.LeaseTTL)
		defer cancel()
		var wg sync.WaitGroup
		var seq atomic.Int64
		for range overloadCallers {
			wg.Go(func() {
				for ctx.Err() == nil {
					name := fmt.Sprintf("chaos-overload-%x-%d", burst, seq.Add(1))
					_, _ = cl.Invoke(ctx, "Counter", client.ByName(name), "increment", nil)
				}
			})
		}
		wg.Wait()
		f.Heal = time.Now()
		return f, nil
	},
	"cpu-starve": func(t Target, rng *rand.Rand, tm Timing) (Fault, error) {
		// The node runs a third of the time (SIGSTOP/SIGCONT at a high
		// duty cycle), as beside a CPU hog, for two TTLs.
		i := rng.IntN(t.Nodes())
		f := Fault{Name: "cpu-starve", Target: fmt.Sprint(i), Start: time.Now()}
		for end := time.Now().Add(2 * tm.LeaseTTL); time.Now().Before(end); {
			t.Pause(i)
			time.Sleep(100 * time.Millisecond)
			t.Resume(i)
			time.Sleep(50 * time.Millisecond)
		}
		f.Heal = time.Now()
		return f, nil
	},
	"cut-node": func(t Target, rng *rand.Rand, tm Timing) (Fault, error) {
		i := rng.IntN(t.Nodes())
		if err := t.Disconnect(i); err != nil {
			return Fault{}, err
		}
		f := Fault{Name: "cut-node", Target: fmt.Sprint(i), Start: time.Now()}
		time.Sleep(2 * tm.LeaseTTL)
		if err := t.Reconnect(i); err != nil {
			return Fault{}, err
		}
		f.Heal = time.Now()
		return f, nil
	},
}

func killAndRestart(t Target, name string, i int, d time.Duration) Fault {
	return hold(name, i, d, func() { t.Kill(i) }, func() { t.Restart(i) })
}

// hold injects a fault on target i, keeps it for d once it took effect and
// heals it. The fault's times are when it took effect (inject returned:
// the process is dead, the member stopped) and when the heal completed.
func hold(name string, i int, d time.Duration, inject, heal func()) Fault {
	inject()
	f := Fault{Name: name, Target: fmt.Sprint(i), Start: time.Now()}
	time.Sleep(d)
	heal()
	f.Heal = time.Now()
	return f
}

// Inject runs faults drawn from names (seeded) one after another, with gap
// between them, until the deadline, and returns what was injected.
func Inject(t Target, names []string, seed uint64, tm Timing, until time.Time, gap time.Duration, log *slog.Logger) ([]Fault, error) {
	rng := rand.New(rand.NewPCG(seed, 7))
	var out []Fault
	for time.Now().Before(until) {
		name := names[rng.IntN(len(names))]
		f, err := Faults[name](t, rng, tm)
		if err != nil {
			return out, fmt.Errorf("%s: %w", name, err)
		}
		log.Info("fault", "name", f.Name, "target", f.Target, "held", f.Heal.Sub(f.Start).Round(time.Millisecond))
		out = append(out, f)
		time.Sleep(gap)
	}
	return out, nil
}

func quietLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }
