package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/compiler/protogen"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/pluginpb"

	"github.com/durable-run/durable/examples/account/accountpb"
)

// request is what protoc or buf sends for generating fd (its imports
// first, as protoc orders them).
func request(param string, fds ...*descriptorpb.FileDescriptorProto) *pluginpb.CodeGeneratorRequest {
	req := &pluginpb.CodeGeneratorRequest{ProtoFile: fds}
	if param != "" {
		req.Parameter = proto.String(param)
	}
	req.FileToGenerate = []string{fds[len(fds)-1].GetName()}
	return req
}

// withImports lists fd after everything it imports, transitively.
func withImports(fd protoreflect.FileDescriptor) []*descriptorpb.FileDescriptorProto {
	var out []*descriptorpb.FileDescriptorProto
	seen := map[string]bool{}
	var visit func(protoreflect.FileDescriptor)
	visit = func(f protoreflect.FileDescriptor) {
		if seen[f.Path()] {
			return
		}
		seen[f.Path()] = true
		for i := 0; i < f.Imports().Len(); i++ {
			visit(f.Imports().Get(i).FileDescriptor)
		}
		out = append(out, protodesc.ToFileDescriptorProto(f))
	}
	visit(fd)
	return out
}

// run runs the generator in-process, as protogen.Options.Run does, and
// returns the generated files by name.
func run(t *testing.T, req *pluginpb.CodeGeneratorRequest) (map[string]string, error) {
	t.Helper()
	p, err := protogen.Options{}.New(req)
	require.NoError(t, err)
	if err := generate(p); err != nil {
		return nil, err
	}
	resp := p.Response()
	require.Empty(t, resp.GetError())
	files := map[string]string{}
	for _, f := range resp.GetFile() {
		files[f.GetName()] = f.GetContent()
	}
	return files, nil
}

// TestCommittedAccountCodeIsTheGeneratorsOutput: the committed
// examples/account/accountpb/account_durable.pb.go is byte for byte what
// the generator makes of the compiled account.proto (as buf.gen.examples.yaml
// runs it, paths=source_relative), so generated code cannot drift from the
// generator. After changing either, run `make proto`.
func TestCommittedAccountCodeIsTheGeneratorsOutput(t *testing.T) {
	files, err := run(t, request("paths=source_relative", withImports(accountpb.File_accountpb_account_proto)...))
	require.NoError(t, err)
	const name = "accountpb/account_durable.pb.go"
	require.Contains(t, files, name)
	require.Len(t, files, 1)
	want, err := os.ReadFile(filepath.Join("..", "..", "examples", "account", filepath.FromSlash(name)))
	require.NoError(t, err)
	if got := files[name]; got != string(want) {
		t.Fatalf("the generator's output differs from the committed %s (run `make proto`): %s", name, firstDiff(string(want), got))
	}
}

// firstDiff names the first line where got differs from want.
func firstDiff(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	for i := 0; i < len(w) || i < len(g); i++ {
		var wl, gl string
		if i < len(w) {
			wl = w[i]
		}
		if i < len(g) {
			gl = g[i]
		}
		if wl != gl {
			return fmt.Sprintf("line %d:\n committed: %q\n generated: %q", i+1, wl, gl)
		}
	}
	return "no difference"
}

// file is a hand-built proto3 file of package s with messages Req and Resp
// and service S of the given methods.
func file(methods ...*descriptorpb.MethodDescriptorProto) *descriptorpb.FileDescriptorProto {
	return &descriptorpb.FileDescriptorProto{
		Name:        proto.String("s/s.proto"),
		Package:     proto.String("s"),
		Syntax:      proto.String("proto3"),
		Options:     &descriptorpb.FileOptions{GoPackage: proto.String("example.com/s;s")},
		MessageType: []*descriptorpb.DescriptorProto{{Name: proto.String("Req")}, {Name: proto.String("Resp")}},
		Service:     []*descriptorpb.ServiceDescriptorProto{{Name: proto.String("S"), Method: methods}},
	}
}

func rpc(name string, clientStreaming, serverStreaming bool) *descriptorpb.MethodDescriptorProto {
	return &descriptorpb.MethodDescriptorProto{
		Name:            proto.String(name),
		InputType:       proto.String(".s.Req"),
		OutputType:      proto.String(".s.Resp"),
		ClientStreaming: proto.Bool(clientStreaming),
		ServerStreaming: proto.Bool(serverStreaming),
	}
}

// TestRefusesWhatADurableMethodCannotBe: a streaming rpc, or one named like
// the class's own Invoke or Alarm, fails the run with an error that names
// the file and the rpc, and nothing is generated — never a silent skip.
func TestRefusesWhatADurableMethodCannotBe(t *testing.T) {
	for _, tc := range []struct {
		name string
		rpc  *descriptorpb.MethodDescriptorProto
		want string
	}{
		{"server streaming", rpc("Watch", false, true), "s/s.proto: rpc S.Watch is streaming: a durable method takes one request and returns one reply"},
		{"client streaming", rpc("Upload", true, false), "s/s.proto: rpc S.Upload is streaming"},
		{"bidirectional", rpc("Chat", true, true), "s/s.proto: rpc S.Chat is streaming"},
		{"named Invoke", rpc("Invoke", false, false), "s/s.proto: rpc S.Invoke: the name Invoke is taken by the class's own Invoke method"},
		{"named Alarm", rpc("Alarm", false, false), "s/s.proto: rpc S.Alarm: the name Alarm is taken"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			files, err := run(t, request("", file(rpc("Get", false, false), tc.rpc)))
			require.ErrorContains(t, err, tc.want)
			require.Empty(t, files)
		})
	}
}

// TestMessagesOfOtherPackagesAreQualified: an rpc taking and returning
// google.protobuf.Empty refers to it through its Go package.
func TestMessagesOfOtherPackagesAreQualified(t *testing.T) {
	f := file(&descriptorpb.MethodDescriptorProto{
		Name:       proto.String("Ping"),
		InputType:  proto.String(".google.protobuf.Empty"),
		OutputType: proto.String(".s.Resp"),
	})
	f.Dependency = []string{"google/protobuf/empty.proto"}
	files, err := run(t, request("", protodesc.ToFileDescriptorProto(emptypb.File_google_protobuf_empty_proto), f))
	require.NoError(t, err)
	got := files["example.com/s/s_durable.pb.go"]
	require.Contains(t, got, `emptypb "google.golang.org/protobuf/types/known/emptypb"`)
	require.Contains(t, got, `S_Ping = durable.NewMethod[*emptypb.Empty, *Resp]("Ping")`)
	require.Contains(t, got, `Ping(ctx context.Context, req *emptypb.Empty) (*Resp, error)`)
}
