package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
	"unicode/utf8"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/durable-run/durable/client"
	durablev1 "github.com/durable-run/durable/proto/durable/v1"
)

const defaultAddr = "127.0.0.1:4600"

func addClientFlags(cmd *cobra.Command, timeout time.Duration) {
	cmd.Flags().String("addr", defaultAddr, "address of any node of the cluster, or several separated by commas")
	cmd.Flags().Duration("timeout", timeout, "deadline of the call, retries included")
	addClientSecurityFlags(cmd.Flags())
}

// withClient dials the node named by --addr and runs fn with a deadline.
func withClient(cmd *cobra.Command, fn func(ctx context.Context, c *client.Client) error) error {
	addr, _ := cmd.Flags().GetString("addr")
	timeout, _ := cmd.Flags().GetDuration("timeout")
	dial, err := clientDialOptions(cmd.Flags())
	if err != nil {
		return err
	}
	c, err := client.Dial(addr, client.Options{DialOptions: dial})
	if err != nil {
		return err
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
	defer cancel()
	return cleanErr(fn(ctx, c))
}

// cleanErr turns a gRPC status into a one-line message that keeps its code.
func cleanErr(err error) error {
	if err == nil {
		return nil
	}
	if st, ok := status.FromError(err); ok {
		msg := st.Message()
		if d := client.Detail(err); d != nil && d.GetObjectError() {
			msg = "the object returned an error: " + strings.TrimPrefix(msg, "object error: ")
		}
		return cliStatusError{st: st, msg: fmt.Sprintf("%s (%s)", strings.TrimPrefix(msg, "durable: "), st.Code())}
	}
	return err
}

// cliStatusError prints as a one-line message and keeps the gRPC status for
// the exit code.
type cliStatusError struct {
	st  *status.Status
	msg string
}

func (e cliStatusError) Error() string              { return e.msg }
func (e cliStatusError) GRPCStatus() *status.Status { return e.st }

// addRefFlags adds --id and --location, which say how the command's object
// argument (what names it) is read.
func addRefFlags(cmd *cobra.Command, what string) {
	cmd.Flags().Bool("id", false, what+" is an object ID (64 hex digits), not a name")
	cmd.Flags().String("location", "", "with a name: the object homed in this data center (a location hint, part of its identity)")
}

// refFromFlags reads arg as the flags added by addRefFlags say.
func refFromFlags(cmd *cobra.Command, arg string) (client.Ref, error) {
	byID, _ := cmd.Flags().GetBool("id")
	loc, _ := cmd.Flags().GetString("location")
	switch {
	case byID && loc != "":
		return nil, usageError{errors.New("--location goes with a name: an object ID carries its own")}
	case byID:
		return client.ByID(arg), nil
	default:
		return client.ByNameIn(arg, loc), nil
	}
}

func newInvokeCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "invoke CLASS NAME METHOD [PAYLOAD]",
		Short: "Invoke a method of an object and print its reply",
		Long: "Invoke a method of the object of CLASS named NAME (or with ID NAME, with --id)\n" +
			"and print the reply. PAYLOAD '-' reads the payload from standard input." + envHelp,
		Args: cobra.RangeArgs(3, 4),
		RunE: func(cmd *cobra.Command, args []string) error {
			ref, err := refFromFlags(cmd, args[1])
			if err != nil {
				return err
			}
			var payload []byte
			if len(args) == 4 {
				payload = []byte(args[3])
				if args[3] == "-" {
					b, err := io.ReadAll(os.Stdin)
					if err != nil {
						return err
					}
					payload = b
				}
			}
			return withClient(cmd, func(ctx context.Context, c *client.Client) error {
				resp, err := c.Invoke(ctx, args[0], ref, args[2], payload)
				if err != nil {
					return err
				}
				out := resp.GetPayload()
				fmt.Fprintln(cmd.OutOrStdout(), string(out))
				return nil
			})
		},
	}
	addClientFlags(cmd, 30*time.Second)
	addRefFlags(cmd, "NAME")
	return cmd
}

func fmtMillis(ms int64) string {
	if ms == 0 {
		return "-"
	}
	return time.UnixMilli(ms).UTC().Format(time.RFC3339Nano)
}

func printJSON(cmd *cobra.Command, m proto.Message) error {
	// One JSON style for every command: snake_case field names (as the
	// bench's), every field present; 64-bit integers are strings, as the
	// proto3 JSON mapping has them.
	b, err := protojson.MarshalOptions{Multiline: true, EmitUnpopulated: true, UseProtoNames: true}.Marshal(m)
	if err != nil {
		return err
	}
	fmt.Fprintln(cmd.OutOrStdout(), string(b))
	return nil
}

func newAlarmCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "alarm", Short: "Inspect alarms"}
	get := &cobra.Command{
		Use:   "get CLASS NAME",
		Short: "Show an object's pending alarm",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			ref, err := refFromFlags(cmd, args[1])
			if err != nil {
				return err
			}
			asJSON, _ := cmd.Flags().GetBool("json")
			return withClient(cmd, func(ctx context.Context, c *client.Client) error {
				resp, err := c.Admin().GetAlarm(ctx, &durablev1.GetAlarmRequest{Class: args[0], Object: ref})
				if err != nil {
					return err
				}
				if asJSON {
					return printJSON(cmd, resp)
				}
				a := resp.GetAlarm()
				if a == nil {
					fmt.Fprintln(cmd.OutOrStdout(), "no alarm")
					return nil
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s (in %s)", fmtMillis(a.GetDueUnixMs()),
					time.Until(time.UnixMilli(a.GetDueUnixMs())).Round(time.Millisecond))
				if a.GetRetryCount() > 0 {
					fmt.Fprintf(cmd.OutOrStdout(), " retry %d of an alarm scheduled %s; last error: %s",
						a.GetRetryCount(), fmtMillis(a.GetScheduledUnixMs()), a.GetLastError())
				}
				fmt.Fprintln(cmd.OutOrStdout())
				return nil
			})
		},
	}
	addClientFlags(get, 30*time.Second)
	addRefFlags(get, "NAME")
	get.Flags().Bool("json", false, "print JSON")

	list := &cobra.Command{
		Use:   "list",
		Short: "List pending alarms in time order",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			class, _ := cmd.Flags().GetString("class")
			limit, _ := cmd.Flags().GetInt32("limit")
			token, _ := cmd.Flags().GetString("page-token")
			asJSON, _ := cmd.Flags().GetBool("json")
			return withClient(cmd, func(ctx context.Context, c *client.Client) error {
				resp, err := c.Admin().ListAlarms(ctx, &durablev1.ListAlarmsRequest{Class: class, Limit: limit, PageToken: token})
				if err != nil {
					return err
				}
				if asJSON {
					return printJSON(cmd, resp)
				}
				return printAlarms(cmd, resp.GetAlarms(), resp.GetNextPageToken())
			})
		},
	}
	addClientFlags(list, 30*time.Second)
	list.Flags().String("class", "", "only alarms of this class")
	list.Flags().Int32("limit", 100, "at most this many alarms")
	list.Flags().String("page-token", "", "continue where the previous page ended (its last line says the token)")
	list.Flags().Bool("json", false, "print JSON")

	dead := &cobra.Command{
		Use:   "dead",
		Short: "List alarms abandoned after their last retry",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			class, _ := cmd.Flags().GetString("class")
			limit, _ := cmd.Flags().GetInt32("limit")
			token, _ := cmd.Flags().GetString("page-token")
			asJSON, _ := cmd.Flags().GetBool("json")
			return withClient(cmd, func(ctx context.Context, c *client.Client) error {
				resp, err := c.Admin().ListDeadLetters(ctx, &durablev1.ListDeadLettersRequest{Class: class, Limit: limit, PageToken: token})
				if err != nil {
					return err
				}
				if asJSON {
					return printJSON(cmd, resp)
				}
				w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
				fmt.Fprintln(w, "CLASS\tNAME/ID\tSCHEDULED\tABANDONED\tRETRIES\tLAST ERROR")
				for _, d := range resp.GetDeadLetters() {
					a := d.GetAlarm()
					fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%d\t%s\n", a.GetClass(), nameOrID(a), fmtMillis(a.GetScheduledUnixMs()),
						fmtMillis(d.GetAbandonedUnixMs()), a.GetRetryCount(), a.GetLastError())
				}
				if next := resp.GetNextPageToken(); next != "" {
					fmt.Fprintf(w, "...\t(more: --page-token %s)\n", next)
				}
				return w.Flush()
			})
		},
	}
	addClientFlags(dead, 30*time.Second)
	dead.Flags().String("class", "", "only dead letters of this class")
	dead.Flags().Int32("limit", 100, "at most this many")
	dead.Flags().String("page-token", "", "continue where the previous page ended")
	dead.Flags().Bool("json", false, "print JSON")
	dead.AddCommand(newPurgeCmd(), newRequeueCmd())
	cmd.AddCommand(get, list, dead, newAlarmWaitCmd())
	return cmd
}

func newPurgeCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "purge",
		Short: "Delete dead letters: of a class, of one object, older than a time, or all",
		Long: "Delete the dead letters the flags select (--class, --object with --class,\n" +
			"--older-than), or every one with --all. It prints how many it deleted." + envHelp,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			class, _ := cmd.Flags().GetString("class")
			object, _ := cmd.Flags().GetString("object")
			older, _ := cmd.Flags().GetDuration("older-than")
			all, _ := cmd.Flags().GetBool("all")
			req := &durablev1.PurgeDeadLettersRequest{Class: class, All: all}
			if object != "" {
				ref, err := refFromFlags(cmd, object)
				if err != nil {
					return err
				}
				req.Object = ref
			}
			if older > 0 {
				req.AbandonedBeforeUnixMs = time.Now().Add(-older).UnixMilli()
			}
			return withClient(cmd, func(ctx context.Context, c *client.Client) error {
				resp, err := c.Admin().PurgeDeadLetters(ctx, req)
				if err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%d dead letters purged\n", resp.GetPurged())
				return nil
			})
		},
	}
	addClientFlags(cmd, time.Minute)
	cmd.Flags().String("class", "", "only dead letters of this class")
	cmd.Flags().String("object", "", "only those of this object (name, or id with --id); needs --class")
	addRefFlags(cmd, "--object")
	cmd.Flags().Duration("older-than", 0, "only those abandoned longer ago than this, e.g. 24h")
	cmd.Flags().Bool("all", false, "every dead letter (no other filter)")
	return cmd
}

func newRequeueCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "requeue CLASS NAME",
		Short: "Set an abandoned alarm again, due now, and delete its dead letter",
		Long: "Set the alarm of the object of CLASS named NAME (or with ID NAME, with --id) again,\n" +
			"due now with its retries from 0, and delete its dead letter (the latest, or the one\n" +
			"scheduled at --scheduled), in one commit on the object's owner. An object with an\n" +
			"alarm pending is refused." + envHelp,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			ref, err := refFromFlags(cmd, args[1])
			if err != nil {
				return err
			}
			sched, _ := cmd.Flags().GetString("scheduled")
			req := &durablev1.RequeueDeadLetterRequest{Class: args[0], Object: ref}
			if sched != "" {
				t, err := time.Parse(time.RFC3339Nano, sched)
				if err != nil {
					return usageError{fmt.Errorf("--scheduled %q: want an RFC 3339 time (as alarm dead prints it)", sched)}
				}
				req.ScheduledUnixMs = t.UnixMilli()
			}
			return withClient(cmd, func(ctx context.Context, c *client.Client) error {
				resp, err := c.Admin().RequeueDeadLetter(ctx, req)
				if err != nil {
					return err
				}
				if a := resp.GetAlarm(); a != nil {
					fmt.Fprintf(cmd.OutOrStdout(), "requeued: due %s\n", fmtMillis(a.GetDueUnixMs()))
				} else {
					fmt.Fprintln(cmd.OutOrStdout(), "requeued (it has run already)")
				}
				return nil
			})
		},
	}
	addClientFlags(cmd, 30*time.Second)
	addRefFlags(cmd, "NAME")
	cmd.Flags().String("scheduled", "", "the dead letter's scheduled time (RFC 3339, as alarm dead prints it); default: the latest")
	return cmd
}

func newAlarmWaitCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "wait CLASS NAME",
		Short: "Wait until an object's alarm has run to success",
		Long: "Wait until the object of CLASS named NAME has no pending alarm: its alarm\n" +
			"ran and succeeded (or was deleted). Retries are reported as they happen;\n" +
			"an alarm abandoned after its last retry fails the command, and so does\n" +
			"--timeout. With no pending alarm it returns at once." + envHelp,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			ref, err := refFromFlags(cmd, args[1])
			if err != nil {
				return err
			}
			return withClient(cmd, func(ctx context.Context, c *client.Client) error {
				loc, err := c.Admin().Locate(ctx, &durablev1.LocateRequest{Class: args[0], Object: ref})
				if err != nil {
					return err
				}
				started := time.Now()
				retry := int32(0)
				for {
					resp, err := c.Admin().GetAlarm(ctx, &durablev1.GetAlarmRequest{Class: args[0], Object: ref})
					if err != nil {
						return err
					}
					a := resp.GetAlarm()
					if a == nil {
						break
					}
					if a.GetRetryCount() > retry {
						retry = a.GetRetryCount()
						fmt.Fprintf(cmd.ErrOrStderr(), "retry %d at %s; last error: %s\n", retry, fmtMillis(a.GetDueUnixMs()), a.GetLastError())
					}
					select {
					case <-ctx.Done():
						return fmt.Errorf("timed out waiting (--timeout): the alarm is due %s (retry %d)", fmtMillis(a.GetDueUnixMs()), a.GetRetryCount())
					case <-time.After(statusPoll):
					}
				}
				// Gone: ran to success, was deleted, or was abandoned.
				dead, err := c.Admin().ListDeadLetters(ctx, &durablev1.ListDeadLettersRequest{Class: args[0], Limit: 1000})
				if err != nil {
					return err
				}
				for _, d := range dead.GetDeadLetters() {
					if d.GetAlarm().GetId() == loc.GetId() && d.GetAbandonedUnixMs() >= started.Add(-time.Second).UnixMilli() {
						return fmt.Errorf("the alarm was abandoned after %d retries; last error: %s", d.GetAlarm().GetRetryCount(), d.GetAlarm().GetLastError())
					}
				}
				fmt.Fprintln(cmd.OutOrStdout(), "no alarm pending")
				return nil
			})
		},
	}
	addClientFlags(cmd, time.Minute)
	addRefFlags(cmd, "NAME")
	return cmd
}

// oneLine keeps a table cell on one line and short.
func oneLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 80 {
		cut := 77
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		return s[:cut] + "..."
	}
	return s
}

func nameOrID(a *durablev1.Alarm) string {
	if a.GetName() != "" {
		return a.GetName()
	}
	return a.GetId()
}

func printAlarms(cmd *cobra.Command, alarms []*durablev1.Alarm, next string) error {
	w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "DUE\tOVERDUE\tCLASS\tNAME/ID\tPARTITION\tRETRY\tLAST ERROR")
	now := time.Now()
	for _, a := range alarms {
		overdue := "-"
		if late := now.Sub(time.UnixMilli(a.GetDueUnixMs())); late > 0 {
			overdue = late.Round(time.Millisecond).String()
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%d\t%d\t%s\n", fmtMillis(a.GetDueUnixMs()), overdue, a.GetClass(), nameOrID(a), a.GetPartition(),
			a.GetRetryCount(), oneLine(a.GetLastError()))
	}
	if next != "" {
		fmt.Fprintf(w, "...\t(more: --page-token %s)\n", next)
	}
	return w.Flush()
}

func newLocateCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "locate CLASS NAME",
		Short: "Show where an object lives: its ID, partition, owner node and fencing token",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			ref, err := refFromFlags(cmd, args[1])
			if err != nil {
				return err
			}
			asJSON, _ := cmd.Flags().GetBool("json")
			return withClient(cmd, func(ctx context.Context, c *client.Client) error {
				resp, err := c.Admin().Locate(ctx, &durablev1.LocateRequest{Class: args[0], Object: ref})
				if err != nil {
					return err
				}
				if asJSON {
					return printJSON(cmd, resp)
				}
				w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
				owner := resp.GetOwner()
				if owner == "" {
					owner = "(none: the partition is moving)"
				} else {
					owner += " at " + resp.GetOwnerAddress()
				}
				fmt.Fprintf(w, "id\t%s\npartition\t%d\nowner\t%s\ntoken\t%d\nassigned\t%s (managed by %s, home %s)\n",
					resp.GetId(), resp.GetPartition(), owner, resp.GetToken(), resp.GetAssignedNode(), resp.GetManagedByDc(), resp.GetHomeDc())
				if a := resp.GetPendingAlarm(); a != nil {
					fmt.Fprintf(w, "alarm\t%s (retry %d)\n", fmtMillis(a.GetDueUnixMs()), a.GetRetryCount())
				} else {
					fmt.Fprintln(w, "alarm\tnone")
				}
				return w.Flush()
			})
		},
	}
	addClientFlags(cmd, 30*time.Second)
	addRefFlags(cmd, "NAME")
	cmd.Flags().Bool("json", false, "print JSON")
	return cmd
}

func newDrainCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "drain",
		Short: "Move every partition off the node at --addr (as SIGTERM does), keeping it running",
		Long: "Ask the node at --addr to hand its partitions to the other nodes one by one:\n" +
			"it stops taking new events for a partition, finishes those in flight, releases\n" +
			"it, and another node claims it. The node stays up, drained, until it stops.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if addr, _ := cmd.Flags().GetString("addr"); strings.Contains(addr, ",") {
				return fmt.Errorf("drain acts on one node: --addr %q names several", addr)
			}
			return withClient(cmd, func(ctx context.Context, c *client.Client) error {
				resp, err := c.Admin().Drain(ctx, &durablev1.DrainRequest{})
				if err != nil {
					return err
				}
				if len(resp.GetRemaining()) > 0 {
					return fmt.Errorf("node %s still owns partitions %v: no other node could take them in time", resp.GetNode(), resp.GetRemaining())
				}
				fmt.Fprintf(cmd.OutOrStdout(), "node %s drained\n", resp.GetNode())
				return nil
			})
		},
	}
	addClientFlags(cmd, time.Minute)
	return cmd
}

func newStatusCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show nodes, data centers, partition owners and pending alarms",
		Long: "Show the cluster: each data center's leader, its term number and state (up,\n" +
			"down and adopted, going home), the nodes with their partitions and alarms,\n" +
			"nodes lost in the last hour and where their partitions went.\n\n" +
			"--wait-for COND (repeatable) polls until every condition holds, then prints\n" +
			"the status; past --timeout it prints the last status and fails. Conditions:\n" +
			"  settled      every partition is owned by the node assigned to it\n" +
			"  home         settled, and every partition is managed by its home data center\n" +
			"  adopted=DC   settled, and other data centers manage every partition homed in DC\n" +
			"  nodes=N      N live nodes are registered\n" +
			"  lost=NODE    NODE is gone and its partitions were moved to other nodes" + envHelp,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			asJSON, _ := cmd.Flags().GetBool("json")
			verbose, _ := cmd.Flags().GetBool("partitions")
			waits, _ := cmd.Flags().GetStringArray("wait-for")
			conds, err := parseConditions(waits)
			if err != nil {
				return err
			}
			return withClient(cmd, func(ctx context.Context, c *client.Client) error {
				st, err := waitStatus(ctx, c, conds)
				if err != nil {
					return err
				}
				if asJSON {
					return printJSON(cmd, st)
				}
				return printStatus(cmd, st, verbose)
			})
		},
	}
	addClientFlags(cmd, 30*time.Second)
	cmd.Flags().Bool("json", false, "print JSON")
	cmd.Flags().Bool("partitions", false, "list every partition with its owner")
	cmd.Flags().StringArray("wait-for", nil, "wait until COND holds: settled, home, adopted=DC, nodes=N, lost=NODE (repeatable)")
	return cmd
}

// ago says how long before now a Unix-milliseconds time was, in whole
// seconds ("12s ago"); "-" for 0.
func ago(ms int64) string {
	if ms == 0 {
		return "-"
	}
	return time.Since(time.UnixMilli(ms)).Round(time.Second).String() + " ago"
}

func secs(ms int64) string { return (time.Duration(ms) * time.Millisecond).Round(time.Second).String() }

// dcState is one line for a data center: up, down (and adopted or waiting
// for adoption), or back with partitions going home.
func dcState(d *durablev1.DataCenterStatus) string {
	since := func(ms int64) string {
		if ms == 0 {
			return ""
		}
		return " " + strings.TrimSuffix(ago(ms), " ago")
	}
	switch {
	case d.GetLiveNodes() == 0 && d.GetAway() > 0 && d.GetAdoptionInMs() == 0:
		return fmt.Sprintf("down%s; adopted by %s", since(d.GetDownSinceUnixMs()), strings.Join(d.GetAdoptedBy(), ","))
	case d.GetLiveNodes() == 0 && d.GetAdoptionInMs() > 0:
		return fmt.Sprintf("down%s; adopted in %s", since(d.GetDownSinceUnixMs()), secs(d.GetAdoptionInMs()))
	case d.GetLiveNodes() == 0:
		return "down" + since(d.GetDownSinceUnixMs())
	case d.GetAway() > 0 && d.GetHomeInMs() > 0:
		return fmt.Sprintf("back%s; %d partitions go home in %s", since(d.GetUpSinceUnixMs()), d.GetAway(), secs(d.GetHomeInMs()))
	case d.GetAway() > 0:
		return fmt.Sprintf("back%s; %d partitions going home", since(d.GetUpSinceUnixMs()), d.GetAway())
	}
	return "up"
}

func printStatus(cmd *cobra.Command, st *durablev1.StatusResponse, partitions bool) error {
	out := cmd.OutOrStdout()
	fmt.Fprintf(out, "cluster %s: %d partitions, %d pending alarms, %d dead letters (answered by %s)\n",
		st.GetClusterPrefix(), st.GetPartitionCount(), st.GetPendingAlarms(), st.GetDeadLetters(), st.GetAnsweredBy())
	if req := st.GetRequiredClasses(); len(req) > 0 {
		fmt.Fprintf(out, "classes every node must serve: %s\n", strings.Join(req, ", "))
	}
	fmt.Fprintln(out)
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	// TERM counts the data center's elections (1 = its first leader).
	fmt.Fprintln(w, "DC\tLEADER\tTERM\tELECTED\tNODES\tPARTITIONS\tADOPTED\tLAST REASSIGNMENT\tSTATE")
	for _, d := range st.GetDataCenters() {
		leader, term := d.GetLeader(), "-"
		if leader == "" {
			leader = "(none)"
		} else if d.GetTermNumber() > 0 {
			term = fmt.Sprint(d.GetTermNumber())
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%d\t%d\t%d\t%s\t%s\n", d.GetDc(), leader, term, ago(d.GetElectedUnixMs()),
			d.GetLiveNodes(), d.GetPartitions(), d.GetAdopted(), ago(d.GetLastReassignmentUnixMs()), dcState(d))
	}
	if err := w.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(out)
	w = tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "NODE\tDC\tADDRESS\tSTATE\tPARTITIONS\tALARMS\tCLASSES")
	alarms := map[string]int64{}
	unowned := 0
	for _, p := range st.GetPartitions() {
		alarms[p.GetOwner()] += p.GetPendingAlarms()
		if p.GetOwner() == "" {
			unowned++
		}
	}
	for _, n := range st.GetNodes() {
		state := "up"
		switch {
		case n.GetDraining():
			state = "draining"
		case len(n.GetMissingClasses()) > 0:
			state = "kept out: lacks " + strings.Join(n.GetMissingClasses(), ",")
		}
		classes := strings.Join(n.GetClasses(), ",")
		if classes == "" {
			classes = "(not said)"
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%d\t%d\t%s\n", n.GetId(), n.GetDc(), n.GetAddress(), state, len(n.GetPartitions()), alarms[n.GetId()], classes)
	}
	for _, l := range st.GetLostNodes() {
		state := "lost " + ago(l.GetLostUnixMs())
		if l.GetLostUnixMs() == 0 {
			state = "lost"
		}
		if moved := movedText(l.GetMovedTo()); moved != "" {
			state += ", partitions moved to " + moved
		}
		if l.GetWaiting() > 0 {
			state += fmt.Sprintf(", %d partitions wait for adoption", l.GetWaiting())
		}
		fmt.Fprintf(w, "%s\t%s\t-\t%s\t-\t-\t-\n", l.GetId(), l.GetDc(), state)
	}
	if unowned > 0 {
		fmt.Fprintf(w, "(unowned)\t\t\t\t%d\t%d\n", unowned, alarms[""])
	}
	if err := w.Flush(); err != nil {
		return err
	}
	if partitions {
		fmt.Fprintln(out)
		w = tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
		fmt.Fprintln(w, "PARTITION\tHOME\tMANAGED BY\tASSIGNED\tOWNER\tTOKEN\tALARMS")
		for _, p := range st.GetPartitions() {
			fmt.Fprintf(w, "%d\t%s\t%s\t%s\t%s\t%d\t%d\n", p.GetPartition(), p.GetHomeDc(), p.GetManagedByDc(),
				p.GetAssignedNode(), p.GetOwner(), p.GetToken(), p.GetPendingAlarms())
		}
		return w.Flush()
	}
	return nil
}

// movedText lists where partitions went: "dev-1 (32), dev-3 (32)".
func movedText(moved map[string]int32) string {
	var parts []string
	for _, n := range slices.Sorted(maps.Keys(moved)) {
		parts = append(parts, fmt.Sprintf("%s (%d)", n, moved[n]))
	}
	return strings.Join(parts, ", ")
}

func newObjectsCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "objects", Short: "Inspect objects"}
	list := &cobra.Command{
		Use:   "list CLASS",
		Short: "List the objects of a class that have stored something, by partition and ID",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			limit, _ := cmd.Flags().GetInt32("limit")
			token, _ := cmd.Flags().GetString("page-token")
			asJSON, _ := cmd.Flags().GetBool("json")
			return withClient(cmd, func(ctx context.Context, c *client.Client) error {
				resp, err := c.Admin().ListObjects(ctx, &durablev1.ListObjectsRequest{Class: args[0], Limit: limit, PageToken: token})
				if err != nil {
					return err
				}
				if asJSON {
					return printJSON(cmd, resp)
				}
				w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
				fmt.Fprintln(w, "NAME\tID\tPARTITION")
				for _, o := range resp.GetObjects() {
					name := o.GetName()
					switch {
					case len(o.GetNameBytes()) > 0:
						name = fmt.Sprintf("%q", o.GetNameBytes())
					case name == "":
						name = "-"
					}
					fmt.Fprintf(w, "%s\t%s\t%d\n", name, o.GetId(), o.GetPartition())
				}
				if next := resp.GetNextPageToken(); next != "" {
					fmt.Fprintf(w, "...\t(more: --page-token %s)\n", next)
				}
				return w.Flush()
			})
		},
	}
	addClientFlags(list, 30*time.Second)
	list.Flags().Int32("limit", 100, "at most this many objects (at most 10000)")
	list.Flags().String("page-token", "", "continue where the previous page ended (its last line says the token)")
	list.Flags().Bool("json", false, "print JSON")
	cmd.AddCommand(list)
	return cmd
}
