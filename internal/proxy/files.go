package proxy

// FilesPerConn is how many descriptors one proxied connection may hold at
// once: the client's socket and the server's, and, while a direction moves
// a bulk burst, a splice pipe (two descriptors) taken from the frontend's
// pool for that burst (copy.go). The two directions burst independently,
// so both may hold a pipe at the same moment.
const FilesPerConn = 6

// FilesReserve is what halb needs besides proxied connections: listeners,
// each frontend's parker (an epoll set) and idle pipes (pipePoolSize pipes,
// two descriptors each), health checks, gossip, the admin socket and the
// stats page. It covers about ten frontends.
const FilesReserve = 256

// FilesNeeded returns the open-file limit that maxconn concurrent
// connections may need at worst; 0 when maxconn is 0 (unlimited), as no
// limit fits that.
func FilesNeeded(maxconn int) uint64 {
	if maxconn <= 0 {
		return 0
	}
	return uint64(maxconn)*FilesPerConn + FilesReserve
}
