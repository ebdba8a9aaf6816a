package kube

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Token is one line of the API server's static token file: a bearer token and the
// identity it authenticates as. The file is read once at start, so every token a
// test needs is given in Options.Tokens before Start.
type Token struct {
	Token  string
	User   string
	UID    string
	Groups []string
}

// NewToken returns a Token with a random bearer token for user in groups.
func NewToken(user string, groups ...string) Token {
	return Token{Token: randomHex(16), User: user, UID: user, Groups: groups}
}

// NodeToken returns a token for the kubelet identity of the named node
// (system:node:<name> in system:nodes), which the Node authorizer recognises.
func NodeToken(node string) Token {
	return NewToken("system:node:"+node, "system:nodes")
}

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(fmt.Sprintf("crypto/rand: %v", err)) // never fails on Linux
	}
	return hex.EncodeToString(b)
}

// validate rejects what the CSV token file cannot hold unquoted.
func (t Token) validate() error {
	if t.Token == "" || t.User == "" {
		return fmt.Errorf("token for user %q: token and user must be set", t.User)
	}
	for _, s := range append([]string{t.Token, t.User, t.UID}, t.Groups...) {
		if strings.ContainsAny(s, ",\"\n\r") {
			return fmt.Errorf("token for user %q: %q holds a comma, quote or newline", t.User, s)
		}
	}
	return nil
}

// writeTokenFile writes the --token-auth-file: token,user,uid,"group1,group2".
func writeTokenFile(path string, tokens []Token) error {
	var b strings.Builder
	for _, t := range tokens {
		fmt.Fprintf(&b, "%s,%s,%s,\"%s\"\n", t.Token, t.User, t.UID, strings.Join(t.Groups, ","))
	}
	return os.WriteFile(path, []byte(b.String()), 0o600)
}

// pki holds the files Start generates under <dir>/pki.
type pki struct {
	caFile, certFile, keyFile, saKeyFile string
	caPEM                                []byte
}

// writePKI generates a CA, a serving certificate it signs for ips and dns, and a
// service-account signing key, all ECDSA P-256, and writes them under dir.
func writePKI(dir string, ips []netip.Addr, dns []string) (*pki, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	p := &pki{
		caFile:    filepath.Join(dir, "ca.crt"),
		certFile:  filepath.Join(dir, "apiserver.crt"),
		keyFile:   filepath.Join(dir, "apiserver.key"),
		saKeyFile: filepath.Join(dir, "service-account.key"),
	}
	now := time.Now().Add(-time.Hour) // tolerate a little clock skew
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "podnet-test-ca"},
		NotBefore:             now,
		NotAfter:              now.Add(10 * 365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, fmt.Errorf("ca certificate: %w", err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "kube-apiserver"},
		NotBefore:    now,
		NotAfter:     now.Add(10 * 365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     dns,
	}
	for _, ip := range ips {
		tmpl.IPAddresses = append(tmpl.IPAddresses, net.IP(ip.AsSlice()))
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return nil, fmt.Errorf("serving certificate: %w", err)
	}
	saKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	p.caPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})
	files := []struct {
		path string
		data []byte
	}{
		{p.caFile, p.caPEM},
		{p.certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})},
		{p.keyFile, ecKeyPEM(key)},
		{p.saKeyFile, ecKeyPEM(saKey)},
	}
	for _, f := range files {
		if f.data == nil {
			return nil, fmt.Errorf("encode %s", f.path)
		}
		if err := os.WriteFile(f.path, f.data, 0o600); err != nil {
			return nil, err
		}
	}
	return p, nil
}

func ecKeyPEM(k *ecdsa.PrivateKey) []byte {
	der, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		return nil
	}
	return pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der})
}
