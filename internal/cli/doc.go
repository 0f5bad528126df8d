// Package cli builds halb's cobra command tree; commands only parse flags and call into the other packages.
package cli
