package kube

import (
	"crypto/x509"
	"encoding/pem"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
)

// TestPKI checks that the serving certificate verifies against the CA for every
// address and name clients use, and not for another.
func TestPKI(t *testing.T) {
	dir := t.TempDir()
	ips := []netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("10.255.0.1")}
	p, err := writePKI(dir, ips, []string{"localhost", "kubernetes.default.svc"})
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(p.caPEM) {
		t.Fatal("CA PEM holds no certificate")
	}
	b, err := os.ReadFile(p.certFile)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(b)
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	for _, host := range []string{"127.0.0.1", "10.255.0.1", "localhost", "kubernetes.default.svc"} {
		if _, err := cert.Verify(x509.VerifyOptions{Roots: pool, DNSName: host}); err != nil {
			t.Errorf("verify for %s: %v", host, err)
		}
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: pool, DNSName: "10.0.0.1"}); err == nil {
		t.Error("verified for 10.0.0.1, which is not in the certificate")
	}
	for _, f := range []string{p.keyFile, p.saKeyFile} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if block, _ := pem.Decode(b); block == nil || block.Type != "EC PRIVATE KEY" {
			t.Errorf("%s: not an EC PRIVATE KEY PEM", filepath.Base(f))
		}
	}
}

// TestTokenFile checks the CSV line the API server's --token-auth-file reads.
func TestTokenFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tokens.csv")
	tokens := []Token{
		{Token: "abc", User: "system:node:node1", UID: "n1", Groups: []string{"system:nodes"}},
		{Token: "def", User: "podnetd", UID: "podnetd"},
		{Token: "ghi", User: "admin", UID: "admin", Groups: []string{"system:masters", "team"}},
	}
	if err := writeTokenFile(path, tokens); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	want := "abc,system:node:node1,n1,\"system:nodes\"\ndef,podnetd,podnetd,\"\"\nghi,admin,admin,\"system:masters,team\"\n"
	if string(b) != want {
		t.Errorf("token file:\n%s\nwant:\n%s", b, want)
	}
	if n := NodeToken("node1"); n.User != "system:node:node1" || len(n.Groups) != 1 || n.Groups[0] != "system:nodes" || len(n.Token) != 32 {
		t.Errorf("NodeToken(node1) = %+v", n)
	}
}
