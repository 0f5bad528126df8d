// Package config reads halb's YAML file into validated, typed settings, reporting every error with its field path and line.
package config
