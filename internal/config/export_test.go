package config

import "reflect"

// RawConfigType lets the external docs test walk the raw structs' yaml
// tags, the keys the config file accepts.
func RawConfigType() reflect.Type { return reflect.TypeFor[rawConfig]() }
