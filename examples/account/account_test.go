package account_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/durable-run/durable/client"
	"github.com/durable-run/durable/embedetcd"
	"github.com/durable-run/durable/examples/account"
	"github.com/durable-run/durable/examples/account/accountpb"
	"github.com/durable-run/durable/node"
	"github.com/durable-run/durable/nodetest"
	durablev1 "github.com/durable-run/durable/proto/durable/v1"
)

var sharedEtcd *embedetcd.Server

func TestMain(m *testing.M) { embedetcd.Main(m, &sharedEtcd) }

// lastMinute is the fake clock's start: the last minute of a month and of
// a year. Moving a fake clock fires the node's tickers once per period in
// between: two advances of a month took 18 s under -race, one minute
// takes nothing.
var lastMinute = time.Date(2030, 12, 31, 23, 59, 0, 0, time.UTC)

// start runs a one-node cluster serving Account on a fake clock at
// lastMinute and dials it.
func start(t *testing.T) (*nodetest.Harness, *client.Client) {
	t.Helper()
	h := nodetest.StartOne(t, nodetest.Options{
		Etcd:     sharedEtcd,
		Clock:    clockwork.NewFakeClockAt(lastMinute),
		Register: func(reg *node.Registry) error { return account.Register(reg) },
	})
	return h, h.Dial()
}

// settle waits until everything the fake clock's time made due has run
// (Account's alarm handler never waits on the clock).
func settle(h *nodetest.Harness) {
	h.WaitQuiet()
	h.WaitFor("alarm handlers done", func() bool { return h.Node().RunningAlarms() == 0 })
}

// alarm reads the account's alarm through the Admin API.
func alarm(t *testing.T, cl *client.Client, name string) time.Time {
	t.Helper()
	resp, err := cl.Admin().GetAlarm(context.Background(), &durablev1.GetAlarmRequest{Class: account.ClassName, Object: client.ByName(name)})
	require.NoError(t, err)
	if resp.GetAlarm() == nil {
		return time.Time{}
	}
	return time.UnixMilli(resp.GetAlarm().GetScheduledUnixMs()).UTC()
}

// statements lists the account's statements as "YYYY-MM=cents".
func statements(t *testing.T, acct *accountpb.AccountClient) []string {
	t.Helper()
	reply, err := acct.Statements(context.Background(), &accountpb.StatementsRequest{})
	require.NoError(t, err)
	out := []string{}
	for _, s := range reply.GetStatements() {
		out = append(out, fmt.Sprintf("%s=%d", s.GetMonth(), s.GetClosingBalanceCents()))
	}
	return out
}

func balance(t *testing.T, acct *accountpb.AccountClient) int64 {
	t.Helper()
	reply, err := acct.Balance(context.Background(), &accountpb.BalanceRequest{})
	require.NoError(t, err)
	return reply.GetBalanceCents()
}

// TestTypedCallsThroughTheGeneratedStub: the generated client calls the
// generated router's handlers with proto messages, one object per account.
func TestTypedCallsThroughTheGeneratedStub(t *testing.T) {
	_, cl := start(t)
	ctx := context.Background()
	alice := accountpb.NewAccountClient(cl, client.ByName("alice"))
	require.Zero(t, balance(t, alice), "a new account is empty")

	dep, err := alice.Deposit(ctx, &accountpb.DepositRequest{AmountCents: 500})
	require.NoError(t, err)
	require.Equal(t, int64(500), dep.GetBalanceCents())
	wd, err := alice.Withdraw(ctx, &accountpb.WithdrawRequest{AmountCents: 200})
	require.NoError(t, err)
	require.Equal(t, int64(300), wd.GetBalanceCents())
	require.Equal(t, int64(300), balance(t, alice))

	wd, err = alice.Withdraw(ctx, &accountpb.WithdrawRequest{AmountCents: 300})
	require.NoError(t, err)
	require.Zero(t, wd.GetBalanceCents(), "the whole balance may be withdrawn")

	bob := accountpb.NewAccountClient(cl, client.ByName("bob"))
	require.Zero(t, balance(t, bob), "accounts are separate objects")
}

// TestRefusalsAreInvalidArgumentAndWriteNothing: an overdraft and a
// non-positive amount reach the caller as InvalidArgument (not the object's
// own error) and leave the balance as it was.
func TestRefusalsAreInvalidArgumentAndWriteNothing(t *testing.T) {
	_, cl := start(t)
	ctx := context.Background()
	acct := accountpb.NewAccountClient(cl, client.ByName("carol"))
	_, err := acct.Deposit(ctx, &accountpb.DepositRequest{AmountCents: 100})
	require.NoError(t, err)

	for _, tc := range []struct {
		name string
		call func() error
		msg  string
	}{
		{"overdraft", func() error {
			_, err := acct.Withdraw(ctx, &accountpb.WithdrawRequest{AmountCents: 101})
			return err
		}, "insufficient funds: account carol holds 100 cents, 101 asked"},
		{"zero withdrawal", func() error {
			_, err := acct.Withdraw(ctx, &accountpb.WithdrawRequest{})
			return err
		}, "amount_cents = 0, want > 0"},
		{"negative deposit", func() error {
			_, err := acct.Deposit(ctx, &accountpb.DepositRequest{AmountCents: -5})
			return err
		}, "amount_cents = -5, want > 0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call()
			require.Equal(t, codes.InvalidArgument, status.Code(err), "%v", err)
			require.Equal(t, "INVALID_ARGUMENT", client.Detail(err).GetReason())
			require.False(t, client.IsObjectError(err))
			require.Contains(t, status.Convert(err).Message(), tc.msg)
			require.Equal(t, int64(100), balance(t, acct), "a refusal wrote")
		})
	}
}

// TestUnknownMethodIsUnimplemented: a name the service does not declare
// (method names are the rpcs' names, case and all) is refused before any
// handler runs.
func TestUnknownMethodIsUnimplemented(t *testing.T) {
	_, cl := start(t)
	_, err := cl.Invoke(context.Background(), account.ClassName, client.ByName("dave"), "deposit", nil)
	require.Equal(t, codes.Unimplemented, status.Code(err), "%v", err)
	require.Equal(t, "UNKNOWN_METHOD", client.Detail(err).GetReason())
	require.Contains(t, status.Convert(err).Message(), "Balance, Deposit, Statements, Withdraw")
}

// TestUndecodablePayloadIsBadPayload: bytes that are not a DepositRequest
// (here JSON, as a caller who forgot the codec sends) never reach the
// handler.
func TestUndecodablePayloadIsBadPayload(t *testing.T) {
	_, cl := start(t)
	_, err := cl.Invoke(context.Background(), account.ClassName, client.ByName("erin"),
		accountpb.Account_Deposit.Name(), []byte(`{"amount_cents":500}`))
	require.Equal(t, codes.InvalidArgument, status.Code(err), "%v", err)
	require.Equal(t, "BAD_PAYLOAD", client.Detail(err).GetReason())
}

// TestMonthlyStatementsByAlarm: the first deposit arms the alarm for the
// next month's start; at that instant, not before, the month's closing
// balance is written and the alarm moves a month on (across the year's
// end). An account never written has no alarm.
func TestMonthlyStatementsByAlarm(t *testing.T) {
	h, cl := start(t)
	ctx := context.Background()
	require.True(t, alarm(t, cl, "frank").IsZero())
	acct := accountpb.NewAccountClient(cl, client.ByName("frank"))
	_, err := acct.Deposit(ctx, &accountpb.DepositRequest{AmountCents: 1000})
	require.NoError(t, err)
	_, err = acct.Withdraw(ctx, &accountpb.WithdrawRequest{AmountCents: 250})
	require.NoError(t, err)
	jan := time.Date(2031, 1, 1, 0, 0, 0, 0, time.UTC)
	require.Equal(t, jan, alarm(t, cl, "frank"))

	h.Advance(jan.Sub(h.Clock.Now()) - time.Millisecond)
	settle(h)
	require.Empty(t, statements(t, acct), "a statement before the month ended")

	h.Advance(time.Millisecond)
	h.WaitFor("December's statement", func() bool { return len(statements(t, acct)) == 1 })
	require.Equal(t, []string{"2030-12=750"}, statements(t, acct))
	feb := time.Date(2031, 2, 1, 0, 0, 0, 0, time.UTC)
	h.WaitFor("the alarm moved to February", func() bool { return alarm(t, cl, "frank").Equal(feb) })

	_, err = acct.Deposit(ctx, &accountpb.DepositRequest{AmountCents: 50})
	require.NoError(t, err)
	require.Equal(t, feb, alarm(t, cl, "frank"), "a write leaves an armed alarm alone")
	require.Equal(t, []string{"2030-12=750"}, statements(t, acct))
}
