package diagrams

import (
	"bytes"
	"errors"
)

// Markers around the generated Mermaid block in a hand-written Markdown file (the
// top-level README): Embed rewrites what is between them.
const (
	EmbedBegin = "<!-- BEGIN generated lifecycle diagram: go generate ./diagrams -->"
	EmbedEnd   = "<!-- END generated lifecycle diagram -->"
)

// ErrNoMarkers is returned by Embed when the document lacks the markers.
var ErrNoMarkers = errors.New("diagrams: the markers " + EmbedBegin + " ... " + EmbedEnd + " are missing")

// Embed returns doc with the text between EmbedBegin and EmbedEnd replaced by
// mermaid in a ```mermaid fenced block.
func Embed(doc, mermaid []byte) ([]byte, error) {
	i := bytes.Index(doc, []byte(EmbedBegin))
	j := bytes.Index(doc, []byte(EmbedEnd))
	if i < 0 || j < i {
		return nil, ErrNoMarkers
	}
	var b bytes.Buffer
	b.Write(doc[:i+len(EmbedBegin)])
	b.WriteString("\n```mermaid\n")
	b.Write(bytes.TrimRight(mermaid, "\n"))
	b.WriteString("\n```\n")
	b.Write(doc[j:])
	return b.Bytes(), nil
}
