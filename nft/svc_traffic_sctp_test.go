package nft

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"net/netip"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/podnet/podnet/integration/sandbox"
	"golang.org/x/sys/unix"
)

// SCTP through a ClusterIP, in the topology of svc_traffic_test.go. Two
// tests: real associations between SCTP sockets when the kernel has SCTP
// (CONFIG_IP_SCTP), and hand-made INIT and INIT ACK packets over raw sockets,
// which need only SCTP conntrack and NAT (CONFIG_NF_CT_PROTO_SCTP) and so run
// on kernels without the SCTP stack.

const svcSCTPVIP = "10.96.0.12" // sctp: 80/SCTP, endpoints pod-a and pod-b on 8080

func sctpService() Service {
	return Service{
		Namespace: "default", Name: "sctp",
		ClusterIPs: addrs(svcSCTPVIP),
		Ports:      []ServicePort{{Name: "http", Protocol: SCTP, Port: 80}},
		Endpoints:  []Endpoint{svcEndpoint(svcPodAIP), svcEndpoint(svcPodBIP)},
	}
}

// setTimeout sets the receive (and send) timeout of socket fd.
func setTimeout(fd, opt int, d time.Duration) error {
	tv := unix.NsecToTimeval(d.Nanoseconds())
	return unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, opt, &tv)
}

// serveSCTP answers every SCTP association to ip:8080 in ns with
// "name clientIP", like serveTCP.
func serveSCTP(t *testing.T, ns *sandbox.NetNS, name, ip string) {
	t.Helper()
	fd := -1
	err := ns.Do(func() (err error) {
		if fd, err = unix.Socket(unix.AF_INET, unix.SOCK_STREAM, unix.IPPROTO_SCTP); err != nil {
			return err
		}
		if err := unix.Bind(fd, &unix.SockaddrInet4{Port: 8080, Addr: netip.MustParseAddr(ip).As4()}); err != nil {
			return err
		}
		return unix.Listen(fd, 16)
	})
	if err == nil {
		err = setTimeout(fd, unix.SO_RCVTIMEO, 100*time.Millisecond) // bounds accept
	}
	if err != nil {
		if fd >= 0 {
			unix.Close(fd)
		}
		t.Fatalf("listen on sctp %s:8080 in %s: %v", ip, ns.Name, err)
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-done:
				return
			default:
			}
			c, sa, err := unix.Accept(fd)
			if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
				continue
			}
			if err != nil {
				return
			}
			peer, _ := sa.(*unix.SockaddrInet4)
			if peer != nil {
				unix.Write(c, fmt.Appendf(nil, "%s %s", name, netip.AddrFrom4(peer.Addr)))
			}
			unix.Close(c)
		}
	})
	t.Cleanup(func() {
		close(done)
		wg.Wait()
		unix.Close(fd)
	})
}

// askSCTP opens an SCTP association from ns to vip:80 and returns the answer.
func askSCTP(ns *sandbox.NetNS, vip string) (reply, error) {
	var text string
	err := ns.Do(func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, unix.IPPROTO_SCTP)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		for _, opt := range []int{unix.SO_SNDTIMEO, unix.SO_RCVTIMEO} { // SO_SNDTIMEO bounds connect
			if err := setTimeout(fd, opt, svcTimeout); err != nil {
				return err
			}
		}
		if err := unix.Connect(fd, &unix.SockaddrInet4{Port: 80, Addr: netip.MustParseAddr(vip).As4()}); err != nil {
			return fmt.Errorf("connect: %w", err)
		}
		buf := make([]byte, 64)
		n, err := unix.Read(fd, buf)
		if err != nil {
			return fmt.Errorf("read: %w", err)
		}
		text = string(buf[:n])
		return nil
	})
	if err != nil {
		return reply{}, fmt.Errorf("sctp %s:80 from %s: %w", vip, ns.Name, err)
	}
	var r reply
	if _, err := fmt.Sscan(text, &r.server, &r.client); err != nil {
		return reply{}, fmt.Errorf("sctp %s:80 from %s: malformed answer %q", vip, ns.Name, text)
	}
	return r, nil
}

func TestSvcSCTPAssociation(t *testing.T) {
	sandbox.Require(t)
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, unix.IPPROTO_SCTP)
	if err != nil {
		_, statErr := os.Stat("/proc/net/sctp")
		t.Skipf("no SCTP sockets in this kernel: socket(AF_INET, SOCK_STREAM, IPPROTO_SCTP): %v "+
			"(/proc/net/sctp: %v); TestSvcSCTPRawDNAT checks the SCTP DNAT with raw packets", err, statErr)
	}
	unix.Close(fd)

	l := newSvcLab(t, "svc-sctp")
	serveSCTP(t, l.podA, "pod-a", svcPodAIP)
	serveSCTP(t, l.podB, "pod-b", svcPodBIP)
	l.sync(t, sctpService())
	const n = 20
	got := map[string]int{}
	for i := range n {
		r, err := askSCTP(l.client, svcSCTPVIP)
		if err != nil {
			t.Fatalf("association %d of %d: %v", i+1, n, err)
		}
		if r.client != svcClientIP {
			t.Errorf("association %d: %s saw client %s, want %s", i+1, r.server, r.client, svcClientIP)
		}
		got[r.server]++
	}
	wantServers(t, "SCTP ClusterIP", got, "pod-a", "pod-b")
}

// SCTP chunk types (RFC 9260 section 3.2).
const (
	sctpInit    = 1
	sctpInitAck = 2
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// sctpPacket is an SCTP packet holding one INIT or INIT ACK chunk (RFC 9260
// sections 3.3.2 and 3.3.3) with the given initiate tag; the INIT ACK has no
// state cookie, which conntrack does not look for.
func sctpPacket(srcPort, dstPort uint16, vtag uint32, chunk byte, initTag uint32) []byte {
	p := make([]byte, 12+20)
	binary.BigEndian.PutUint16(p[0:], srcPort)
	binary.BigEndian.PutUint16(p[2:], dstPort)
	binary.BigEndian.PutUint32(p[4:], vtag)
	p[12] = chunk
	binary.BigEndian.PutUint16(p[14:], 20)      // chunk length
	binary.BigEndian.PutUint32(p[16:], initTag) // initiate tag
	binary.BigEndian.PutUint32(p[20:], 65535)   // advertised receiver window
	binary.BigEndian.PutUint16(p[24:], 1)       // outbound streams
	binary.BigEndian.PutUint16(p[26:], 1)       // inbound streams
	binary.BigEndian.PutUint32(p[28:], 1)       // initial TSN
	binary.LittleEndian.PutUint32(p[8:], sctpCRC(p))
	return p
}

// sctpCRC is the CRC32c of an SCTP packet with its checksum field zeroed
// (RFC 9260 appendix A); the packet carries it little-endian, as Linux does.
func sctpCRC(p []byte) uint32 {
	c := slices.Clone(p)
	clear(c[8:12])
	return crc32.Checksum(c, castagnoli)
}

// sctpSeen is one SCTP packet as a raw socket received it.
type sctpSeen struct {
	src, dst         netip.Addr
	srcPort, dstPort uint16
	vtag             uint32
	chunk            byte
	initTag          uint32
	crcOK            bool
}

func parseSCTP(b []byte) (sctpSeen, bool) {
	if len(b) < 20 || b[0]>>4 != 4 || b[9] != unix.IPPROTO_SCTP {
		return sctpSeen{}, false
	}
	s := b[int(b[0]&0x0f)*4:]
	if len(s) < 20 {
		return sctpSeen{}, false
	}
	return sctpSeen{
		src: netip.AddrFrom4([4]byte(b[12:16])), dst: netip.AddrFrom4([4]byte(b[16:20])),
		srcPort: binary.BigEndian.Uint16(s[0:]), dstPort: binary.BigEndian.Uint16(s[2:]),
		vtag: binary.BigEndian.Uint32(s[4:]), chunk: s[12], initTag: binary.BigEndian.Uint32(s[16:]),
		crcOK: binary.LittleEndian.Uint32(s[8:]) == sctpCRC(s),
	}, true
}

// rawSCTP is a raw IPv4 socket for SCTP packets in one namespace.
type rawSCTP struct{ fd int }

func openRawSCTP(t *testing.T, ns *sandbox.NetNS) *rawSCTP {
	t.Helper()
	fd := -1
	err := ns.Do(func() (err error) {
		fd, err = unix.Socket(unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_SCTP)
		return err
	})
	if err == nil {
		err = setTimeout(fd, unix.SO_RCVTIMEO, 100*time.Millisecond)
	}
	if err != nil {
		if fd >= 0 {
			unix.Close(fd)
		}
		t.Fatalf("raw SCTP socket in %s: %v", ns.Name, err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return &rawSCTP{fd: fd}
}

// recv returns the next SCTP packet received before deadline.
func (r *rawSCTP) recv(deadline time.Time) (sctpSeen, error) {
	buf := make([]byte, 1500)
	for time.Now().Before(deadline) {
		n, _, err := unix.Recvfrom(r.fd, buf, 0)
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return sctpSeen{}, err
		}
		if p, ok := parseSCTP(buf[:n]); ok {
			return p, nil
		}
	}
	return sctpSeen{}, os.ErrDeadlineExceeded
}

func (r *rawSCTP) send(to netip.Addr, pkt []byte) error {
	return unix.Sendto(r.fd, pkt, 0, &unix.SockaddrInet4{Addr: to.As4()})
}

// gotInit is an INIT a pod received, and the error of its INIT ACK answer.
type gotInit struct {
	pod     string
	p       sctpSeen
	sendErr error
}

// answerInits answers every INIT that reaches ns with an INIT ACK, as an SCTP
// stack would, and reports each INIT on seen until the test ends.
func answerInits(t *testing.T, ns *sandbox.NetNS, pod string, seen chan<- gotInit) {
	r := openRawSCTP(t, ns)
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-done:
				return
			default:
			}
			p, err := r.recv(time.Now().Add(200 * time.Millisecond))
			if errors.Is(err, os.ErrDeadlineExceeded) {
				continue
			}
			if err != nil {
				seen <- gotInit{pod: pod, sendErr: err}
				return
			}
			if p.chunk != sctpInit {
				continue
			}
			// The INIT ACK carries the INIT's initiate tag as verification tag.
			err = r.send(p.src, sctpPacket(p.dstPort, p.srcPort, p.initTag, sctpInitAck, 0xacc0000|p.initTag&0xffff))
			seen <- gotInit{pod: pod, p: p, sendErr: err}
		}
	})
	t.Cleanup(func() { close(done); wg.Wait() })
}

func TestSvcSCTPRawDNAT(t *testing.T) {
	sandbox.Require(t)
	l := newSvcLab(t, "svc-sctpraw")
	const n = 20
	seen := make(chan gotInit, 2*n)
	answerInits(t, l.podA, "pod-a", seen)
	answerInits(t, l.podB, "pod-b", seen)
	client := openRawSCTP(t, l.client)
	l.sync(t, sctpService())

	vip, clientIP := netip.MustParseAddr(svcSCTPVIP), netip.MustParseAddr(svcClientIP)
	podIP := map[string]string{"pod-a": svcPodAIP, "pod-b": svcPodBIP}
	got := map[string]int{}
	for i := range n {
		port, tag := uint16(40000+i), uint32(0x1000+i)
		// An INIT goes out with verification tag 0.
		if err := client.send(vip, sctpPacket(port, 80, 0, sctpInit, tag)); err != nil {
			t.Fatalf("INIT %d: send: %v", i+1, err)
		}
		var in gotInit
		select {
		case in = <-seen:
		case <-time.After(svcTimeout):
			t.Fatalf("INIT %d from port %d to %s:80 reached no endpoint within %s", i+1, port, vip, svcTimeout)
		}
		want := sctpSeen{src: clientIP, dst: netip.MustParseAddr(podIP[in.pod]), srcPort: port, dstPort: 8080,
			chunk: sctpInit, initTag: tag, crcOK: true}
		if in.sendErr != nil || in.p != want {
			t.Fatalf("INIT %d: %s got %+v (answer error %v), want %+v", i+1, in.pod, in.p, in.sendErr, want)
		}
		got[in.pod]++

		// Conntrack undoes the DNAT on the INIT ACK: it comes from the VIP.
		ack, err := client.recv(time.Now().Add(svcTimeout))
		if err != nil {
			t.Fatalf("INIT ACK %d: %v", i+1, err)
		}
		wantAck := sctpSeen{src: vip, dst: clientIP, srcPort: 80, dstPort: port, vtag: tag,
			chunk: sctpInitAck, initTag: 0xacc0000 | tag&0xffff, crcOK: true}
		if ack != wantAck {
			t.Fatalf("INIT ACK %d: got %+v, want %+v", i+1, ack, wantAck)
		}
	}
	wantServers(t, "SCTP INITs to the ClusterIP", got, "pod-a", "pod-b")
}
