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
package account

import (
	"context"
	"fmt"
	"math"
	"strconv"

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

func (a *Account) setBalance(ctx context.Context, v int64) error {
	return a.st.Storage().Put(ctx, balanceKey, []byte(strconv.FormatInt(v, 10)))
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
