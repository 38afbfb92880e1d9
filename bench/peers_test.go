package bench

import "testing"

func TestParsePeerResults(t *testing.T) {
	for _, tc := range []struct {
		name, out string
		want      []string // systems, in order; nil means an error
	}{
		{"clean", `[{"system":"pg"},{"system":"redis"}]`, []string{"pg", "redis"}},
		{"apt noise before", "Reading package lists...\nBuilding dependency tree [50%]\n[\n {\"system\":\"pg\"}\n]\n", []string{"pg"}},
		{"two arrays, last wins", "[{\"system\":\"old\"}]\n[{\"system\":\"new\"}]\n", []string{"new"}},
		{"no json", "Reading package lists...\n", nil},
		{"truncated", "[{\"system\":\"pg\"", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			prs, err := parsePeerResults([]byte(tc.out))
			if tc.want == nil {
				if err == nil {
					t.Fatalf("got %v, want an error", prs)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(prs) != len(tc.want) {
				t.Fatalf("got %d results, want %d", len(prs), len(tc.want))
			}
			for i, s := range tc.want {
				if prs[i].System != s {
					t.Errorf("result %d: system %q, want %q", i, prs[i].System, s)
				}
			}
		})
	}
}
