package source

import (
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"steward/internal/gittest"
	"steward/spec"
)

// outsideDir is a directory a hostile commit tries to write into, holding
// one file of its own that a link might try to leak.
func outsideDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "secret.hcl"), []byte("merchant \"leaked\" {}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return dir
}

// onlySecret fails when anything but secret.hcl is in dir.
func onlySecret(t *testing.T, dir string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if e.Name() != "secret.hcl" {
			t.Errorf("a commit wrote %s outside the checkout", filepath.Join(dir, e.Name()))
		}
	}
}

// noPwned fails when a file named pwned exists anywhere below root.
func noPwned(t *testing.T, root string) {
	t.Helper()
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Name() == "pwned" {
			t.Errorf("crafted file written at %s", p)
		}
		return nil
	})
}

// craftedTrees are the tricks a hostile pusher may try, each a root tree
// beside a valid merchants directory. refused says the commit must be
// refused whole.
func craftedTrees(t *testing.T, r *gittest.Repo, merchants, outside string) []struct {
	name    string
	tree    string
	refused string
} {
	blob := r.Blob("pwned\n")
	up := strings.Repeat("../", 32) + strings.TrimPrefix(outside, "/")
	dirOf := func(name string) string { return r.RawTree(gittest.RawEntry{Mode: "100644", Name: name, Hash: blob}) }
	m := gittest.RawEntry{Mode: "40000", Name: "merchants", Hash: merchants}
	link := func(name, target string) gittest.RawEntry {
		return gittest.RawEntry{Mode: "120000", Name: name, Hash: r.Blob(target)}
	}
	file := func(name string) gittest.RawEntry { return gittest.RawEntry{Mode: "100644", Name: name, Hash: blob} }
	tree := func(name, id string) gittest.RawEntry { return gittest.RawEntry{Mode: "40000", Name: name, Hash: id} }
	return []struct {
		name    string
		tree    string
		refused string
	}{
		{"a name with a slash through an absolute link", r.RawTree(m, link("evil", outside), file("evil/pwned")), "holds a slash"},
		{"a name with a slash through a relative link", r.RawTree(m, link("evil", up), file("evil/pwned")), "holds a slash"},
		{"a tree with the name of a link before it", r.RawTree(m, link("evil", outside), tree("evil", dirOf("pwned"))), "appears twice"},
		{"a link with the name of a tree before it", r.RawTree(m, tree("evil", dirOf("x")), link("evil", outside)), "appears twice"},
		{"two files of one name", r.RawTree(m, file("twice"), file("twice")), "appears twice"},
		{"a tree named ..", r.RawTree(m, tree("..", dirOf("pwned"))), `named ".."`},
		{"a tree named .", r.RawTree(m, tree(".", dirOf("pwned"))), `named "."`},
		{"a .git tree", r.RawTree(m, tree(".git", dirOf("config"))), `named ".git"`},
		{"a .GIT tree", r.RawTree(m, tree(".GIT", dirOf("config"))), `named ".GIT"`},
		{"a nested name through a link", r.RawTree(m, tree("sub", r.RawTree(link("evil", up), file("evil/pwned")))), "holds a slash"},
		{"a backslash name", r.RawTree(m, file(`evil\pwned`)), "backslash"},
		// A link among the specs that cannot be followed inside the
		// repository refuses the commit: leaving it out would drop the
		// merchants it stands for.
		{"a spec file linked out of the checkout", r.RawTree(tree("merchants", r.RawTree(
			gittest.RawEntry{Mode: "100644", Name: "fleet.hcl", Hash: r.Blob("merchant \"acme\" {}\n")},
			link("abs.hcl", filepath.Join(outside, "secret.hcl")),
		))), "symbolic link"},
		{"a spec file linked out through a chain", r.RawTree(tree("merchants", r.RawTree(
			gittest.RawEntry{Mode: "100644", Name: "fleet.hcl", Hash: r.Blob("merchant \"acme\" {}\n")},
			link("dot", "."),
			link("chain.hcl", "dot/../../../../../../../../"+strings.TrimPrefix(outside, "/")+"/secret.hcl"),
		))), "symbolic link"},
		// Elsewhere in the repository such links are accepted in the
		// commit but never created: neither absolute ones, nor relative
		// ones, nor chains whose every link looks local on its own.
		{"links out of the checkout beside the specs", r.RawTree(
			tree("merchants", r.RawTree(
				gittest.RawEntry{Mode: "100644", Name: "fleet.hcl", Hash: r.Blob("merchant \"acme\" {}\n")},
				link("inside.hcl", "fleet.hcl"),
				link("dot", "."),
			)),
			tree("docs", r.RawTree(
				link("abs.hcl", filepath.Join(outside, "secret.hcl")),
				link("rel.hcl", up+"/secret.hcl"),
				link("dot", "."),
				link("chain.hcl", "dot/../../../../../../../../"+strings.TrimPrefix(outside, "/")+"/secret.hcl"),
				link("loop1", "loop2"), link("loop2", "loop1"),
			)),
		), ""},
	}
}

func TestCraftedCommitsWriteNothingOutside(t *testing.T) {
	r := gittest.New(t)
	good := r.Commit("good", map[string]string{"merchants/fleet.hcl": "merchant \"acme\" {}\n"})
	merchants := r.TreeOf(good, "merchants")
	outside := outsideDir(t)
	for _, tc := range craftedTrees(t, r, merchants, outside) {
		t.Run(tc.name, func(t *testing.T) {
			cache := filepath.Join(t.TempDir(), "git")
			g := NewGit(spec.GitConfig{URL: r.Path, Ref: "main", Dir: "merchants"}, cache, GitOptions{})
			sha := r.CommitTree(tc.tree, tc.name)
			snap, err := g.Load(context.Background())
			onlySecret(t, outside)
			noPwned(t, filepath.Dir(cache))
			if tc.refused != "" {
				if err == nil {
					t.Fatalf("commit %s was loaded; want it refused", sha[:8])
				}
				if !strings.Contains(err.Error(), "refused") || !strings.Contains(err.Error(), tc.refused) {
					t.Errorf("error %q does not say the commit was refused for %q", err, tc.refused)
				}
				return
			}
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			names := sourceNames(snap)
			for _, s := range snap.Sources {
				if strings.Contains(string(s.Bytes), "leaked") {
					t.Errorf("%s leaked the content of a file outside the checkout", s.Name)
				}
			}
			want := "merchants/fleet.hcl merchants/inside.hcl"
			if strings.Join(names, " ") != want {
				t.Errorf("sources %v, want %s", names, want)
			}
			co := filepath.Join(g.checkoutDir(), sha+checkoutSuffix, "merchants")
			for _, name := range []string{"../docs/abs.hcl", "../docs/rel.hcl", "../docs/chain.hcl", "../docs/loop1", "../docs/loop2"} {
				if _, err := os.Lstat(filepath.Join(co, name)); err == nil {
					t.Errorf("link %s was created", name)
				}
			}
			if target, err := os.Readlink(filepath.Join(co, "dot")); err != nil || target != "." {
				t.Errorf("the harmless link dot: %q, %v", target, err)
			}
		})
	}
}

func TestResolveFollowsLinksLikeTheKernel(t *testing.T) {
	m := &treeModel{entries: map[string]*treeEntry{
		"a":         {kind: kindDir},
		"a/b":       {kind: kindDir},
		"a/b/f":     {kind: kindFile},
		"a/up":      {kind: kindLink, target: ".."},
		"a/b/top":   {kind: kindLink, target: "../.."},
		"a/b/self":  {kind: kindLink, target: "."},
		"a/b/deep":  {kind: kindLink, target: "../up/../.."},
		"a/b/file":  {kind: kindLink, target: "f"},
		"a/b/thru":  {kind: kindLink, target: "f/x"},
		"a/b/abs":   {kind: kindLink, target: "/etc"},
		"a/b/self2": {kind: kindLink, target: "self/../../.."},
	}}
	for _, tc := range []struct {
		path, want, err string
	}{
		{"a/b/f", "a/b/f", ""},
		{"a/up", "", ""},
		{"a/b/top", "", ""},
		{"a/b/file", "a/b/f", ""},
		{"a/b/deep", "", "outside"},
		{"a/b/thru", "", "through a file"},
		{"a/b/abs", "", "outside"},
		{"a/b/self2", "", "outside"},
		{"a/missing", "", "nothing"},
	} {
		got, err := m.resolve(tc.path)
		switch {
		case tc.err == "" && (err != nil || got != tc.want):
			t.Errorf("resolve(%q) = %q, %v; want %q", tc.path, got, err, tc.want)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("resolve(%q) = %q, %v; want an error with %q", tc.path, got, err, tc.err)
		}
	}
}

func TestCheckEntryName(t *testing.T) {
	for _, name := range []string{"", ".", "..", ".git", ".Git", "a/b", `a\b`, "a\x00b"} {
		if checkEntryName(name) == nil {
			t.Errorf("checkEntryName(%q) accepted it", name)
		}
	}
	for _, name := range []string{"fleet.hcl", ".gitignore", "..x", "a..b", ".github"} {
		if err := checkEntryName(name); err != nil {
			t.Errorf("checkEntryName(%q): %v", name, err)
		}
	}
}
