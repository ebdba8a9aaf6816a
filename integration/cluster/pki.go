package cluster

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"time"
)

// KubeletClientUser is the user the API server's client certificate for
// kubelets names (kubeadm's name). It holds the ClusterRole
// system:kubelet-api-admin, which kubelets check through their authorization
// webhook before serving exec, attach, port-forward, logs and metrics.
const KubeletClientUser = "kube-apiserver-kubelet-client"

// kubeletPKI is the trust between the API server and the kubelets, apart from
// the control plane's own CA: one CA ("podnet-e2e-kubelet-ca") signs the API
// server's client certificate (which kubelets accept through their x509
// clientCAFile) and each kubelet's serving certificate (which the API server
// verifies with --kubelet-certificate-authority, for the node's name and
// address). integration/kube does not keep its CA's key, hence a CA of its own.
type kubeletPKI struct {
	CAFile                string
	ClientCert, ClientKey string
	ca                    *x509.Certificate
	caKey                 *ecdsa.PrivateKey
	dir                   string
	serial                int64
	notBefore, notAfter   time.Time
}

// newKubeletPKI writes the CA and the API server's client certificate under dir.
func newKubeletPKI(dir string) (*kubeletPKI, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	now := time.Now().Add(-time.Hour) // tolerate a little clock skew
	p := &kubeletPKI{dir: dir, notBefore: now, notAfter: now.Add(10 * 365 * 24 * time.Hour)}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "podnet-e2e-kubelet-ca"},
		NotBefore:             p.notBefore,
		NotAfter:              p.notAfter,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("kubelet CA: %w", err)
	}
	if p.ca, err = x509.ParseCertificate(der); err != nil {
		return nil, err
	}
	p.caKey, p.serial = key, 1
	p.CAFile = filepath.Join(dir, "kubelet-ca.crt")
	if err := os.WriteFile(p.CAFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return nil, err
	}
	p.ClientCert, p.ClientKey, err = p.issue("apiserver-kubelet-client", &x509.Certificate{
		Subject:     pkix.Name{CommonName: KubeletClientUser},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	return p, err
}

// servingCert issues a kubelet's serving certificate for its node name and
// address (the API server dials kubelets by name: the sandbox's hosts file
// resolves it) and returns the certificate and key files.
func (p *kubeletPKI) servingCert(node string, addr netip.Addr) (cert, key string, err error) {
	return p.issue("kubelet-"+node, &x509.Certificate{
		Subject:     pkix.Name{CommonName: "system:node:" + node, Organization: []string{"system:nodes"}},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:    []string{node},
		IPAddresses: []net.IP{net.IP(addr.AsSlice())},
	})
}

// issue signs tmpl (subject, usages, names) with a new ECDSA key and writes
// <name>.crt and <name>.key.
func (p *kubeletPKI) issue(name string, tmpl *x509.Certificate) (cert, key string, err error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", err
	}
	p.serial++
	tmpl.SerialNumber = big.NewInt(p.serial)
	tmpl.NotBefore, tmpl.NotAfter = p.notBefore, p.notAfter
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.ca, &k.PublicKey, p.caKey)
	if err != nil {
		return "", "", fmt.Errorf("certificate %s: %w", name, err)
	}
	keyDER, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		return "", "", err
	}
	cert, key = filepath.Join(p.dir, name+".crt"), filepath.Join(p.dir, name+".key")
	if err := os.WriteFile(cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return "", "", err
	}
	if err := os.WriteFile(key, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return "", "", err
	}
	return cert, key, nil
}
