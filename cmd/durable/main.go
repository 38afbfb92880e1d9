// Command durable is the single binary of the durable runtime: a node agent,
// a development cluster, a client and admin tool, and a delivery sink.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := newRootCmd().ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "durable:", err)
		os.Exit(exitCode(err))
	}
}
