package kube

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

var getOptions = metav1.GetOptions{}

// RESTConfig returns a client configuration for token at URL, trusting CAData.
// Client-side rate limits are lifted (QPS 1000, burst 2000): tests and benchmarks
// that fill the API server should measure it, not client-go's default 5 QPS.
func (c *ControlPlane) RESTConfig(token string) *rest.Config {
	return &rest.Config{
		Host:            c.URL,
		BearerToken:     token,
		TLSClientConfig: rest.TLSClientConfig{CAData: c.CAData},
		QPS:             1000,
		Burst:           2000,
	}
}

// ClientFor returns a clientset that authenticates with token.
func (c *ControlPlane) ClientFor(token string) (*kubernetes.Clientset, error) {
	cs, err := kubernetes.NewForConfig(c.RESTConfig(token))
	if err != nil {
		return nil, fmt.Errorf("kube: clientset: %w", err)
	}
	return cs, nil
}

// WriteKubeconfig writes a kubeconfig for token at server (empty: URL) to path,
// atomically (temporary file, fsync, rename). A server at another address, for a
// client in another network namespace, must be one of the serving certificate's
// IPs (Options.ServingIPs, the advertise address) and use Port.
func (c *ControlPlane) WriteKubeconfig(path, server, token string) error {
	if server == "" {
		server = c.URL
	}
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["podnet"] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: c.CAData}
	cfg.AuthInfos["user"] = &clientcmdapi.AuthInfo{Token: token}
	cfg.Contexts["podnet"] = &clientcmdapi.Context{Cluster: "podnet", AuthInfo: "user"}
	cfg.CurrentContext = "podnet"
	b, err := clientcmd.Write(*cfg)
	if err != nil {
		return fmt.Errorf("kube: kubeconfig: %w", err)
	}
	if err := writeFileAtomic(path, b, 0o600); err != nil {
		return fmt.Errorf("kube: kubeconfig: %w", err)
	}
	return nil
}

// ServiceAccountToken creates the service account namespace/name if it does not
// exist and returns a one-hour token for it from the TokenRequest API: the identity
// a DaemonSet's pods get (system:serviceaccount:<namespace>:<name>). The namespace
// must exist.
func (c *ControlPlane) ServiceAccountToken(ctx context.Context, namespace, name string) (string, error) {
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace}}
	_, err := c.Client.CoreV1().ServiceAccounts(namespace).Create(ctx, sa, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return "", fmt.Errorf("kube: service account %s/%s: %w", namespace, name, err)
	}
	seconds := int64(3600)
	tr, err := c.Client.CoreV1().ServiceAccounts(namespace).CreateToken(ctx, name,
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &seconds}},
		metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("kube: token for %s/%s: %w", namespace, name, err)
	}
	return tr.Status.Token, nil
}

// writeFileAtomic writes data to a temporary file beside path, syncs it, renames it
// over path and syncs the directory.
func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp) // no-op after the rename
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Chmod(perm); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
