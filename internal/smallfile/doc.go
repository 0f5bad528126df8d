// Package smallfile reads the small files an operator points halb at (config, gossip keys, password lists) without trusting them: regular files only, never blocking on a FIFO or device, never more than a stated size.
package smallfile
