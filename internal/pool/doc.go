// Package pool holds a backend's servers, their health and admin state, and picks one per connection.
package pool
