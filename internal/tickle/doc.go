// Package tickle resets the client connections a previous VIP holder left behind: it builds TCP
// "tickle" ACKs (from the VIP to each client, with sequence numbers the client cannot accept), so
// the client answers with its real ones and the new holder's kernel, which has no socket for the
// connection, replies with a reset the client accepts; and it sends them paced and repeated over
// a raw socket bound to the VIP's interface, optionally spread over a window; and it counts the
// clients that answered, through a filtered packet socket on that interface.
package tickle
