// Package docs holds Soloist's documentation (the Markdown files of this
// folder) and no code. Its tests check the documentation as GitHub renders
// it: every relative link in a Markdown file of the repository (README.md,
// docs/*.md, integration/README.md, ...) names a file or folder of the
// repository, and every #anchor a heading (or an HTML anchor) of its
// target, by GitHub's rules for heading IDs. Links to other sites are not
// followed.
package docs
