package bytesize

import "testing"

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
	}{
		{"1048576", 1 << 20}, {"512MiB", 512 << 20}, {"20GiB", 20 << 30}, {"1.5MiB", 3 << 19},
		{"4k", 4096}, {"4K", 4096}, {"4KiB", 4096}, {"4kib", 4096}, {"1M", 1 << 20}, {"2TiB", 2 << 40},
		{"4KB", 4000}, {"1MB", 1e6}, {"3GB", 3e9}, {" 7 B ", 7}, {"0", 0},
	} {
		got, err := Parse(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("Parse(%q) = %d, %v; want %d", tc.in, got, err, tc.want)
		}
	}
	for _, bad := range []string{"", "x", "-1", "MiB", "1.2.3KiB", "NaN", "1e30GiB", "4 kilobytes"} {
		if n, err := Parse(bad); err == nil {
			t.Errorf("Parse(%q) = %d, want an error", bad, n)
		}
	}
}

func TestFormatRoundTrips(t *testing.T) {
	for _, tc := range []struct {
		n    int64
		want string
	}{{0, "0"}, {1000, "1000"}, {1 << 10, "1KiB"}, {16<<20 + 64<<10, "16448KiB"}, {1 << 30, "1GiB"}, {3 << 40, "3TiB"}} {
		if got := Format(tc.n); got != tc.want {
			t.Errorf("Format(%d) = %q, want %q", tc.n, got, tc.want)
		}
		if back, err := Parse(Format(tc.n)); err != nil || back != tc.n {
			t.Errorf("Parse(Format(%d)) = %d, %v", tc.n, back, err)
		}
	}
}

func TestHuman(t *testing.T) {
	for _, tc := range []struct {
		n    uint64
		want string
	}{{0, "0 B"}, {1023, "1023 B"}, {1024, "1.0 KiB"}, {16<<20 + 64<<10, "16.1 MiB"}, {1 << 30, "1.0 GiB"}} {
		if got := Human(tc.n); got != tc.want {
			t.Errorf("Human(%d) = %q, want %q", tc.n, got, tc.want)
		}
	}
}
