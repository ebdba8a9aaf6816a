package benchkp

import (
	"testing"
	"time"
)

func TestKlogTime(t *testing.T) {
	utc := time.UTC
	ref := time.Date(2026, 11, 26, 3, 0, 0, 0, utc)
	for _, tc := range []struct {
		line string
		want time.Time
		ok   bool
	}{
		{`I1126 03:30:31.123456   12345 proxier.go:1206] "Syncing nftables rules"`, time.Date(2026, 11, 26, 3, 30, 31, 123456000, utc), true},
		{`E0101 00:00:01.000000 1 x.go:1] "next year"`, time.Date(2027, 1, 1, 0, 0, 1, 0, utc), true},
		{`{"ts":1.5,"msg":"json"}`, time.Time{}, false},
		{`I1126 short`, time.Time{}, false},
	} {
		got, ok := klogTime(tc.line, ref)
		if ok != tc.ok || !got.Equal(tc.want) {
			t.Errorf("klogTime(%q) = %v, %v; want %v, %v", tc.line, got, ok, tc.want, tc.ok)
		}
	}
}

func TestKubeProxyLog(t *testing.T) {
	ref := time.Date(2026, 11, 26, 3, 0, 0, 0, time.UTC)
	l := &kubeProxyLog{ref: ref}
	for _, line := range []string{
		`I1126 03:30:30.000000       7 shared_informer.go:356] "Caches are synced" controller="service config"`,
		`I1126 03:30:30.500000       7 shared_informer.go:356] "Caches are synced" controller="endpoint slice config"`,
		`I1126 03:30:30.600000       7 proxier.go:1206] "Syncing nftables rules" ipFamily="IPv6" fullSync=true`,
		`I1126 03:30:30.600001       7 proxier.go:1206] "Syncing nftables rules" ipFamily="IPv4" fullSync=true`,
		`I1126 03:30:30.700000       7 proxier.go:1200] "SyncProxyRules complete" ipFamily="IPv6" elapsed="100ms"`,
		`I1126 03:30:45.600001       7 proxier.go:1200] "SyncProxyRules complete" ipFamily="IPv4" elapsed="15.000000s"`,
		`I1126 03:31:00.000000       7 proxier.go:1206] "Syncing nftables rules" ipFamily="IPv4" fullSync=false`,
		`I1126 03:31:00.345000       7 proxier.go:1200] "SyncProxyRules complete" ipFamily="IPv4" elapsed="345ms"`,
	} {
		l.line(line)
	}
	if want := time.Date(2026, 11, 26, 3, 30, 30, 500000000, time.UTC); !l.synced.Equal(want) {
		t.Errorf("synced = %v, want %v", l.synced, want)
	}
	want := []syncRecord{
		{Start: time.Date(2026, 11, 26, 3, 30, 30, 600001000, time.UTC), Took: 15 * time.Second},
		{Start: time.Date(2026, 11, 26, 3, 31, 0, 0, time.UTC), Took: 345 * time.Millisecond},
	}
	if len(l.syncs) != len(want) {
		t.Fatalf("syncs = %v, want %v", l.syncs, want)
	}
	for i := range want {
		if !l.syncs[i].Start.Equal(want[i].Start) || l.syncs[i].Took != want[i].Took {
			t.Errorf("sync %d = %v, want %v", i, l.syncs[i], want[i])
		}
	}
	if s, ok := firstSyncAfter(l.syncs, want[0].Start.Add(time.Second)); !ok || s.Took != want[1].Took {
		t.Errorf("firstSyncAfter = %v, %v; want the second sync", s, ok)
	}
}

func TestKlogValue(t *testing.T) {
	line := `I1126 03:30:31.123456 1 p.go:1] "msg with key=wrong" ipFamily="IPv4" elapsed="1.5s" n=3`
	for key, want := range map[string]string{"ipFamily": "IPv4", "elapsed": "1.5s", "n": "3", "key": ""} {
		if got := klogValue(line, key); got != want {
			t.Errorf("klogValue(%s) = %q, want %q", key, got, want)
		}
	}
}
