package cli_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/durable-run/durable/cli"
	"github.com/durable-run/durable/cli/clitest"
	"github.com/durable-run/durable/security"
)

// TestSinkServesHTTPSAndNodesVerifyItWithTheCA: `durable sink` serves
// HTTPS with the certificate `durable certs --sink` wrote; the health
// probe and a node's deliveries (--upstream https://…, --upstream-ca)
// verify it against the CA, and a reminder arrives over TLS. A client
// that speaks plain HTTP gets no answer.
func TestSinkServesHTTPSAndNodesVerifyItWithTheCA(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	_, err := run(ctx, "certs", "--dir", dir, "--sink")
	require.NoError(t, err)
	p := security.Paths{Dir: dir}
	files := p.Sink()

	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := lis.Addr().String()
	require.NoError(t, lis.Close())
	sinkCtx, stopSink := context.WithCancel(ctx)
	_, sinkDone := clitest.Start(sinkCtx, cli.TestOptions, "sink", "--listen", addr, "--tls-cert", files.Cert, "--tls-key", files.Key, "--log-level", "error")
	defer func() {
		stopSink()
		require.NoError(t, <-sinkDone)
	}()
	url := "https://" + addr
	require.Eventually(t, func() bool {
		_, err := run(ctx, "health", "--probe-http", url+"/healthz", "--tls-ca", files.CA)
		return err == nil
	}, 30*time.Second, 20*time.Millisecond, "the sink never answered over TLS")
	_, err = run(ctx, "health", "--probe-http", "http://"+addr+"/healthz", "--timeout", "2s")
	require.Error(t, err, "plain HTTP to the TLS sink")

	dev := clitest.StartDev(t, cli.TestOptions, "--nodes", "1", "--partitions", "8", "--upstream", url, "--upstream-ca", files.CA)
	node := dev.Addrs[0]
	_, err = run(ctx, "invoke", "--addr", node, "Reminder", "hi", "set", `{"message":"hello over tls","in":"1s"}`)
	require.NoError(t, err)
	out, err := run(ctx, "alarm", "wait", "--addr", node, "--timeout", "30s", "Reminder", "hi")
	require.NoError(t, err, out)

	pem, err := os.ReadFile(files.CA)
	require.NoError(t, err)
	roots := x509.NewCertPool()
	require.True(t, roots.AppendCertsFromPEM(pem))
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get(url + "/deliveries")
	require.NoError(t, err)
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.NoError(t, err)
	require.Contains(t, string(body), "hello over tls", "the reminder was delivered over TLS")
	require.NoError(t, dev.Stop())
}

// TestUpstreamCAThatIsNoCertificateIsAUsageError: a --upstream-ca that is
// missing or holds no certificate stops the agent before it starts, with
// an error naming the flag and the file.
func TestUpstreamCAThatIsNoCertificateIsAUsageError(t *testing.T) {
	ctx := context.Background()
	notPEM := filepath.Join(t.TempDir(), "ca.pem")
	require.NoError(t, os.WriteFile(notPEM, []byte("not a certificate\n"), 0o600))
	for file, says := range map[string]string{
		notPEM:                     "--upstream-ca " + notPEM + " holds no PEM certificate",
		filepath.Join(notPEM, "x"): "--upstream-ca: open " + filepath.Join(notPEM, "x"),
	} {
		_, err := run(ctx, "agent", "--etcd", "http://127.0.0.1:1", "--upstream", "https://sink:4680", "--upstream-ca", file)
		require.ErrorContains(t, err, says)
		require.Equal(t, 2, cli.ExitCode(err), "%v", err)
	}
}
