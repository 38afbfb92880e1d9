package cli

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/durable-run/durable/client"
	durablev1 "github.com/durable-run/durable/proto/durable/v1"
)

// condition is one --wait-for: a name for messages and a test of a status
// that says why it does not hold yet.
type condition struct {
	name string
	test func(*durablev1.StatusResponse) (ok bool, why string)
}

// parseConditions reads --wait-for values.
func parseConditions(specs []string) ([]condition, error) {
	var out []condition
	for _, spec := range specs {
		key, arg, hasArg := strings.Cut(spec, "=")
		var c condition
		switch {
		case key == "settled" && !hasArg:
			c.test = settled
		case key == "home" && !hasArg:
			c.test = func(st *durablev1.StatusResponse) (bool, string) {
				if ok, why := settled(st); !ok {
					return false, why
				}
				for _, p := range st.GetPartitions() {
					if p.GetManagedByDc() != p.GetHomeDc() {
						return false, fmt.Sprintf("partition %d is managed by %s, away from its home %s", p.GetPartition(), p.GetManagedByDc(), p.GetHomeDc())
					}
				}
				return true, ""
			}
		case key == "adopted" && arg != "":
			c.test = func(st *durablev1.StatusResponse) (bool, string) {
				homed := 0
				for _, p := range st.GetPartitions() {
					if p.GetHomeDc() != arg {
						continue
					}
					homed++
					if p.GetManagedByDc() == arg {
						return false, fmt.Sprintf("partition %d is still managed by %s", p.GetPartition(), arg)
					}
				}
				if homed == 0 {
					return false, fmt.Sprintf("no partition has its home in %q", arg)
				}
				return settled(st)
			}
		case key == "nodes" && arg != "":
			n, err := strconv.Atoi(arg)
			if err != nil || n < 0 {
				return nil, fmt.Errorf("--wait-for %s: want nodes=N with N a number of nodes", spec)
			}
			c.test = func(st *durablev1.StatusResponse) (bool, string) {
				live := 0
				for _, ns := range st.GetNodes() {
					if !ns.GetDraining() {
						live++
					}
				}
				return live == n, fmt.Sprintf("%d live nodes, not %d", live, n)
			}
		case key == "lost" && arg != "":
			c.test = func(st *durablev1.StatusResponse) (bool, string) {
				for _, l := range st.GetLostNodes() {
					if l.GetId() != arg {
						continue
					}
					if l.GetWaiting() > 0 {
						return false, fmt.Sprintf("%s is gone; %d of its partitions wait for a new node", arg, l.GetWaiting())
					}
					for _, p := range st.GetPartitions() {
						if p.GetOwner() == "" {
							return false, fmt.Sprintf("%s is gone; partition %d has no owner yet", arg, p.GetPartition())
						}
					}
					return true, ""
				}
				return false, fmt.Sprintf("%s is not lost", arg)
			}
		default:
			return nil, fmt.Errorf("--wait-for %q: want settled, home, adopted=DC, nodes=N or lost=NODE", spec)
		}
		c.name = spec
		out = append(out, c)
	}
	return out, nil
}

// settled: every partition is owned by the node assigned to it.
func settled(st *durablev1.StatusResponse) (bool, string) {
	if len(st.GetPartitions()) == 0 {
		return false, "no partitions"
	}
	for _, p := range st.GetPartitions() {
		switch {
		case p.GetAssignedNode() == "":
			return false, fmt.Sprintf("partition %d is not assigned", p.GetPartition())
		case p.GetOwner() != p.GetAssignedNode():
			owner := p.GetOwner()
			if owner == "" {
				owner = "nobody"
			}
			return false, fmt.Sprintf("partition %d is owned by %s, assigned to %s", p.GetPartition(), owner, p.GetAssignedNode())
		}
	}
	return true, ""
}

// statusPoll is how often --wait-for asks again.
const statusPoll = 250 * time.Millisecond

// waitStatus returns the status once every condition holds (at once with
// none). Errors while waiting (the cluster still starting) count as not
// yet; when ctx ends it says what did not hold.
func waitStatus(ctx context.Context, c *client.Client, conds []condition) (*durablev1.StatusResponse, error) {
	for {
		st, err := c.Admin().Status(ctx, &durablev1.StatusRequest{})
		if err != nil && len(conds) == 0 {
			return nil, err
		}
		why := ""
		if err != nil {
			why = cleanErr(err).Error()
		} else {
			for _, cond := range conds {
				if ok, w := cond.test(st); !ok {
					why = cond.name + ": " + w
					break
				}
			}
			if why == "" {
				return st, nil
			}
		}
		select {
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return nil, fmt.Errorf("timed out waiting (--timeout): %s", why)
			}
			return nil, ctx.Err()
		case <-time.After(statusPoll):
		}
	}
}
