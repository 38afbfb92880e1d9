package chat_test

import (
	"context"
	"fmt"
	"log"

	"github.com/durable-run/durable/client"
	"github.com/durable-run/durable/examples/chat"
)

// A Go program calls Room through any node of a cluster (here `chat dev`'s)
// with the method declarations the class handles. The example is compiled,
// not run: it needs a running cluster.
func Example_client() {
	ctx := context.Background()
	cl, err := client.Dial("127.0.0.1:4600", client.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer cl.Close()

	posted, err := client.Call(ctx, cl, chat.ClassName, client.ByName("lobby"),
		chat.Post, chat.PostRequest{User: "ada", Text: "hi"})
	if err != nil {
		log.Fatal(err)
	}

	// A stub binds the methods to one object.
	read := client.Bind(cl.Stub(chat.ClassName, client.ByName("lobby")), chat.Read)
	got, err := read(ctx, chat.ReadRequest{Since: posted.Seq - 1})
	if err != nil {
		log.Fatal(err)
	}
	for _, m := range got.Messages {
		fmt.Printf("%d %s: %s\n", m.Seq, m.User, m.Text)
	}
}
