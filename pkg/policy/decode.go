package policy

import (
	"regexp"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/nhid/nhid/pkg/config"
)

// fileVersion is the only policy file version there is.
const fileVersion = 1

// maxFileSize bounds one policy file; policies are text written by people.
const maxFileSize = 1 << 20

// fileDoc is the YAML shape of a policy file.
type fileDoc struct {
	Rules []ruleDoc `yaml:"rules"`
}

// ruleDoc is the YAML shape of one rule.
type ruleDoc struct {
	Name       string `yaml:"name"`
	When       string `yaml:"when"`
	Effect     string `yaml:"effect"`
	Reason     string `yaml:"reason"`
	ReasonExpr string `yaml:"reason_expr"`
	MaxTTL     string `yaml:"max_ttl"`
	Scopes     string `yaml:"scopes"`
	Critical   bool   `yaml:"critical"`
	RateLimit  bool   `yaml:"rate_limit"`
}

// parsedFile is a policy file that passed the strict YAML decoding, with
// what is needed to locate later problems in it.
type parsedFile struct {
	name  string
	src   *source
	index *nodeIndex
	rules []ruleDoc
	// reported holds the paths pkg/config found problems at; those
	// settings are not checked again, which would only repeat them.
	reported map[string]bool
}

// parseFile decodes one policy file with pkg/config's strict rules (a
// `version: 1` key, no unknown or duplicate keys, values of the right
// type), reporting each problem with its line and column. When config
// finds problems, the rules it did not complain about are still decoded,
// leniently, so that their expressions are checked in the same pass. It
// returns nil when the file cannot be parsed at all.
func parseFile(name string, data []byte, ps *problems) *parsedFile {
	if len(data) > maxFileSize {
		ps.add(name, position{}, "", "file is larger than %d bytes", maxFileSize)
		return nil
	}
	var doc fileDoc
	err := config.Decode(data, fileVersion, &doc)
	// A second parse keeps the node tree, which config does not expose,
	// to turn its dotted paths into positions.
	var root yaml.Node
	if yaml.Unmarshal(data, &root) != nil {
		root = yaml.Node{}
	}
	if root.Kind == yaml.DocumentNode && len(root.Content) == 1 {
		root = *root.Content[0]
	}
	ix := indexDocument(&root)
	f := &parsedFile{name: name, src: newSource(data), index: ix, rules: doc.Rules}
	if err == nil {
		return f
	}
	paths := reportConfigError(name, err, ix, ps)
	if root.Kind != yaml.MappingNode {
		return nil
	}
	var lenient fileDoc
	_ = root.Decode(&lenient) // a *yaml.TypeError still decodes the rest
	f.rules, f.reported = lenient.Rules, map[string]bool{}
	for _, p := range paths {
		f.reported[p] = true
	}
	return f
}

// yamlSyntax matches the position yaml gives a syntax error.
var yamlSyntax = regexp.MustCompile(`^(?:yaml: )?line (\d+): (.*)$`)

// reportConfigError turns a pkg/config error into located problems. config
// documents its format: either "parse config: <yaml error>", or one problem
// per line as "path: problem" (a problem with the whole document has no
// path).
// It returns the paths of the problems.
func reportConfigError(file string, err error, ix *nodeIndex, ps *problems) []string {
	msg := err.Error()
	if rest, ok := strings.CutPrefix(msg, "parse config: "); ok {
		var pos position
		if m := yamlSyntax.FindStringSubmatch(rest); m != nil {
			pos.line, _ = strconv.Atoi(m[1])
			rest = m[2]
		}
		ps.add(file, pos, "", "invalid YAML: %s", strings.TrimPrefix(rest, "yaml: "))
		return nil
	}
	var paths []string
	dups := map[string]int{}
	for _, line := range strings.Split(msg, "\n") {
		path, text, ok := strings.Cut(line, ": ")
		if !ok || strings.ContainsAny(path, " \t") {
			ps.add(file, nodePos(ix.root), "", "%s", line)
			continue
		}
		var n *yaml.Node
		switch {
		case text == "unknown key":
			n = ix.key(path, 0)
		case strings.HasPrefix(text, "duplicate key"):
			dups[path]++
			n = ix.key(path, dups[path])
		default:
			n = ix.values[path]
		}
		ps.add(file, nodePos(n), path, "%s", text)
		paths = append(paths, path)
	}
	return paths
}

// skipRule reports whether config found rule i itself malformed.
func (f *parsedFile) skipRule(i int) bool {
	return f.reported["rules"] || f.reported[config.Index("rules", i)]
}

// skipField reports whether config already found a problem with a field.
func (f *parsedFile) skipField(rule int, name string) bool {
	path, _ := f.field(rule, name)
	return f.reported[path]
}

// field returns the path of a rule's field and its value node (nil when the
// field is absent).
func (f *parsedFile) field(rule int, name string) (string, *yaml.Node) {
	path := config.Join(config.Index("rules", rule), name)
	return path, f.index.values[path]
}

// rulePos is where rule i starts.
func (f *parsedFile) rulePos(i int) position {
	return nodePos(f.index.values[config.Index("rules", i)])
}
