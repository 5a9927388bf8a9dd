package docs

import (
	"fmt"
	"io/fs"
	"os"
	"path"
	"regexp"
	"slices"
	"strings"
	"testing"
	"testing/fstest"
	"unicode"
)

// TestLinksResolve checks every relative link of the repository's Markdown
// files (README.md, docs/*.md, integration/README.md, ...) against its
// files.
func TestLinksResolve(t *testing.T) {
	t.Parallel()
	repo := os.DirFS("..")
	var files []string
	err := fs.WalkDir(repo, ".", func(name string, d fs.DirEntry, err error) error {
		switch {
		case err != nil:
			return err
		case d.IsDir() && name != "." && (strings.HasPrefix(d.Name(), ".") || d.Name() == "testdata"):
			return fs.SkipDir
		case !d.IsDir() && strings.HasSuffix(name, ".md"):
			files = append(files, name)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"README.md", "docs/operations.md", "docs/http-api.md"} {
		if !slices.Contains(files, want) {
			t.Fatalf("found %v, not %s; run from docs/", files, want)
		}
	}
	links, problems, err := checkLinks(repo, files)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Error(p)
	}
	if links < 20 {
		t.Errorf("found only %d relative links in %v; read wrongly?", links, files)
	}
	t.Logf("%d relative links in %d files", links, len(files))
}

// TestCheckLinksFindsBrokenLinks shows that checkLinks can fail: a missing
// file, a missing anchor, an anchor of a file that has none, and a link
// out of the repository are reported; links in code are not links.
func TestCheckLinksFindsBrokenLinks(t *testing.T) {
	t.Parallel()
	fsys := fstest.MapFS{
		"README.md": {Data: []byte(strings.Join([]string{
			"# Top",
			"[ok](docs/a.md) [ok](docs/a.md#set-up-etcd) [ok](#top) [ok](docs/) [ok](https://example.com/x.md#y)",
			"[ok](docs/a.md#alert-soloistnolivenodes) [ok](docs/a.md#drain-a-node-1) [ok](docs/a.md#html-anchor)",
			"[missing file](docs/b.md)",
			"[missing anchor](docs/a.md#nope)",
			"[anchor of a Go file](main.go#L3)",
			"[outside](../x.md)",
			"`[in code](nowhere.md)`",
			"```sh",
			"[in a fence](nowhere.md)",
			"```",
		}, "\n"))},
		"main.go": {Data: []byte("package main\n")},
		"docs/a.md": {Data: []byte(strings.Join([]string{
			"# Doc",
			"## Set up: `etcd`!",
			"## Alert: SoloistNoLiveNodes",
			"## Drain a node",
			"### Drain a node",
			`<a id="html-anchor"></a>`,
			"```",
			"# not a heading",
			"```",
		}, "\n"))},
	}
	links, problems, err := checkLinks(fsys, []string{"README.md"})
	if err != nil {
		t.Fatal(err)
	}
	if links != 11 {
		t.Errorf("counted %d relative links, want 11", links)
	}
	want := []string{
		"README.md:4: [missing file](docs/b.md): docs/b.md does not exist",
		"README.md:5: [missing anchor](docs/a.md#nope): docs/a.md has no heading with the anchor #nope",
		"README.md:6: [anchor of a Go file](main.go#L3): main.go is not Markdown; its anchors cannot be checked",
		"README.md:7: [outside](../x.md): points outside the repository",
	}
	if !slices.Equal(problems, want) {
		t.Errorf("problems:\n%s\nwant:\n%s", strings.Join(problems, "\n"), strings.Join(want, "\n"))
	}
}

func TestHeadingAnchor(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ heading, want string }{
		{"Alert: SoloistNoLiveNodes", "alert-soloistnolivenodes"},
		{"`soloist serve` flags", "soloist-serve-flags"},
		{"etcd is full (NOSPACE)", "etcd-is-full-nospace"},
		{"Who holds an instance: node, fencing token, lease", "who-holds-an-instance-node-fencing-token-lease"},
		{"History, events, suspend, resume, terminate, purge", "history-events-suspend-resume-terminate-purge"},
		{"etcd keys (read them with etcdctl)", "etcd-keys-read-them-with-etcdctl"},
		{"What Soloist guarantees, and what it does not", "what-soloist-guarantees-and-what-it-does-not"},
		{"The [CLI](x.md) and **you**", "the-cli-and-you"},
		{"snake_case and-hyphens", "snake_case-and-hyphens"},
	} {
		if got := headingAnchor(tc.heading); got != tc.want {
			t.Errorf("headingAnchor(%q) = %q, want %q", tc.heading, got, tc.want)
		}
	}
}

var (
	// A Markdown inline link or image: [text](target "title").
	linkRE = regexp.MustCompile(`!?\[([^\]]*)\]\(<?([^)\s>]+)>?(?:\s+"[^"]*")?\)`)
	// An inline code span.
	codeSpanRE = regexp.MustCompile("`+[^`]*`+")
	// A link target with a scheme (https:, mailto:).
	schemeRE   = regexp.MustCompile(`^[a-zA-Z][a-zA-Z0-9+.-]*:`)
	headingRE  = regexp.MustCompile(`^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$`)
	htmlIDRE   = regexp.MustCompile(`<a\s+(?:id|name)="([^"]+)"`)
	mdLinkText = regexp.MustCompile(`\[([^\]]*)\]\([^)]*\)`)
)

// checkLinks reads the Markdown files of fsys named by files and checks
// each relative link: the path (relative to the file's folder) exists in
// fsys, and a #anchor is a heading or HTML anchor of the target (a link
// with only #anchor: of the file itself). It returns the number of
// relative links it checked and what is wrong, as "file:line: ..." lines.
func checkLinks(fsys fs.FS, files []string) (int, []string, error) {
	anchorsOf := map[string]map[string]bool{}
	anchors := func(name string) (map[string]bool, error) {
		if a, ok := anchorsOf[name]; ok {
			return a, nil
		}
		b, err := fs.ReadFile(fsys, name)
		if err != nil {
			return nil, err
		}
		a := markdownAnchors(string(b))
		anchorsOf[name] = a
		return a, nil
	}
	links := 0
	var problems []string
	for _, file := range files {
		b, err := fs.ReadFile(fsys, file)
		if err != nil {
			return 0, nil, err
		}
		for i, line := range proseLines(string(b)) {
			for _, m := range linkRE.FindAllStringSubmatch(codeSpanRE.ReplaceAllString(line, ""), -1) {
				target := m[2]
				if schemeRE.MatchString(target) {
					continue
				}
				links++
				report := func(format string, args ...any) {
					problems = append(problems, fmt.Sprintf("%s:%d: %s: %s", file, i+1, m[0], fmt.Sprintf(format, args...)))
				}
				p, anchor, _ := strings.Cut(target, "#")
				name := file
				if p != "" {
					if strings.HasPrefix(p, "/") {
						report("an absolute path; GitHub resolves it against the site, not the repository: make it relative")
						continue
					}
					name = path.Join(path.Dir(file), p)
					if name == ".." || strings.HasPrefix(name, "../") {
						report("points outside the repository")
						continue
					}
					if _, err := fs.Stat(fsys, name); err != nil {
						report("%s does not exist", name)
						continue
					}
				}
				if anchor == "" {
					continue
				}
				if !strings.HasSuffix(name, ".md") {
					report("%s is not Markdown; its anchors cannot be checked", name)
					continue
				}
				a, err := anchors(name)
				if err != nil {
					return 0, nil, err
				}
				if !a[anchor] {
					report("%s has no heading with the anchor #%s", name, anchor)
				}
			}
		}
	}
	return links, problems, nil
}

// proseLines returns the lines of a Markdown text with the lines of fenced
// code blocks (``` or ~~~, indented too) blanked, so that line numbers
// stay those of the file.
func proseLines(text string) []string {
	lines := strings.Split(text, "\n")
	fence := ""
	for i, l := range lines {
		t := strings.TrimLeft(l, " ")
		if fence != "" {
			if strings.HasPrefix(t, fence) && strings.TrimSpace(strings.TrimLeft(t, fence[:1])) == "" {
				fence = ""
			}
			lines[i] = ""
			continue
		}
		for _, f := range []string{"```", "~~~"} {
			if strings.HasPrefix(t, f) {
				fence = t[:len(t)-len(strings.TrimLeft(t, f[:1]))]
				lines[i] = ""
			}
		}
	}
	return lines
}

// markdownAnchors returns the anchors GitHub gives the headings of a
// Markdown text (a repeated heading's anchor gets -1, -2, ...), and the
// ids and names of its HTML anchors.
func markdownAnchors(text string) map[string]bool {
	anchors := map[string]bool{}
	seen := map[string]int{}
	for _, line := range proseLines(text) {
		for _, m := range htmlIDRE.FindAllStringSubmatch(line, -1) {
			anchors[m[1]] = true
		}
		m := headingRE.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		a := headingAnchor(m[2])
		if n := seen[a]; n > 0 {
			anchors[fmt.Sprintf("%s-%d", a, n)] = true
		} else {
			anchors[a] = true
		}
		seen[a]++
	}
	return anchors
}

// headingAnchor is GitHub's ID of a heading: the rendered text (links as
// their text, no code or emphasis marks) in lower case, without
// punctuation but hyphens and underscores, spaces as hyphens.
func headingAnchor(heading string) string {
	heading = mdLinkText.ReplaceAllString(heading, "$1")
	heading = strings.NewReplacer("`", "", "**", "", "*", "").Replace(heading)
	var b strings.Builder
	for _, r := range strings.ToLower(heading) {
		switch {
		case r == ' ':
			b.WriteByte('-')
		case r == '-' || r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r):
			b.WriteRune(r)
		}
	}
	return b.String()
}
