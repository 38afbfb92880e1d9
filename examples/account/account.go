// Package account is an example class whose API is a proto service: Account,
// one bank account per object (name it by the account's number).
//
// accountpb/account.proto declares the service; protoc-gen-go generates its
// messages and protoc-gen-durable (cmd/protoc-gen-durable) its class
// interface, method declarations, router and client stub
// (accountpb/account_durable.pb.go). `make proto` regenerates both. The class
// is a struct with one handler per rpc and the generated router embedded:
//
//	a.Router = accountpb.AccountMethods(a)
//
// and a Go caller uses the generated stub:
//
//	acct := accountpb.NewAccountClient(cl, client.ByName("alice"))
//	reply, err := acct.Deposit(ctx, &accountpb.DepositRequest{AmountCents: 500})
//
// The messages travel as protobuf binary, so a client in another language
// generates them from the same .proto and calls the public
// durable.v1.Objects/Invoke (docs/classes.md shows it with grpcurl).
//
// The balance is stored in cents under one key. A withdrawal the balance
// does not cover is refused with ErrInsufficientFunds, an
// ErrInvalidArgument: the caller gets InvalidArgument and nothing is
// written.
//
// Monthly statements: the first write arms the alarm for the start of the
// next month (UTC). The handler stores the statement of the month that
// ended at the alarm's scheduled time — the balance as it finds it, at or
// just after midnight — and re-arms for the month after, so Account is a
// class with generated methods and an Alarm method of its own (which is
// why protoc-gen-durable refuses an rpc named Alarm). A handler that runs
// late, or is retried, writes the same month's statement; months missed
// while no node ran it are written one run after another, each with the
// balance of its run.
package account

import (
	"context"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/durable-run/durable"
	"github.com/durable-run/durable/examples/account/accountpb"
	"github.com/durable-run/durable/node"
)

// ClassName is the name Register gives the class: the service's name.
const ClassName = accountpb.AccountClassName

// ErrInsufficientFunds: a withdrawal asked for more than the balance. It is
// an ErrInvalidArgument, so callers see InvalidArgument (reason
// INVALID_ARGUMENT) rather than the object's own error.
var ErrInsufficientFunds = fmt.Errorf("%w: insufficient funds", durable.ErrInvalidArgument)

// Register adds Account to reg.
func Register(reg *node.Registry) error {
	return node.RegisterClass(reg, ClassName, func(_ context.Context, st durable.State) (*Account, error) {
		return newAccount(st), nil
	})
}

// Account is one bank account. It implements accountpb.AccountClass.
type Account struct {
	*durable.Router
	st durable.State
}

var _ accountpb.AccountClass = (*Account)(nil)

func newAccount(st durable.State) *Account {
	a := &Account{st: st}
	a.Router = accountpb.AccountMethods(a)
	return a
}

const balanceKey = "balance"

func (a *Account) balance(ctx context.Context) (int64, error) {
	b, ok, err := a.st.Storage().Get(ctx, balanceKey)
	if err != nil || !ok {
		return 0, err
	}
	v, err := strconv.ParseInt(string(b), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("account: stored balance %q: %w", b, err)
	}
	return v, nil
}

// setBalance stores v and arms the statement alarm if it is not armed.
func (a *Account) setBalance(ctx context.Context, v int64) error {
	s := a.st.Storage()
	if err := s.Put(ctx, balanceKey, []byte(strconv.FormatInt(v, 10))); err != nil {
		return err
	}
	if _, armed, err := s.GetAlarm(ctx); err != nil || armed {
		return err
	}
	return s.SetAlarm(ctx, nextMonth(a.st.Clock().Now()))
}

// nextMonth is the start of the month after t's, in UTC.
func nextMonth(t time.Time) time.Time {
	t = t.UTC()
	return time.Date(t.Year(), t.Month()+1, 1, 0, 0, 0, 0, time.UTC)
}

const statementPrefix = "statement/"

// Alarm writes the statement of the month that ended at the alarm's time
// and arms the next one.
func (a *Account) Alarm(ctx context.Context, info durable.AlarmInfo) error {
	bal, err := a.balance(ctx)
	if err != nil {
		return err
	}
	ended := info.ScheduledTime.UTC().AddDate(0, 0, -1) // the month's last day
	s := a.st.Storage()
	if err := s.Put(ctx, statementPrefix+ended.Format("2006-01"), []byte(strconv.FormatInt(bal, 10))); err != nil {
		return err
	}
	return s.SetAlarm(ctx, nextMonth(info.ScheduledTime))
}

// Statements implements accountpb.AccountClass.
func (a *Account) Statements(ctx context.Context, _ *accountpb.StatementsRequest) (*accountpb.StatementsResponse, error) {
	kvs, err := a.st.Storage().List(ctx, durable.ListOptions{Prefix: statementPrefix})
	if err != nil {
		return nil, err
	}
	out := &accountpb.StatementsResponse{}
	for _, kv := range kvs {
		bal, err := strconv.ParseInt(string(kv.Value), 10, 64)
		if err != nil {
			return nil, fmt.Errorf("account: stored statement %s: %w", kv.Key, err)
		}
		out.Statements = append(out.Statements, &accountpb.Statement{
			Month:               strings.TrimPrefix(kv.Key, statementPrefix),
			ClosingBalanceCents: bal,
		})
	}
	return out, nil
}

func checkAmount(cents int64) error {
	if cents <= 0 {
		return durable.Invalidf("account: amount_cents = %d, want > 0", cents)
	}
	return nil
}

// Deposit implements accountpb.AccountClass.
func (a *Account) Deposit(ctx context.Context, req *accountpb.DepositRequest) (*accountpb.DepositResponse, error) {
	if err := checkAmount(req.GetAmountCents()); err != nil {
		return nil, err
	}
	bal, err := a.balance(ctx)
	if err != nil {
		return nil, err
	}
	if req.GetAmountCents() > math.MaxInt64-bal {
		return nil, durable.Invalidf("account: a deposit of %d cents overflows the balance of %d", req.GetAmountCents(), bal)
	}
	bal += req.GetAmountCents()
	if err := a.setBalance(ctx, bal); err != nil {
		return nil, err
	}
	return &accountpb.DepositResponse{BalanceCents: bal}, nil
}

// Withdraw implements accountpb.AccountClass.
func (a *Account) Withdraw(ctx context.Context, req *accountpb.WithdrawRequest) (*accountpb.WithdrawResponse, error) {
	if err := checkAmount(req.GetAmountCents()); err != nil {
		return nil, err
	}
	bal, err := a.balance(ctx)
	if err != nil {
		return nil, err
	}
	if req.GetAmountCents() > bal {
		return nil, fmt.Errorf("%w: account %s holds %d cents, %d asked", ErrInsufficientFunds, a.st.Name(), bal, req.GetAmountCents())
	}
	bal -= req.GetAmountCents()
	if err := a.setBalance(ctx, bal); err != nil {
		return nil, err
	}
	return &accountpb.WithdrawResponse{BalanceCents: bal}, nil
}

// Balance implements accountpb.AccountClass.
func (a *Account) Balance(ctx context.Context, _ *accountpb.BalanceRequest) (*accountpb.BalanceResponse, error) {
	bal, err := a.balance(ctx)
	if err != nil {
		return nil, err
	}
	return &accountpb.BalanceResponse{BalanceCents: bal}, nil
}
