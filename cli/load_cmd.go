package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync/atomic"
	"time"

	"github.com/spf13/cobra"

	"github.com/durable-run/durable/client"
)

// newLoadCmd is the demo's load generator: it keeps creating objects,
// invoking them and setting alarms, and reports what succeeded.
func newLoadCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "load",
		Short: "Generate load: Counter increments and Reminder alarms on many objects, until stopped",
		Long: "Each tick, one object of --objects gets a Counter increment and a Reminder due a random\n" +
			"time within --alarm-in from now (delivered to the nodes' upstream, e.g. the sink).\n" +
			"Prints a line of counts every --report." + envHelp,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			fs := cmd.Flags()
			addr, _ := fs.GetString("addr")
			objects, _ := fs.GetInt("objects")
			rate, _ := fs.GetFloat64("rate")
			alarmIn, _ := fs.GetDuration("alarm-in")
			report, _ := fs.GetDuration("report")
			duration, _ := fs.GetDuration("duration")
			if objects < 1 || rate <= 0 || alarmIn <= 0 || report <= 0 {
				return usageError{errors.New("--objects, --rate, --alarm-in and --report must be positive")}
			}
			dial, err := clientDialOptions(fs)
			if err != nil {
				return err
			}
			c, err := client.Dial(addr, client.Options{DialOptions: dial})
			if err != nil {
				return err
			}
			defer c.Close()
			ctx := cmd.Context()
			if duration > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, duration)
				defer cancel()
			}
			return runLoad(ctx, cmd, c, objects, rate, alarmIn, report)
		},
	}
	addClientFlags(cmd, 10*time.Second)
	cmd.Flags().Int("objects", 200, "number of distinct objects")
	cmd.Flags().Float64("rate", 20, "ticks per second")
	cmd.Flags().Duration("alarm-in", 30*time.Second, "alarms are due uniformly within this long from now")
	cmd.Flags().Duration("report", 10*time.Second, "print counts this often")
	cmd.Flags().Duration("duration", 0, "stop after this long (0: until interrupted)")
	return cmd
}

func runLoad(ctx context.Context, cmd *cobra.Command, c *client.Client, objects int, rate float64, alarmIn, report time.Duration) error {
	timeout, _ := cmd.Flags().GetDuration("timeout")
	var calls, alarms, failed atomic.Int64
	call := func(class, name, method string, payload []byte, ok *atomic.Int64) {
		cctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		if _, err := c.Invoke(cctx, class, client.ByName(name), method, payload); err != nil {
			if ctx.Err() == nil {
				failed.Add(1)
				fmt.Fprintf(cmd.ErrOrStderr(), "%s %s.%s: %v\n", time.Now().UTC().Format(time.RFC3339), class, name, cleanErr(err))
			}
			return
		}
		ok.Add(1)
	}
	tick := time.NewTicker(time.Duration(float64(time.Second) / rate))
	defer tick.Stop()
	rep := time.NewTicker(report)
	defer rep.Stop()
	out := cmd.OutOrStdout()
	fmt.Fprintf(out, "load: %d objects, %.0f ticks/s, alarms within %s\n", objects, rate, alarmIn)
	for {
		select {
		case <-ctx.Done():
			fmt.Fprintf(out, "load done: %d calls, %d alarms set, %d failed\n", calls.Load(), alarms.Load(), failed.Load())
			return nil
		case <-rep.C:
			fmt.Fprintf(out, "%s calls=%d alarms_set=%d failed=%d\n", time.Now().UTC().Format(time.RFC3339), calls.Load(), alarms.Load(), failed.Load())
		case <-tick.C:
			name := fmt.Sprintf("load-%d", rand.IntN(objects))
			in := time.Duration(rand.Int64N(int64(alarmIn))) + time.Second
			payload, _ := json.Marshal(map[string]string{"message": "from durable load", "in": in.String()})
			go call("Counter", name, "increment", nil, &calls)
			go call("Reminder", name, "set", payload, &alarms)
		}
	}
}
